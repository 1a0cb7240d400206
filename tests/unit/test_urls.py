"""URL and query rules (spec §1): sb-hc-* filtering, query parsing, actions, entity split, token carriers,
rendezvous addresses and reject parameters."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from hybrid.errors import BadRequest
from hybrid.protocol.urls import (
    HC_PREFIX,
    MAX_URL_LENGTH,
    QUERY_PREFIX,
    Action,
    TokenCarrier,
    action_of,
    build_rendezvous_address,
    extract_token,
    filter_query,
    join_path,
    parse_query,
    reject_parameters,
    sanitize_reason,
    split_entity,
)

SAS = "SharedAccessSignature sr=http%3A%2F%2Fh%2Fhc&sig=abc%3D&se=1&skn=k"


def test_constants():
    assert HC_PREFIX == "$hc"
    assert QUERY_PREFIX == "sb-hc-"


# ---- filter_query: every example of spec §1.2 -------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("sb-hc-id=1&custom=value", "custom=value"),
    ("sb-hc-undefined", "sb-hc-undefined"),
    ("&custom&value&", "&custom&value&"),
    ("sb-hc-whatever=", ""),
    ("", ""),
    # case-insensitive prefix
    ("SB-HC-ID=1&x=2", "x=2"),
    ("Sb-Hc-Token=abc&x=2", "x=2"),
    # order and original percent-encoding kept byte for byte
    ("b=2&sb-hc-action=connect&a=%20x+y&sb-hc-token=t%2B&c=%2f", "b=2&a=%20x+y&c=%2f"),
    ("a=1&a=2&sb-hc-id=3", "a=1&a=2"),
    # only the key decides; values that look like sb-hc are kept
    ("x=sb-hc-id=1", "x=sb-hc-id=1"),
    # a key that merely resembles the prefix is kept
    ("sb-hcid=1&sbhc-id=2&sb_hc_id=3", "sb-hcid=1&sbhc-id=2&sb_hc_id=3"),
    # the bare prefix is still the prefix
    ("sb-hc-=1&y", "y"),
    # empty pieces between kept ones stay
    ("sb-hc-id=1&&a=1", "&a=1"),
    ("a&sb-hc-id=&b", "a&b"),
])
def test_filter_query(raw, expected):
    assert filter_query(raw) == expected


def test_filter_query_keeps_sb_hc_pieces_without_equals_but_drops_with_any_value():
    assert filter_query("sb-hc-token") == "sb-hc-token"
    assert filter_query("sb-hc-token=") == ""
    assert filter_query("sb-hc-token==") == ""


# ---- parse_query ----------------------------------------------------------------------------------------------------

def test_parse_query_keeps_only_sb_hc_names_lower_cased_and_decodes_values_once():
    params = parse_query("SB-HC-Action=Listen&sb-hc-id=a%2Bb+c&app=1&sb-hc-token=x%2525y")
    assert params == {"sb-hc-action": "Listen", "sb-hc-id": "a+b c", "sb-hc-token": "x%25y"}


def test_parse_query_ignores_pieces_without_equals():
    assert parse_query("sb-hc-undefined&&x") == {}
    assert parse_query("") == {}


@pytest.mark.parametrize("raw", [
    "sb-hc-id=1&sb-hc-id=2",
    "sb-hc-token=a&SB-HC-TOKEN=a",
    "sb-hc-action=listen&x=1&sb-hc-action=connect",
    "sb-hc-id=&sb-hc-id=",
])
def test_parse_query_refuses_duplicate_sb_hc_parameter(raw):
    with pytest.raises(BadRequest) as info:
        parse_query(raw)
    assert info.value.http_status == 400


def test_parse_query_allows_duplicate_app_parameters():
    assert parse_query("a=1&a=2&sb-hc-id=x") == {"sb-hc-id": "x"}


@pytest.mark.parametrize("raw", [
    "sb-hc-id=1&custom=value",
    "SB-HC-TOKEN=t&a=b&Sb-Hc-Action=connect",
    "sb%2Dhc%2Dtoken=secret&x=1",
    "%73b-hc-id=1&sb-hc-id=2",
    "statusCode=500&sb-hc-action=accept&sb-hc-id=i",
    "a&b=&sb-hc-whatever=&sb-hc-undefined",
])
def test_every_parameter_parse_query_reads_is_stripped_by_filter_query(raw):
    params = parse_query(raw)
    kept = filter_query(raw)
    sb_keys = {k for k in params if k.startswith(QUERY_PREFIX)}
    for piece in kept.split("&"):
        name = piece.partition("=")[0].lower()
        assert name not in sb_keys, (raw, piece)
    # And nothing filter_query kept is read as a relay parameter.
    assert not {k for k in parse_query(kept) if k.startswith(QUERY_PREFIX)}


def test_percent_encoded_prefix_is_an_application_parameter():
    # Names are matched as written, in parse_query and filter_query alike: an encoded name is app data, never a token.
    raw = "sb%2Dhc%2Dtoken=secret&sb-hc-id=1"
    assert parse_query(raw) == {"sb-hc-id": "1"}
    assert filter_query(raw) == "sb%2Dhc%2Dtoken=secret"


# ---- action_of ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, action", [
    ({}, Action.CONNECT),
    ({"sb-hc-action": ""}, Action.CONNECT),
    ({"sb-hc-action": "connect"}, Action.CONNECT),
    ({"sb-hc-action": "listen"}, Action.LISTEN),
    ({"sb-hc-action": "accept"}, Action.ACCEPT),
    ({"sb-hc-action": "request"}, Action.REQUEST),
    ({"sb-hc-action": "LISTEN"}, Action.LISTEN),
])
def test_action_of(params, action):
    assert action_of(params) is action


def test_action_default_through_parse_query():
    assert action_of(parse_query("sb-hc-token=x")) is Action.CONNECT
    assert action_of(parse_query("sb-hc-action=listen&sb-hc-id=1")) is Action.LISTEN


@pytest.mark.parametrize("value", ["send", "delete", "listen ", "x" * 500, "connect\r\n"])
def test_unknown_action_is_400(value):
    with pytest.raises(BadRequest) as info:
        action_of({"sb-hc-action": value})
    assert info.value.http_status == 400
    assert len(str(info.value)) < 120  # the value is cut, never echoed whole


# ---- split_entity -----------------------------------------------------------------------------------------------------

KNOWN = {"a", "a/b", "a/b/c/d", "myhc", "deep/name/here"}


def known(name: str) -> bool:
    return name.lower() in KNOWN


@pytest.mark.parametrize("path, expected", [
    ("/$hc/myhc", ("myhc", "")),
    ("/$hc/myhc/", ("myhc", "/")),
    ("/$hc/myhc/any/suffix", ("myhc", "/any/suffix")),
    ("/$hc/a", ("a", "")),
    ("/$hc/a/x", ("a", "/x")),
    ("/$hc/a/b", ("a/b", "")),
    ("/$hc/a/b/x", ("a/b", "/x")),
    ("/$hc/a/b/c", ("a/b", "/c")),
    ("/$hc/a/b/c/d", ("a/b/c/d", "")),
    ("/$hc/a/b/c/d/e/f", ("a/b/c/d", "/e/f")),
    ("/$hc/deep/name/here/x", ("deep/name/here", "/x")),
    ("/$hc/MyHC/x", ("MyHC", "/x")),
    ("/$HC/myhc", ("myhc", "")),
    ("$hc/myhc", ("myhc", "")),
    # no partial-segment matches
    ("/$hc/ab", ("", "")),
    ("/$hc/myhcx", ("", "")),
    ("/$hc/deep/name", ("", "")),
    ("/$hc/unknown/a", ("", "")),
])
def test_split_entity_hc(path, expected):
    assert split_entity(path, known, hc=True) == expected


@pytest.mark.parametrize("path, expected", [
    ("/myhc", ("myhc", "")),
    ("/myhc/abc/def", ("myhc", "/abc/def")),
    ("/a/b/c/d/e", ("a/b/c/d", "/e")),
    ("/nothing", ("", "")),
    ("/$hc/myhc", ("", "")),  # on the HTTP side '$hc' is just an unknown name
])
def test_split_entity_http(path, expected):
    assert split_entity(path, known, hc=False) == expected


def test_split_entity_tries_longest_first():
    asked: list[str] = []

    def record(name: str) -> bool:
        asked.append(name)
        return name in ("x", "x/y/z")

    assert split_entity("/$hc/x/y/z/w", record, hc=True) == ("x/y/z", "/w")
    assert asked == ["x/y/z/w", "x/y/z"]


@pytest.mark.parametrize("path", [
    "/myhc",          # no $hc
    "/hc/myhc",
    "/",
    "",
    "/$hc",
    "/$hc/",
    "/$hc//myhc",
    "/$hcx/myhc",
])
def test_split_entity_bad_hc_paths(path):
    with pytest.raises(BadRequest) as info:
        split_entity(path, known, hc=True)
    assert info.value.http_status == 400


@pytest.mark.parametrize("path", [
    "/$hc/./myhc",
    "/$hc/../myhc",
    "/$hc/myhc/..",
    "/$hc/myhc/./x",
    "/$hc/a/b/../../c",
    "/$hc/a/..",
])
def test_split_entity_refuses_dot_segments(path):
    with pytest.raises(BadRequest, match="'.'"):
        split_entity(path, known, hc=True)
    with pytest.raises(BadRequest):
        split_entity(path[len("/$hc"):], known, hc=False)


def test_split_entity_refuses_over_long_paths():
    with pytest.raises(BadRequest, match="too long"):
        split_entity("/$hc/myhc/" + "x" * MAX_URL_LENGTH, known, hc=True)
    name, suffix = split_entity("/$hc/myhc/" + "x" * 100, known, hc=True)
    assert name == "myhc" and suffix == "/" + "x" * 100


def test_split_entity_never_asks_for_names_with_empty_trailing_segment():
    asked: list[str] = []
    split_entity("/$hc/q//", lambda n: asked.append(n) or False, hc=True)
    assert all(not n.endswith("/") for n in asked)


# ---- token carriers (spec §1.4) -------------------------------------------------------------------------------------

class CIHeaders(dict):
    """A tiny case-insensitive header mapping, like the one the gateway's web framework hands over."""

    def __init__(self, items):
        super().__init__((k.lower(), (k, v)) for k, v in items.items())

    def get(self, key, default=None):
        hit = super().get(key.lower())
        return hit[1] if hit else default


