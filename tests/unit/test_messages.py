"""Control messages (spec §2) and header rules, plus the error classes they raise."""

from __future__ import annotations

import json

import pytest

from hybrid import errors
from hybrid.errors import PayloadTooLarge, ProtocolError, RelayError
from hybrid.protocol.messages import (
    HOP_BY_HOP,
    INLINE_BODY_LIMIT,
    MAX_CONTROL_MESSAGE,
    Accept,
    RemoteEndpoint,
    RenewToken,
    Request,
    Response,
    Unknown,
    encode,
    encode_bytes,
    join_headers,
    parse_message,
    request_headers_for_listener,
    response_headers_for_sender,
    wire_text,
)

ADDR = "wss://gw:8443/$hc/myhc/sfx?a=1&sb-hc-action=accept&sb-hc-id=abc"
REQ_ADDR = "wss://gw:8443/$hc/myhc?sb-hc-action=request&sb-hc-id=r1"


def wire(message) -> dict:
    return json.loads(encode(message))


def test_limits_are_64_kib():
    assert MAX_CONTROL_MESSAGE == 65536
    assert INLINE_BODY_LIMIT == 65536


# ---- round trips ------------------------------------------------------------------------------------------------------

def test_accept_round_trip():
    msg = Accept(ADDR, "abc", {"Sec-WebSocket-Key": "k==", "Sec-WebSocket-Protocol": "chat, superchat"},
                 RemoteEndpoint("10.0.0.1", 1234))
    data = wire(msg)
    assert data == {"accept": {"address": ADDR, "id": "abc",
                               "connectHeaders": {"Sec-WebSocket-Key": "k==",
                                                  "Sec-WebSocket-Protocol": "chat, superchat"},
                               "remoteEndpoint": {"address": "10.0.0.1", "port": 1234}}}
    assert parse_message(encode(msg)) == msg


def test_accept_without_remote_endpoint():
    msg = Accept(ADDR, "abc", {})
    assert "remoteEndpoint" not in wire(msg)["accept"]
    assert parse_message(encode(msg)) == msg


def test_inline_request_with_body_round_trip():
    msg = Request(REQ_ADDR, "r1", method="POST", request_target="/myhc/path?x=1",
                  request_headers={"Content-Type": "text/plain", "X-Custom": "v1, v2"}, body=True,
                  remote_endpoint=RemoteEndpoint("::1", 5))
    data = wire(msg)["request"]
    assert data == {"address": REQ_ADDR, "id": "r1", "requestTarget": "/myhc/path?x=1", "method": "POST",
                    "requestHeaders": {"Content-Type": "text/plain", "X-Custom": "v1, v2"}, "body": True,
                    "remoteEndpoint": {"address": "::1", "port": 5}}
    parsed = parse_message(encode(msg))
    assert parsed == msg and parsed.inline


def test_inline_request_without_body_says_body_false_explicitly():
    # .NET tells the shapes apart by the presence of "body", hyco-https by "method" (spec §2.3): both must be there.
    for body in (False, None):
        msg = Request(REQ_ADDR, "r1", method="GET", request_target="/myhc", body=body)
        data = wire(msg)["request"]
        assert data["body"] is False
        assert data["method"] == "GET"
        assert data["requestHeaders"] == {}
        assert "remoteEndpoint" not in data
        parsed = parse_message(encode(msg))
        assert parsed.inline and parsed.body is False and parsed.method == "GET"


def test_inline_request_default_target_is_slash():
    assert wire(Request(REQ_ADDR, "r1", method="GET"))["request"]["requestTarget"] == "/"
    parsed = parse_message('{"request":{"address":"wss://a/","id":"x","method":"GET"}}')
    assert parsed.request_target == "/" and parsed.body is False


def test_rendezvous_only_request_has_neither_method_nor_body():
    msg = Request(REQ_ADDR, "r1")
    assert not msg.inline
    assert wire(msg) == {"request": {"address": REQ_ADDR, "id": "r1"}}
    parsed = parse_message(encode(msg))
    assert parsed == msg
    assert parsed.method is None and parsed.body is None and not parsed.inline


def test_request_method_must_be_a_string():
    for method in ('""', "5", "true", "[]"):
        with pytest.raises(ProtocolError):
            parse_message('{"request":{"address":"wss://a/","id":"x","method":%s}}' % method)


@pytest.mark.parametrize("missing", ["address", "id"])
def test_request_needs_address_and_id(missing):
    body = {"address": REQ_ADDR, "id": "r1", "method": "GET", "body": False}
    del body[missing]
    with pytest.raises(ProtocolError, match=missing):
        parse_message(json.dumps({"request": body}))


