"""SAS tokens (spec §3): parsing, signatures over the raw ``sr``, audience scope, rights, connection strings.

Expected signatures are always recomputed here with ``hmac`` from the spec's recipe, never taken from the code under
test, and the client-specific token strings of spec §3.2 are written out by hand.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from urllib.parse import quote

import pytest

from hybrid.auth import (
    MAX_TOKEN_LENGTH,
    ConnectionString,
    Right,
    SasRule,
    SasToken,
    audience_covers,
    audience_path,
    build_token,
    check_token,
    form_quote,
    form_unquote,
    generate_key,
    parse_token,
    verify_signature,
)
from hybrid.errors import AuthenticationError, AuthorizationError, ConfigError, RelayError
from hybrid.protocol.urls import parse_query

KEY = "s3cr3t/Key+with=base64ish=chars"
OTHER_KEY = "another-key-entirely"
NOW = 1_700_000_000
FUTURE = NOW + 3600


def sign_b64(key: str, sr_raw: str, se: str) -> str:
    """The spec §3.2 recipe, independently: HMAC-SHA256(utf8(key), utf8(sr_raw + '\\n' + se)), base64."""
    digest = hmac.new(key.encode("utf-8"), f"{sr_raw}\n{se}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def uri_component(text: str) -> str:
    """JavaScript encodeURIComponent: upper-case hex, leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) alone."""
    return quote(text, safe="-_.!~*'()")


def lower_hex(b64: str) -> str:
    """Percent-encode a base64 signature the way old .NET HttpUtility does: lower-case hex."""
    return b64.replace("+", "%2b").replace("/", "%2f").replace("=", "%3d")


def hand_token(sr_raw: str, key: str, se: int | str, skn_raw: str, *, sig_encode=uri_component, order=None) -> str:
    se = str(se)
    fields = {"sr": sr_raw, "sig": sig_encode(sign_b64(key, sr_raw, se)), "se": se, "skn": skn_raw}
    names = order or ("sr", "sig", "se", "skn")
    return "SharedAccessSignature " + "&".join(f"{n}={fields[n]}" for n in names)


def rule(name="RootManageSharedAccessKey", key=KEY, rights=Right.MANAGE, secondary=None, entity=None) -> SasRule:
    return SasRule(name=name, primary_key=key, rights=rights, secondary_key=secondary, entity=entity)


def check(token: str, entity: str = "myhc", needed: Right = Right.SEND, rules=None, now: float = NOW, **kw):
    return check_token(token, entity=entity, needed=needed, rules=rules if rules is not None else [rule()],
                       now=now, **kw)


# ---- build / parse round trip ---------------------------------------------------------------------------------------

def test_build_token_round_trip_and_shape():
    token = build_token("http://localhost:8443/myhc", "RootManageSharedAccessKey", KEY, FUTURE)
    assert token.startswith("SharedAccessSignature ")
    fields = dict(p.split("=", 1) for p in token.split(" ", 1)[1].split("&"))
    assert set(fields) == {"sr", "sig", "se", "skn"}
    assert fields["sr"] == "http%3A%2F%2Flocalhost%3A8443%2Fmyhc"
    assert fields["se"] == str(FUTURE)
    # The signature in the token is the independently computed one, percent-encoded.
    expected_sig = sign_b64(KEY, fields["sr"], fields["se"])
    assert base64.b64decode(fields["sig"].replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")) \
        == base64.b64decode(expected_sig)
    parsed = parse_token(token)
    assert parsed.resource_raw == "http%3A%2F%2Flocalhost%3A8443%2Fmyhc"
    assert parsed.resource == "http://localhost:8443/myhc"
    assert parsed.expiry == FUTURE and parsed.expiry_raw == str(FUTURE)
    assert parsed.key_name == "RootManageSharedAccessKey"
    assert parsed.signature == base64.b64decode(expected_sig)
    assert verify_signature(parsed, (KEY,))
    assert not verify_signature(parsed, (OTHER_KEY,))
    assert not verify_signature(parsed, ())
    assert check(token) == rule()


def test_build_token_encodes_key_name_and_float_expiry():
    token = build_token("http://h/a", "my rule&x", KEY, FUTURE + 0.9)
    parsed = parse_token(token)
    assert parsed.key_name == "my rule&x"
    assert parsed.expiry == FUTURE
    assert check(token, entity="a", rules=[rule(name="my rule&x")]).name == "my rule&x"


def test_build_token_signature_changes_with_every_input():
    base = parse_token(build_token("http://h/a", "k", KEY, FUTURE)).signature
    assert parse_token(build_token("http://h/b", "k", KEY, FUTURE)).signature != base
    assert parse_token(build_token("http://h/a", "k", OTHER_KEY, FUTURE)).signature != base
    assert parse_token(build_token("http://h/a", "k", KEY, FUTURE + 1)).signature != base


# ---- client encodings of spec §3.2: verify over the raw sr -----------------------------------------------------------

def test_node_style_token_upper_case_hex_port_kept():
    sr = "http%3A%2F%2Flocalhost%3A8443%2Fmyhc"  # encodeURIComponent('http://localhost:8443/myhc')
    token = hand_token(sr, KEY, FUTURE, "RootManageSharedAccessKey")
    parsed = parse_token(token)
    assert parsed.resource_raw == sr
    assert parsed.resource == "http://localhost:8443/myhc"
    assert check(token).name == "RootManageSharedAccessKey"


def test_dotnet_style_token_plus_for_space_trailing_slash_no_port_encoded_skn():
    sr = "http%3A%2F%2Flocalhost%2Fmy+hc%2F"  # WebUtility.UrlEncode('http://localhost/my hc/')
    token = hand_token(sr, KEY, FUTURE, "Root+Rule", sig_encode=lambda s: quote(s, safe=""))
    parsed = parse_token(token)
    assert parsed.resource == "http://localhost/my hc/"
    assert parsed.key_name == "Root Rule"
    assert check(token, entity="my hc", rules=[rule(name="Root Rule")]).name == "Root Rule"
    # The same audience re-encoded with %20 is a different string to sign: the old signature must not fit it.
    tampered = token.replace("my+hc", "my%20hc")
    with pytest.raises(AuthenticationError):
        check(tampered, entity="my hc", rules=[rule(name="Root Rule")])


def test_lower_case_hex_token_verifies_over_raw_text():
    sr = "http%3a%2f%2fcontoso.servicebus.windows.net%2fhyco%2f"
    token = hand_token(sr, KEY, FUTURE, "RootManageSharedAccessKey", sig_encode=lower_hex)
    assert check(token, entity="hyco").name == "RootManageSharedAccessKey"
    # Upper-casing the hex (what a decode/re-encode would produce) breaks the signature: proof the raw text is used.
    upper = token.replace(sr, sr.replace("%3a", "%3A").replace("%2f", "%2F"))
    assert parse_token(upper).resource == parse_token(token).resource
    with pytest.raises(AuthenticationError):
        check(upper, entity="hyco")


def test_lower_case_hex_in_sig_is_decoded():
    sr = "http%3a%2f%2fh%2fhyco"
    se = str(FUTURE)
    # Find an expiry whose signature needs escaping, then escape it with lower-case hex.
    for se_int in range(FUTURE, FUTURE + 500):
        b64 = sign_b64(KEY, sr, str(se_int))
        if "+" in b64 or "/" in b64:
            break
    else:  # pragma: no cover
        pytest.fail("no signature with + or / found")
    se = str(se_int)
    sig = lower_hex(b64)
    token = f"SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=RootManageSharedAccessKey"
    assert check(token, entity="hyco").name == "RootManageSharedAccessKey"


def test_python_sample_style_sig_with_raw_slash():
    sr = quote("sb://ns.example.net/hc", safe="")
    for se_int in range(FUTURE, FUTURE + 500):
        b64 = sign_b64(KEY, sr, str(se_int))
        if "/" in b64:
            break
    else:  # pragma: no cover
        pytest.fail("no signature with '/' found")
    token = f"SharedAccessSignature sr={sr}&sig={quote(b64)}&se={se_int}&skn=RootManageSharedAccessKey"
    assert "/" in token.split("sig=")[1].split("&")[0]  # quote() leaves '/' raw
    assert check(token, entity="hc").name == "RootManageSharedAccessKey"


def test_token_from_sb_hc_token_query_is_decoded_once():
    token = build_token("http://localhost/myhc", "RootManageSharedAccessKey", KEY, FUTURE)
    query = "sb-hc-action=connect&sb-hc-token=" + form_quote(token)
    assert form_unquote(form_quote(token)) == token
    carried = parse_query(query)["sb-hc-token"]
    assert carried == token
    assert check(carried).name == "RootManageSharedAccessKey"


def test_key_is_used_as_utf8_text_not_base64_decoded():
    key = generate_key()
    sr = "http%3A%2F%2Fh%2Fa"
    token = f"SharedAccessSignature sr={sr}&sig={quote(sign_b64(key, sr, str(FUTURE)), safe='')}" \
            f"&se={FUTURE}&skn=k"
    assert check(token, entity="a", rules=[rule(name="k", key=key)]).name == "k"
    decoded_key_sig = base64.b64encode(
        hmac.new(base64.b64decode(key), f"{sr}\n{FUTURE}".encode(), hashlib.sha256).digest()).decode()
    wrong = f"SharedAccessSignature sr={sr}&sig={quote(decoded_key_sig, safe='')}&se={FUTURE}&skn=k"
    with pytest.raises(AuthenticationError):
        check(wrong, entity="a", rules=[rule(name="k", key=key)])


def test_non_ascii_key_signed_as_utf8():
    key = "clé-ü-ключ"
    sr = "http%3A%2F%2Fh%2Fa"
    token = hand_token(sr, key, FUTURE, "k")
    assert check(token, entity="a", rules=[rule(name="k", key=key)]).name == "k"


# ---- parse: field names, order, malformed input -------------------------------------------------------------------

def test_parse_is_case_insensitive_on_field_names_and_order_free():
    sr = "http%3A%2F%2Fh%2Fmyhc"
    token = hand_token(sr, KEY, FUTURE, "RootManageSharedAccessKey", order=("sig", "se", "skn", "sr"))
    token = token.replace("sig=", "SIG=").replace("se=", "Se=").replace("skn=", "SKN=").replace("sr=", "sR=")
    parsed = parse_token(token)
    assert parsed.resource_raw == sr and parsed.key_name == "RootManageSharedAccessKey"
    assert check(token).name == "RootManageSharedAccessKey"
    # The prefix is matched case-insensitively as well, and surrounding whitespace is tolerated.
    assert check("  sharedaccesssignature " + token.split(" ", 1)[1] + " ").name == "RootManageSharedAccessKey"


def test_parse_splits_on_first_equals_only():
    # A '=' inside a value (an unencoded base64 pad) belongs to the value.
    sr = "http%3A%2F%2Fh%2Fmyhc"
    b64 = sign_b64(KEY, sr, str(FUTURE))
    assert b64.endswith("=")
    token = f"SharedAccessSignature sr={sr}&sig={b64}&se={FUTURE}&skn=RootManageSharedAccessKey"
    assert parse_token(token).signature == base64.b64decode(b64)


@pytest.mark.parametrize("missing", ["sr", "sig", "se", "skn"])
def test_missing_field_is_401(missing):
    good = build_token("http://h/myhc", "k", KEY, FUTURE)
    prefix, rest = good.split(" ", 1)
    kept = [p for p in rest.split("&") if not p.startswith(missing + "=")]
    with pytest.raises(AuthenticationError) as info:
        parse_token(prefix + " " + "&".join(kept))
    assert missing in str(info.value)
    assert info.value.http_status == 401
    # An empty value counts as missing too.
    emptied = [p if not p.startswith(missing + "=") else missing + "=" for p in rest.split("&")]
    with pytest.raises(AuthenticationError, match="missing"):
        parse_token(prefix + " " + "&".join(emptied))


@pytest.mark.parametrize("field", ["sr", "sig", "se", "skn"])
def test_repeated_field_is_401(field):
    good = build_token("http://h/myhc", "k", KEY, FUTURE)
    value = dict(p.split("=", 1) for p in good.split(" ", 1)[1].split("&"))[field]
    with pytest.raises(AuthenticationError, match="repeated"):
        parse_token(good + f"&{field.upper()}={value}")


@pytest.mark.parametrize("text", [
    "",
    "SharedAccessSignature",
    "SharedAccessSignature ",
    "Bearer sr=a&sig=b&se=1&skn=k",
    "sr=a&sig=b&se=1&skn=k",
    "SharedAccessSignature sr=a&sig&se=1&skn=k",
])
def test_malformed_tokens_are_401(text):
    with pytest.raises(AuthenticationError) as info:
        parse_token(text)
    assert info.value.http_status == 401


@pytest.mark.parametrize("se", ["abc", "-5", "+5", "1.5", "1e9", " 17", "１２３", "9" * 13, "99999999999999999999999"])
def test_se_must_be_a_plain_ascii_unix_time(se):
    sr = "http%3A%2F%2Fh%2Fmyhc"
    token = f"SharedAccessSignature sr={sr}&sig={quote(sign_b64(KEY, sr, se), safe='')}&se={se}&skn=k"
    with pytest.raises(AuthenticationError, match="'se'"):
        parse_token(token)


@pytest.mark.parametrize("sig", ["!!!!", "abc", "not base64 at all", "%ZZ"])
def test_sig_not_base64_is_401(sig):
    with pytest.raises(AuthenticationError, match="'sig'"):
        parse_token(f"SharedAccessSignature sr=http%3A%2F%2Fh&sig={sig}&se={FUTURE}&skn=k")


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_sig_of_wrong_length_is_401(size):
    sig = quote(base64.b64encode(b"\x01" * size).decode(), safe="")
    with pytest.raises(AuthenticationError, match="'sig'"):
        parse_token(f"SharedAccessSignature sr=http%3A%2F%2Fh&sig={sig or 'AA%3D%3D'}&se={FUTURE}&skn=k")


def test_over_long_token_is_refused_before_parsing():
    sr = "http%3A%2F%2Fh%2F" + "a" * (MAX_TOKEN_LENGTH)
    token = hand_token(sr, KEY, FUTURE, "RootManageSharedAccessKey")
    assert len(token) > MAX_TOKEN_LENGTH
    with pytest.raises(AuthenticationError, match="too long"):
        parse_token(token)
    # Just under the limit is fine.
    sr = "http%3A%2F%2Fh%2F" + "a" * 100
    assert parse_token(hand_token(sr, KEY, FUTURE, "k")).resource == "http://h/" + "a" * 100


def test_parse_errors_never_echo_the_token():
    secret_sig = quote(base64.b64encode(b"\x07" * 31).decode(), safe="")
    with pytest.raises(AuthenticationError) as info:
        parse_token(f"SharedAccessSignature sr=http%3A%2F%2Fsecret-host&sig={secret_sig}&se={FUTURE}&skn=k")
    assert secret_sig not in str(info.value) and "secret-host" not in str(info.value)


# ---- check_token: 401 vs 403 ---------------------------------------------------------------------------------------

def test_unknown_key_name_and_wrong_key_are_both_401_with_the_same_message():
    unknown_name = build_token("http://h/myhc", "NoSuchRule", KEY, FUTURE)
    wrong_key = build_token("http://h/myhc", "RootManageSharedAccessKey", OTHER_KEY, FUTURE)
    with pytest.raises(AuthenticationError) as a:
        check(unknown_name)
    with pytest.raises(AuthenticationError) as b:
        check(wrong_key)
    assert str(a.value) == str(b.value)
    assert a.value.http_status == b.value.http_status == 401
    assert "NoSuchRule" not in str(a.value)


def test_key_name_lookup_is_exact():
    token = build_token("http://h/myhc", "rootmanagesharedaccesskey", KEY, FUTURE)
    with pytest.raises(AuthenticationError):
        check(token)


def test_empty_rule_list_is_401():
    with pytest.raises(AuthenticationError):
        check(build_token("http://h/myhc", "k", KEY, FUTURE), rules=[])


def test_expiry_with_skew():
    token = build_token("http://h/myhc", "RootManageSharedAccessKey", KEY, NOW)
    # Not yet past: fine even without skew.
    assert check(token, now=NOW, skew=0)
    # One second late, no skew: expired, 401.
    with pytest.raises(AuthenticationError, match="expired") as info:
        check(token, now=NOW + 1, skew=0)
    assert info.value.http_status == 401
    # Inside the skew window: accepted; exactly at the edge too; one past it: refused.
    assert check(token, now=NOW + 299, skew=300)
    assert check(token, now=NOW + 300, skew=300)
    with pytest.raises(AuthenticationError, match="expired"):
        check(token, now=NOW + 301, skew=300)
    # The default skew is applied when not given.
    assert check(token, now=NOW + 60)
    with pytest.raises(AuthenticationError, match="expired"):
        check(token, now=NOW + 100_000)


def test_expired_token_with_bad_signature_reports_the_signature():
    token = build_token("http://h/myhc", "RootManageSharedAccessKey", OTHER_KEY, NOW - 10_000)
    with pytest.raises(AuthenticationError, match="signature"):
        check(token)


def test_signature_is_checked_over_se_as_written():
    sr = "http%3A%2F%2Fh%2Fmyhc"
    token = hand_token(sr, KEY, FUTURE, "RootManageSharedAccessKey")
    # Moving the expiry without re-signing must fail.
    with pytest.raises(AuthenticationError, match="signature"):
        check(token.replace(f"se={FUTURE}", f"se={FUTURE + 1000}"))


# ---- audience -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("audience, entity, covered", [
    # namespace scope
    ("http://h/", "myhc", True),
    ("http://h", "a/b/c", True),
    ("sb://ns.servicebus.windows.net/", "anything", True),
    # exact entity, with and without trailing slash
    ("http://h/myhc", "myhc", True),
    ("http://h/myhc/", "myhc", True),
    ("http://h/myhc", "other", False),
    # segment-wise prefix
    ("http://h/a", "a/b", True),
    ("http://h/a/", "a/b/c", True),
    ("http://h/a/b", "a/b", True),
    ("http://h/a/b", "a", False),
    ("http://h/a/b", "a/c", False),
    ("http://h/ab", "a/b", False),
    ("http://h/ab", "abc", False),
    ("http://h/a", "ab", False),
    # scheme, port, host, query, fragment ignored
    ("https://other.example:1234/myhc", "myhc", True),
    ("sb://localhost:8443/myhc/", "myhc", True),
    ("wss://127.0.0.1/myhc?sb-hc-action=listen#x", "myhc", True),
    ("localhost:8443/myhc", "myhc", True),
    # $hc/ in the audience
    ("http://h/$hc/myhc", "myhc", True),
    ("wss://h:443/$hc/a/", "a/b", True),
    ("http://h/$HC/myhc", "myhc", True),
    ("http://h/$hc/", "myhc", True),
    # case-insensitive
    ("HTTP://H/MyHC", "myhc", True),
    ("http://h/a", "A/B", True),
    ("http://h/A/b", "a/B/c", True),
    # a bare path names an entity, not a host
    ("/myhc", "myhc", True),
    ("/myhc", "other", False),
])
def test_audience_covers(audience, entity, covered):
    assert audience_covers(audience, entity) is covered


def test_audience_path_segments():
    assert audience_path("http://localhost:8443/myhc") == ("myhc",)
    assert audience_path("http://localhost/My/Hc/") == ("my", "hc")
    assert audience_path("http://ns/") == ()
    assert audience_path("http://ns/$hc/x") == ("x",)


def test_audience_mismatch_is_403_after_a_valid_signature():
    token = build_token("http://h/other", "RootManageSharedAccessKey", KEY, FUTURE)
    with pytest.raises(AuthorizationError) as info:
        check(token, entity="myhc")
    assert info.value.http_status == 403
    token = build_token("http://h/ab", "RootManageSharedAccessKey", KEY, FUTURE)
    with pytest.raises(AuthorizationError):
        check(token, entity="a/b")


def test_audience_with_hc_prefix_and_port_through_check_token():
    token = build_token("http://contoso.servicebus.windows.net:443/$hc/a/", "RootManageSharedAccessKey", KEY, FUTURE)
    assert check(token, entity="A/B/c")


# ---- rights -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rights, needed, ok", [
    (Right.LISTEN, Right.LISTEN, True),
    (Right.LISTEN, Right.SEND, False),
    (Right.SEND, Right.SEND, True),
    (Right.SEND, Right.LISTEN, False),
    (Right.MANAGE, Right.LISTEN, True),
    (Right.MANAGE, Right.SEND, True),
    (Right.LISTEN | Right.SEND, Right.SEND, True),
    (Right.LISTEN | Right.SEND, Right.MANAGE, False),
    (Right.NONE, Right.SEND, False),
])
def test_rights(rights, needed, ok):
    token = build_token("http://h/myhc", "r", KEY, FUTURE)
    rules = [rule(name="r", rights=rights)]
    if ok:
        assert check(token, needed=needed, rules=rules).name == "r"
    else:
        with pytest.raises(AuthorizationError) as info:
            check(token, needed=needed, rules=rules)
        assert info.value.http_status == 403


def test_right_parse_effective_and_names():
    assert Right.parse(["Listen", " send "]) == Right.LISTEN | Right.SEND
    assert Right.parse(("MANAGE",)) == Right.MANAGE
    assert Right.parse([]) == Right.NONE
    assert Right.MANAGE.effective() == Right.MANAGE | Right.LISTEN | Right.SEND
    assert Right.LISTEN.effective() == Right.LISTEN
    assert (Right.SEND | Right.LISTEN).names() == ["Listen", "Send"]
    assert Right.MANAGE.names() == ["Manage"]
    assert Right.NONE.names() == []
    with pytest.raises(ConfigError, match="Read"):
        Right.parse(["Listen", "Read"])


def test_entity_scoped_rule_on_another_entity_is_403():
    scoped = rule(name="hcrule", rights=Right.SEND | Right.LISTEN, entity="myhc")
    ns_token = build_token("http://h/", "hcrule", KEY, FUTURE)
    assert check(ns_token, entity="myhc", rules=[scoped]) == scoped
    assert check(ns_token, entity="MyHC", rules=[scoped]) == scoped  # entity names are case-insensitive
    with pytest.raises(AuthorizationError) as info:
        check(ns_token, entity="otherhc", rules=[scoped])
    assert info.value.http_status == 403
    with pytest.raises(AuthorizationError):
        check(ns_token, entity="myhc/sub", rules=[scoped])


def test_secondary_key_is_accepted_and_primary_still_works():
    both = rule(name="r", key=KEY, secondary=OTHER_KEY)
    assert both.keys() == (KEY, OTHER_KEY)
    assert check(build_token("http://h/myhc", "r", OTHER_KEY, FUTURE), rules=[both]) == both
    assert check(build_token("http://h/myhc", "r", KEY, FUTURE), rules=[both]) == both
    with pytest.raises(AuthenticationError):
        check(build_token("http://h/myhc", "r", "third", FUTURE), rules=[both])
    assert rule(secondary=None).keys() == (KEY,)
    assert rule(secondary="").keys() == (KEY,)


def test_the_rule_with_the_token_key_name_is_used():
    listen_only = rule(name="listener", key="lk", rights=Right.LISTEN)
    send_only = rule(name="sender", key="sk", rights=Right.SEND)
    rules = [listen_only, send_only]
    assert check(build_token("http://h/myhc", "sender", "sk", FUTURE), rules=rules) == send_only
    assert check(build_token("http://h/myhc", "listener", "lk", FUTURE), needed=Right.LISTEN,
                 rules=rules) == listen_only
    # Another rule's key under this rule's name does not sign.
    with pytest.raises(AuthenticationError):
        check(build_token("http://h/myhc", "sender", "lk", FUTURE), rules=rules)


# ---- secrets never shown --------------------------------------------------------------------------------------------

def test_reprs_never_show_keys_or_signatures():
    r = SasRule(name="Root", primary_key="PRIMARY-SECRET", rights=Right.MANAGE, secondary_key="SECONDARY-SECRET")
    text = repr(r) + str(r)
    assert "Root" in text
    assert "PRIMARY-SECRET" not in text and "SECONDARY-SECRET" not in text

    token_text = build_token("http://h/myhc", "Root", KEY, FUTURE)
    token = parse_token(token_text)
    sig_b64 = base64.b64encode(token.signature).decode()
    shown = repr(token) + str(token)
    assert "Root" in shown
    assert sig_b64 not in shown and quote(sig_b64, safe="") not in shown
    assert repr(token.signature) not in shown

    cs = ConnectionString.parse("Endpoint=sb://h/;SharedAccessKeyName=Root;SharedAccessKey=THE-KEY-VALUE")
    assert "THE-KEY-VALUE" not in repr(cs)
    cs2 = ConnectionString.parse("Endpoint=sb://h/;SharedAccessSignature=" + token_text)
    assert sig_b64 not in repr(cs2) and quote(sig_b64, safe="") not in repr(cs2)


def test_sas_token_is_a_plain_value():
    t = SasToken(resource_raw="x", signature=b"\0" * 32, expiry=1, expiry_raw="1", key_name="k")
    assert t.resource == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.expiry = 2


def test_generate_key_is_fresh_base64_of_32_bytes():
    a, b = generate_key(), generate_key()
    assert a != b
    assert len(base64.b64decode(a, validate=True)) == 32


# ---- connection strings ---------------------------------------------------------------------------------------------

def test_connection_string_parse_and_str_round_trip():
    text = ("Endpoint=sb://localhost:8443/;SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=abc+/def==;EntityPath=a/b")
    cs = ConnectionString.parse(text)
    assert cs.endpoint == "sb://localhost:8443/"
    assert cs.key_name == "RootManageSharedAccessKey"
    assert cs.key == "abc+/def=="  # '=' inside the value is kept
    assert cs.entity_path == "a/b"
    assert cs.shared_access_signature is None
    assert str(cs) == text
    assert ConnectionString.parse(str(cs)) == cs


def test_connection_string_field_names_are_case_insensitive_and_whitespace_tolerated():
    cs = ConnectionString.parse(" endpoint = sb://h/ ; SHAREDACCESSKEYNAME=k ; sharedAccessKey=v ;; entitypath=e ;")
    assert (cs.endpoint, cs.key_name, cs.key, cs.entity_path) == ("sb://h/", "k", "v", "e")
    assert ConnectionString.parse(str(cs)) == cs


def test_connection_string_with_sas_only_round_trips():
    token = build_token("http://h/e", "k", KEY, FUTURE)
    cs = ConnectionString.parse(f"Endpoint=wss://h:9/;SharedAccessSignature={token};EntityPath=e")
    assert cs.shared_access_signature == token and cs.key is None and cs.key_name is None
    assert ConnectionString.parse(str(cs)) == cs
    assert parse_token(cs.shared_access_signature).key_name == "k"


def test_connection_string_without_credentials_is_allowed():
    cs = ConnectionString.parse("Endpoint=http://h/")
    assert cs.key is None and cs.key_name is None
    assert str(cs) == "Endpoint=http://h/"


@pytest.mark.parametrize("text, what", [
    ("", "Endpoint"),
    ("SharedAccessKeyName=k;SharedAccessKey=v", "Endpoint"),
    ("Endpoint=", "Endpoint"),
    ("Endpoint=ftp://h/", "sb://"),
    ("Endpoint=h", "sb://"),
    ("Endpoint=sb:///", "sb://"),
    ("Endpoint=sb://h/;JustAWord", "no '='"),
    ("Endpoint=sb://h/;SharedAccessKeyName=k", "go together"),
    ("Endpoint=sb://h/;SharedAccessKey=v", "go together"),
])
def test_connection_string_errors(text, what):
    with pytest.raises(ConfigError) as info:
        ConnectionString.parse(text)
    assert what in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RelayError)


def test_connection_string_error_never_echoes_a_part():
    # A part without '=' may be a pasted key: it must not end up in an error message or a log.
    with pytest.raises(ConfigError) as info:
        ConnectionString.parse("Endpoint=sb://h/;SharedAccessKeyName=k;c2VjcmV0LWtleS12YWx1ZQ")
    assert "c2VjcmV0LWtleS12YWx1ZQ" not in str(info.value)


def test_form_quote_round_trip():
    for value in ("SharedAccessSignature sr=a%2Fb&sig=x%2B%3D&se=1&skn=k k", "a+b c/d?e=f&g", ""):
        quoted = form_quote(value)
        assert "&" not in quoted and " " not in quoted and "=" not in quoted
        assert form_unquote(quoted) == value