@pytest.mark.parametrize("query, headers, required, expected", [
    # query wins over both headers
    ({"sb-hc-token": "Q"}, {"ServiceBusAuthorization": "S", "Authorization": SAS}, True,
     ("Q", TokenCarrier.QUERY, False)),
    ({"sb-hc-token": "Q"}, {"ServiceBusAuthorization": "S"}, False, ("Q", TokenCarrier.QUERY, False)),
    # then ServiceBusAuthorization, required or not
    ({}, {"ServiceBusAuthorization": "S", "Authorization": SAS}, True,
     ("S", TokenCarrier.SERVICEBUS_HEADER, False)),
    ({}, {"ServiceBusAuthorization": "S"}, False, ("S", TokenCarrier.SERVICEBUS_HEADER, False)),
    # Authorization only when required, nothing else present, and SAS-shaped
    ({}, {"Authorization": SAS}, True, (SAS, TokenCarrier.AUTHORIZATION_HEADER, True)),
    ({}, {"Authorization": "sharedaccesssignature " + SAS.split(" ", 1)[1]}, True,
     ("sharedaccesssignature " + SAS.split(" ", 1)[1], TokenCarrier.AUTHORIZATION_HEADER, True)),
    ({}, {"Authorization": SAS}, False, (None, None, False)),
    ({}, {"Authorization": "Bearer abc"}, True, (None, None, False)),
    ({}, {"Authorization": "Basic dXNlcjpwdw=="}, True, (None, None, False)),
    # empty carriers do not count
    ({"sb-hc-token": ""}, {"ServiceBusAuthorization": "S"}, True, ("S", TokenCarrier.SERVICEBUS_HEADER, False)),
    ({"sb-hc-token": ""}, {"ServiceBusAuthorization": "", "Authorization": SAS}, True,
     (SAS, TokenCarrier.AUTHORIZATION_HEADER, True)),
    ({}, {}, True, (None, None, False)),
    ({}, {}, False, (None, None, False)),
])
def test_extract_token_precedence(query, headers, required, expected):
    assert extract_token(query, headers, authorization_required=required) == expected
    assert extract_token(query, CIHeaders(headers), authorization_required=required) == expected