def test_response_round_trip():
    msg = Response("r1", 200, "OK", {"Content-Type": "text/plain"}, body=True)
    assert wire(msg) == {"response": {"requestId": "r1", "statusCode": 200, "statusDescription": "OK",
                                      "responseHeaders": {"Content-Type": "text/plain"}, "body": True}}
    assert parse_message(encode(msg)) == msg
    bare = Response("r2", 204)
    assert "statusDescription" not in wire(bare)["response"]
    assert wire(bare)["response"]["body"] is False
    assert parse_message(encode(bare)) == bare


def test_renew_token_round_trip_keeps_token_raw():
    token = "SharedAccessSignature sr=http%3A%2F%2Fh%2Fhc&sig=a%2Bb%3D&se=1&skn=k"
    msg = RenewToken(token)
    assert wire(msg) == {"renewToken": {"token": token}}
    assert parse_message(encode(msg)) == msg


@pytest.mark.parametrize("body", ['{}', '{"token":""}', '{"token":5}', '{"token":null}'])
def test_renew_token_needs_a_token(body):
    with pytest.raises(ProtocolError, match="token"):
        parse_message('{"renewToken":%s}' % body)


@pytest.mark.parametrize("body", ['{"id":"x"}', '{"address":"a"}', '{"address":"","id":"x"}',
                                  '{"address":"a","id":7}'])
def test_accept_needs_address_and_id(body):
    with pytest.raises(ProtocolError):
        parse_message('{"accept":%s}' % body)


def test_encode_is_compact_and_keeps_non_ascii():
    text = encode(Response("r1", 200, "Größe", {"X": "ü"}))
    assert ", " not in text and ": " not in text
    assert "Größe" in text and "\\u" not in text


def test_parse_accepts_bytes():
    msg = Response("r1", 404, "Nicht gefunden ü")
    assert parse_message(encode(msg).encode("utf-8")) == msg


def test_property_order_does_not_matter():
    parsed = parse_message('{"response":{"body":true,"statusCode":201,"requestId":"q"}}')
    assert parsed == Response("q", 201, None, {}, True)


# ---- response details -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code, expected", [("200", 200), (200, 200), ("404", 404), (599, 599), (100, 100)])
def test_status_code_as_int_or_string(code, expected):
    parsed = parse_message(json.dumps({"response": {"requestId": "r", "statusCode": code}}))
    assert parsed.status_code == expected


@pytest.mark.parametrize("code", ['"abc"', "99", "600", "true", "false", "null", '""', "[]", "{}",
                                  "Infinity", "-Infinity", "NaN", "1e400", '"2OO"'])
def test_bad_status_code_is_a_protocol_error(code):
    with pytest.raises(ProtocolError, match="statusCode"):
        parse_message('{"response":{"requestId":"r","statusCode":%s}}' % code)


def test_missing_status_code_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        parse_message('{"response":{"requestId":"r"}}')


@pytest.mark.parametrize("rid", ['""', "5", "null"])
def test_response_needs_request_id(rid):
    with pytest.raises(ProtocolError, match="requestId"):
        parse_message('{"response":{"requestId":%s,"statusCode":200}}' % rid)


def test_response_body_only_true_when_json_true():
    for value, expected in (("true", True), ("false", False), ('"true"', False), ("1", False), ("null", False)):
        parsed = parse_message('{"response":{"requestId":"r","statusCode":200,"body":%s}}' % value)
        assert parsed.body is expected


def test_non_string_description_is_dropped():
    parsed = parse_message('{"response":{"requestId":"r","statusCode":200,"statusDescription":5}}')
    assert parsed.status_description is None


# ---- header maps ------------------------------------------------------------------------------------------------------

def test_header_arrays_are_joined_and_numbers_stringified():
    parsed = parse_message(json.dumps({"response": {
        "requestId": "r", "statusCode": 200,
        "responseHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Num": 5, "X-Empty": []}}}))
    assert parsed.response_headers == {"Set-Cookie": "a=1, b=2", "X-Num": "5", "X-Empty": ""}
    parsed = parse_message(json.dumps({"request": {"address": "wss://a/", "id": "i", "method": "GET",
                                                   "requestHeaders": {"Accept": ["a", "b", "c"]}}}))
    assert parsed.request_headers == {"Accept": "a, b, c"}


@pytest.mark.parametrize("value", ["null", "true", "{}"])
def test_non_string_header_value_is_a_protocol_error(value):
    with pytest.raises(ProtocolError, match="not a string"):
        parse_message('{"response":{"requestId":"r","statusCode":200,"responseHeaders":{"X":%s}}}' % value)


@pytest.mark.parametrize("value", ['"x"', "[]", "5"])
def test_header_map_must_be_an_object(value):
    with pytest.raises(ProtocolError, match="object"):
        parse_message('{"response":{"requestId":"r","statusCode":200,"responseHeaders":%s}}' % value)
    with pytest.raises(ProtocolError, match="object"):
        parse_message('{"accept":{"address":"a","id":"i","connectHeaders":%s}}' % value)


def test_null_header_map_is_empty():
    parsed = parse_message('{"response":{"requestId":"r","statusCode":200,"responseHeaders":null}}')
    assert parsed.response_headers == {}


@pytest.mark.parametrize("remote", ['"x"', "[]", '{"address":"a","port":"nope"}', '{"address":"a","port":1e999}',
                                    '{"address":"a","port":[1]}'])
def test_malformed_remote_endpoint_is_ignored(remote):
    parsed = parse_message('{"accept":{"address":"a","id":"i","remoteEndpoint":%s}}' % remote)
    assert isinstance(parsed, Accept) and parsed.remote_endpoint is None


def test_remote_endpoint_port_as_string():
    parsed = parse_message('{"accept":{"address":"a","id":"i","remoteEndpoint":{"address":"h","port":"80"}}}')
    assert parsed.remote_endpoint == RemoteEndpoint("h", 80)


# ---- malformed messages -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "[]", '"accept"', "5", "null", "true", "[{}]",      # not an object
    "{}",                                              # no key
    '{"accept":{},"request":{}}',                      # two keys
    '{"response":{"requestId":"r","statusCode":200},"x":1}',
])
def test_not_one_key_object_is_a_protocol_error(text):
    with pytest.raises(ProtocolError, match="exactly one key"):
        parse_message(text)


@pytest.mark.parametrize("text", [
    "", "not json", "{", '{"accept":', "{'a':1}", b"\xff\xfe\x00", b"{\"x\xff\":1}",
    pytest.param("[" * 10_000, id="nested-10000"),
    pytest.param("[" * 60_000, id="nested-60000"),       # deeper than the JSON decoder recurses
    pytest.param('{"a":' * 10_000 + "1" + "}" * 10_000, id="nested-objects"),
])
def test_not_json_is_a_protocol_error(text):
    with pytest.raises(ProtocolError, match="not JSON") as info:
        parse_message(text)
    assert info.value.http_status == 400 and info.value.close_code == 1008


@pytest.mark.parametrize("key", ["accept", "request", "response", "renewToken"])
@pytest.mark.parametrize("value", ["5", '"x"', "[]", "null"])
def test_known_key_with_non_object_value_is_a_protocol_error(key, value):
    with pytest.raises(ProtocolError, match="must be an object"):
        parse_message('{"%s":%s}' % (key, value))


@pytest.mark.parametrize("text, key", [
    ('{"injectFault":{"delay":"00:00:01"}}', "injectFault"),
    ('{"somethingNew":{}}', "somethingNew"),
    ('{"somethingNew":5}', "somethingNew"),
    ('{"Accept":{"address":"a","id":"i"}}', "Accept"),   # keys are case-sensitive
    ('{"":null}', ""),
])
def test_unknown_key_is_unknown(text, key):
    assert parse_message(text) == Unknown(key)


def test_oversize_message_is_payload_too_large():
    big = json.dumps({"renewToken": {"token": "x" * MAX_CONTROL_MESSAGE}})
    for text in (big, big.encode("utf-8")):
        with pytest.raises(PayloadTooLarge) as info:
            parse_message(text)
        assert info.value.http_status == 413 and info.value.close_code == 1009
    # Oversize is checked before JSON: even garbage is reported as too large.
    with pytest.raises(PayloadTooLarge):
        parse_message(b"\xff" * (MAX_CONTROL_MESSAGE + 1))


def test_exactly_at_the_limit_is_accepted():
    head = '{"renewToken":{"token":"'
    tail = '"}}'
    text = head + "t" * (MAX_CONTROL_MESSAGE - len(head) - len(tail)) + tail
    assert len(text.encode()) == MAX_CONTROL_MESSAGE
    assert isinstance(parse_message(text), RenewToken)
    assert isinstance(parse_message(text.encode()), RenewToken)
    with pytest.raises(PayloadTooLarge):
        parse_message(text + " ")  # one byte over, still valid JSON