def test_extract_token_with_case_insensitive_headers():
    headers = CIHeaders({"servicebusauthorization": "S"})
    assert extract_token({}, headers, authorization_required=True) == ("S", TokenCarrier.SERVICEBUS_HEADER, False)
    headers = CIHeaders({"authorization": SAS})
    assert extract_token({}, headers, authorization_required=True)[1] is TokenCarrier.AUTHORIZATION_HEADER


def test_extract_token_from_a_parsed_query():
    params = parse_query("sb-hc-action=connect&sb-hc-token=" + quote(SAS, safe=""))
    assert extract_token(params, {}, authorization_required=True) == (SAS, TokenCarrier.QUERY, False)


def test_token_carrier_values_are_wire_names():
    assert TokenCarrier.QUERY.value == "sb-hc-token"
    assert TokenCarrier.SERVICEBUS_HEADER.value == "ServiceBusAuthorization"
    assert TokenCarrier.AUTHORIZATION_HEADER.value == "Authorization"


# ---- rendezvous addresses -------------------------------------------------------------------------------------------

def test_rendezvous_address_shape_and_round_trip():
    address = build_rendezvous_address(scheme="wss", authority="gw:8443", entity="myhc", suffix="/sfx",
                                       app_query="a=1", action=Action.ACCEPT, tracking_id="id-1")
    assert address == "wss://gw:8443/$hc/myhc/sfx?a=1&sb-hc-action=accept&sb-hc-id=id-1"
    path, _, query = address.partition("://")[2].partition("/")[2].partition("?")
    params = parse_query(query)
    assert params == {"sb-hc-action": "accept", "sb-hc-id": "id-1"}
    assert action_of(params) is Action.ACCEPT
    assert filter_query(query) == "a=1"
    assert split_entity("/" + path, known, hc=True) == ("myhc", "/sfx")


def test_rendezvous_address_without_app_query_or_suffix():
    address = build_rendezvous_address(scheme="ws", authority="localhost", entity="a/b", suffix="", app_query="",
                                       action=Action.REQUEST, tracking_id="t")
    assert address == "ws://localhost/$hc/a/b?sb-hc-action=request&sb-hc-id=t"


def test_rendezvous_address_quotes_id_entity_and_suffix():
    tid = "x&sb-hc-action=listen y/z"
    address = build_rendezvous_address(scheme="wss", authority="h", entity="my hc", suffix="/p q?r#s",
                                       app_query="k=v", action=Action.ACCEPT, tracking_id=tid)
    base, _, query = address.partition("?")
    assert base == "wss://h/$hc/my%20hc/p%20q%3Fr%23s"
    assert parse_query(query) == {"sb-hc-action": "accept", "sb-hc-id": tid}


# ---- reject parameters ----------------------------------------------------------------------------------------------

def test_no_reject_parameters():
    assert reject_parameters({}) is None
    assert reject_parameters(parse_query("sb-hc-action=accept&sb-hc-id=1")) is None
    assert reject_parameters({"sb-hc-statusdescription": "only a description"}) is None


def test_dotnet_reject_spelling():
    params = parse_query("sb-hc-action=accept&sb-hc-id=1&sb-hc-statusCode=401"
                         "&sb-hc-statusDescription=Status%20Description+from%20test")
    assert reject_parameters(params) == (401, "Status Description from test")