def test_size_limit_is_in_utf8_bytes_for_text_too():
    # 30,000 three-byte characters: fewer than 64 Ki characters, but 90,000 bytes on the wire.
    text = json.dumps({"renewToken": {"token": "€" * 30_000}}, ensure_ascii=False)
    assert len(text) < MAX_CONTROL_MESSAGE < len(text.encode("utf-8"))
    with pytest.raises(PayloadTooLarge):
        parse_message(text)
    with pytest.raises(PayloadTooLarge):
        parse_message(text.encode("utf-8"))
    small = json.dumps({"renewToken": {"token": "€" * 10_000}}, ensure_ascii=False)
    assert parse_message(small) == RenewToken("€" * 10_000)


# ---- header rules -------------------------------------------------------------------------------------------------------

def test_hop_by_hop_set():
    for name in ("connection", "content-length", "host", "keep-alive", "proxy-connection", "te", "trailer",
                 "transfer-encoding", "upgrade", "close"):
        assert name in HOP_BY_HOP
    assert "via" not in HOP_BY_HOP and "authorization" not in HOP_BY_HOP


def test_join_headers_folds_repeats_with_comma_space_and_keeps_first_spelling():
    joined = join_headers([("X-A", "1"), ("x-a", "2"), ("Accept", "text/html"), ("X-A", "3")])
    assert joined == {"X-A": "1, 2, 3", "Accept": "text/html"}
    assert list(joined) == ["X-A", "Accept"]
    assert join_headers([]) == {}


def test_request_headers_for_listener_drops_hop_by_hop_and_relay_token():
    items = [
        ("Host", "gw:8443"), ("Connection", "keep-alive"), ("Content-Length", "5"), ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Trailer", "X"), ("Keep-Alive", "5"),
        ("Proxy-Connection", "x"), ("Close", "x"), ("SERVICEBUSAUTHORIZATION", "SharedAccessSignature s"),
        ("Content-Type", "text/plain"), ("X-Custom", "v1"), ("x-custom", "v2"), ("Authorization", "Bearer t"),
    ]
    out = request_headers_for_listener(items, strip_authorization=False, via="1.1 gw")
    assert out == {"Content-Type": "text/plain", "X-Custom": "v1, v2", "Authorization": "Bearer t", "Via": "1.1 gw"}


def test_request_headers_for_listener_strips_authorization_only_when_consumed():
    items = [("authorization", "SharedAccessSignature x"), ("A", "b")]
    assert request_headers_for_listener(items, strip_authorization=True, via="1.1 gw") == {"A": "b", "Via": "1.1 gw"}
    kept = request_headers_for_listener(items, strip_authorization=False, via="1.1 gw")
    assert kept["authorization"] == "SharedAccessSignature x"


def test_via_is_appended_to_an_existing_via():
    out = request_headers_for_listener([("Via", "1.0 fred"), ("via", "1.1 p.example")], strip_authorization=False,
                                       via="1.1 gw")
    assert out == {"Via": "1.0 fred, 1.1 p.example, 1.1 gw"}
    out = request_headers_for_listener([("VIA", "1.0 fred")], strip_authorization=False, via="1.1 gw")
    assert out == {"VIA": "1.0 fred, 1.1 gw"}


def test_response_headers_for_sender():
    headers = {"Content-Type": "text/plain", "Content-Length": "999", "Transfer-Encoding": "chunked",
               "Connection": "close", "X-Ok": "fine\tvalue", "via": "1.0 listener"}
    out = response_headers_for_sender(headers, via="1.1 gw")
    assert out == [("Content-Type", "text/plain"), ("X-Ok", "fine\tvalue"), ("via", "1.0 listener, 1.1 gw")]


def test_response_headers_without_via_get_one():
    assert response_headers_for_sender({}, via="1.1 gw") == [("Via", "1.1 gw")]


@pytest.mark.parametrize("name, value", [
    ("X-Evil", "a\r\nSet-Cookie: x=1"),
    ("X-Evil", "a\nb"),
    ("X-Evil", "a\rb"),
    ("X-Evil", "a\x00b"),
    ("X-Evil", "a\x01b"),
    ("X-Evil", "a\x7fb"),
    ("X-Evil\r\nSet-Cookie", "x"),
    ("X Evil", "x"),
    ("X:Evil", "x"),
    ("", "x"),
    ("Ünïcode", "x"),
    ("X(Evil)", "x"),
    ('X"Q', "x"),
    ("X\tTab", "x"),
])
def test_response_headers_with_injection_are_dropped(name, value):
    out = response_headers_for_sender({name: value, "X-Good": "1"}, via="1.1 gw")
    assert out == [("X-Good", "1"), ("Via", "1.1 gw")]


def test_response_header_names_may_use_every_token_character():
    name = "X-!#$%&'*+-.^_`|~09azAZ"
    assert response_headers_for_sender({name: "é obs-text ok"}, via="v") == [(name, "é obs-text ok"), ("Via", "v")]


# ---- error classes ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, status, close, base", [
    (errors.ProtocolError, 400, 1008, None),
    (errors.AuthenticationError, 401, 1008, None),
    (errors.AuthorizationError, 403, 1008, None),
    (errors.EndpointNotFound, 404, 1001, None),
    (errors.QuotaExceeded, 403, 1008, None),
    (errors.BadRequest, 400, 1008, ValueError),
    (errors.PayloadTooLarge, 413, 1009, None),
    (errors.ListenerUnavailable, 502, 1011, None),
    (errors.RelayTimeout, 504, 1011, TimeoutError),
    (errors.RendezvousExpired, 403, 1008, None),
    (errors.ConfigError, 500, 1011, ValueError),
    (errors.ConnectionClosed, 502, 1001, ConnectionError),
])
def test_error_classes_map_to_the_wire(cls, status, close, base):
    exc = cls("boom")
    assert isinstance(exc, RelayError)
    assert exc.http_status == status and exc.close_code == close
    assert str(exc) == "boom"
    assert exc.code and exc.code != RelayError.code
    if base is not None:
        assert isinstance(exc, base)
    assert cls.__name__ in errors.__all__


def test_error_http_status_override_is_per_instance():
    exc = errors.QuotaExceeded("slow down", http_status=429)
    assert exc.http_status == 429
    assert errors.QuotaExceeded("x").http_status == 403


def test_error_default_message_is_the_docstring():
    assert str(errors.EndpointNotFound()) == "No such hybrid connection."


def test_error_reason_is_one_safe_line():
    exc = errors.BadRequest("line1\r\nline2\n" + "x" * 500)
    assert "\r" not in exc.reason and "\n" not in exc.reason
    assert exc.reason.startswith("line1  line2 ")
    assert len(exc.reason) == 200


def test_headers_named_by_connection_are_hop_by_hop_too():
    from hybrid.protocol.messages import request_headers_for_listener

    out = request_headers_for_listener(
        [("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("X-Keep", "2")], strip_authorization=False, via="1.1 gw")
    assert "X-Hop" not in out and out["X-Keep"] == "2"


@pytest.mark.parametrize("raw,text", [
    ("plain", "plain"),
    ("caf\u00e9 \u2713", "caf\u00e9 \u2713"),  # valid UTF-8 stays as it is
    ("caf\udce9", "caf\u00e9"),  # the byte 0xE9 alone (aiohttp's surrogate escape): ISO-8859-1
    ("\u00e9\udcff", "\u00c3\u00a9\u00ff"),  # not UTF-8 as a whole: every byte read as ISO-8859-1
    ("x\ud800", "x?"),  # a surrogate that stands for no byte
])
def test_wire_text_reads_values_that_were_not_utf8_as_latin1(raw, text):
    assert wire_text(raw) == text
    text.encode("utf-8")  # always sendable


def test_join_headers_makes_every_value_sendable_as_utf8():
    joined = join_headers([("X-Name", "caf\udce9"), ("X-Name", "cr\udce8me"), ("Accept", "*/*")])
    assert joined == {"X-Name": "caf\u00e9, cr\u00e8me", "Accept": "*/*"}



def test_encode_and_encode_bytes_are_the_same_compact_utf8_json():
    request = Request(address="wss://gw/$hc/e?sb-hc-action=request&sb-hc-id=1", id="1", method="GET",
                      request_target="/e/caf%C3%A9", request_headers={"X-Name": "café ✓"}, body=False)
    text = encode(request)
    assert encode_bytes(request) == text.encode("utf-8")
    assert '"X-Name":"café ✓"' in text and ": " not in text  # not ASCII-escaped, no spaces
    assert json.loads(text) == request.to_json()
    # a value kept as surrogate escapes (bytes that were not UTF-8) is sent as ISO-8859-1, not refused
    odd = Request(address=request.address, id="2", method="GET", request_target="/e",
                  request_headers={"X-Name": "caf\udce9"}, body=False)
    assert json.loads(encode_bytes(odd))["request"]["requestHeaders"] == {"X-Name": "café"}


@pytest.mark.parametrize("text", [
    '{"renewToken":{"token":"a\\ud800b"}}',  # a lone surrogate escape: JSON.stringify writes these
    '{"renewToken":{"token":"t","n":123456789012345678901234567890}}',
])
def test_messages_the_json_module_reads_are_still_accepted(text):
    for raw in (text, text.encode()):
        assert isinstance(parse_message(raw), RenewToken)