def test_node_reject_spelling():
    params = parse_query("sb-hc-action=accept&sb-hc-id=1&statusCode=403&statusDescription=Go%20away")
    assert reject_parameters(params) == (403, "Go away")


def test_dotnet_spelling_wins_over_node_spelling():
    params = parse_query("sb-hc-action=accept&sb-hc-id=1&sb-hc-statusCode=401&sb-hc-statusDescription=dotnet"
                         "&statusCode=500&statusDescription=node")
    assert reject_parameters(params) == (401, "dotnet")


def test_reject_default_description():
    assert reject_parameters(parse_query("sb-hc-id=1&statusCode=400")) == (400, "Rejected by user code")
    assert reject_parameters({"sb-hc-statuscode": "404", "sb-hc-statusdescription": ""}) == \
        (404, "Rejected by user code")


def test_reject_description_is_sanitized():
    params = parse_query("sb-hc-id=1&sb-hc-statusCode=400&sb-hc-statusDescription=bad%0D%0ASet-Cookie:%20x")
    status, reason = reject_parameters(params)
    assert status == 400
    assert "\r" not in reason and "\n" not in reason
    assert reason == "bad  Set-Cookie: x"


def test_app_query_status_code_is_not_a_rejection():
    # A sender's own query reaches the listener inside the accept address, before the gateway's parameters.
    # A listener that opens that address unchanged is accepting, whatever the app query says.
    app = "statusCode=500&statusDescription=app&page=2"
    address = build_rendezvous_address(scheme="ws", authority="gw", entity="myhc", suffix="",
                                       app_query=filter_query(app), action=Action.ACCEPT, tracking_id="t1")
    query = address.partition("?")[2]
    assert reject_parameters(parse_query(query)) is None
    # The same address with Node's reject pair appended is a rejection with the listener's values.
    rejected = parse_query(query + "&statusCode=401&statusDescription=nope")
    assert reject_parameters(rejected) == (401, "nope")
    # And the .NET spelling is read as well.
    rejected = parse_query(query + "&sb-hc-statusCode=403")
    assert reject_parameters(rejected) == (403, "Rejected by user code")


@pytest.mark.parametrize("code", ["abc", "", " ", "200", "399", "600", "99", "1000", "4_01", "+401", "-401",
                                  "40.1", "٤٠١", "4" * 5000])
def test_bad_reject_status_codes_are_400(code):
    with pytest.raises(BadRequest) as info:
        reject_parameters({"sb-hc-statuscode": code})
    assert info.value.http_status == 400
    with pytest.raises(BadRequest):
        reject_parameters({"node-statuscode": code})


@pytest.mark.parametrize("code", ["400", "401", "404", "410", "499", "500", "599", " 403 "])
def test_good_reject_status_codes(code):
    assert reject_parameters({"sb-hc-statuscode": code})[0] == int(code)


# ---- small helpers --------------------------------------------------------------------------------------------------

def test_sanitize_reason():
    assert sanitize_reason("OK") == "OK"
    assert sanitize_reason("  a\r\nb\tc\x00d\x7fé  ") == "a  b c d"
    assert sanitize_reason("x" * 1000) == "x" * 256
    assert sanitize_reason("") == ""


def test_join_path():
    assert join_path(["/a/", "", "b", "/", "c/"]) == "a/b/c"
    assert join_path([]) == ""
