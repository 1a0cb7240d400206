"""The listener link's messages (wcfrelay/link.py) against their published schema (schemas/wcf-link.schema.json)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import jsonschema
import pytest

from hybrid.errors import BadRequest, ProtocolError
from wcfrelay import link as lk

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "wcf-link.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

MESSAGES = [
    lk.Call("id-1", "POST", "/sub", "a=1", {"Content-Type": "text/xml"}, "http://gw/calc", one_way=False),
    lk.Call("id-2", "GET", "", "wsdl", {}, "https://gw/calc", one_way=True),
    lk.Reply("id-1", 200, {"Content-Type": "text/xml; charset=utf-8"}),
    lk.Reply("id-3", 500),
    lk.Ack("id-2"),
    lk.RenewToken("SharedAccessSignature sr=x&sig=y&se=1&skn=z"),
    lk.LinkError("refused", "id-9"),
    lk.LinkError("refused"),
]


def header_of(data: bytes) -> dict:
    (n,) = struct.unpack_from("!I", data)
    return json.loads(data[4 : 4 + n])


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_matches_the_schema_and_round_trips(message):
    data = lk.encode(message, b"<body/>")
    VALIDATOR.validate(header_of(data))
    decoded, body = lk.decode(data)
    assert decoded == message
    assert bytes(body) == b"<body/>"


@pytest.mark.parametrize("header", [
    {"type": "reply", "id": "x", "status": 99, "headers": {}},
    {"type": "reply", "id": "x", "status": True, "headers": {}},
    {"type": "reply", "id": "", "status": 200, "headers": {}},
    {"type": "reply", "id": "x", "status": 200, "headers": {"a": 1}},
    {"type": "ack"},
    {"type": "dance", "id": "x"},
    {"type": "renewToken", "token": ""},
    ["not", "an", "object"],
])
def test_invalid_headers_are_refused_by_decoder_and_schema(header):
    raw = json.dumps(header).encode()
    with pytest.raises(ProtocolError):
        lk.decode(struct.pack("!I", len(raw)) + raw)
    assert not VALIDATOR.is_valid(header)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", struct.pack("!I", 1000) + b"{}", struct.pack("!I", 2) + b"{x",
                                  struct.pack("!I", lk.MAX_HEADER + 1) + b"x" * 10,
                                  # nested deeper than the JSON decoder goes (it raises RecursionError)
                                  struct.pack("!I", 60_000) + b"[" * 30_000 + b"]" * 30_000])
def test_truncated_or_garbage_link_messages_are_protocol_errors(data):
    with pytest.raises(ProtocolError):
        lk.decode(data)


def test_registration_round_trip_and_defaults():
    reg = lk.Registration(lk.Binding.NET_EVENT, lk.ClientAuth.NONE, lk.Discovery.PUBLIC, "Events")
    assert lk.Registration.from_query(reg.to_query()) == reg
    assert reg.max_message == lk.ONEWAY_MAX_MESSAGE
    default = lk.Registration.from_query("binding=basicHttp")
    assert default.client_auth is lk.ClientAuth.RELAY_ACCESS_TOKEN and default.discovery is lk.Discovery.PRIVATE
    assert lk.Registration.from_query("binding=netOneway").max_message == lk.ONEWAY_MAX_MESSAGE


@pytest.mark.parametrize("query", ["", "binding=netTcp", "binding=basicHttp&binding=webHttp",
                                   "binding=basicHttp&color=red", "binding=basicHttp&clientAuth=maybe",
                                   "binding=netOneway&maxMessage=70000", "binding=basicHttp&maxMessage=big",
                                   "binding=basicHttp&displayName=%0Abad"])
def test_bad_registrations_are_400_with_a_reason(query):
    with pytest.raises(BadRequest) as info:
        lk.Registration.from_query(query)
    assert str(info.value)


def test_header_keys_from_a_multidict_and_text_that_is_not_utf8_are_encoded():
    from multidict import istr

    # aiohttp's header names are istr (a str subclass); a value's bytes that are not UTF-8 arrive as surrogate
    # escapes and leave as ISO-8859-1, HTTP's historical reading of obs-text.
    call = lk.Call("1", "POST", "", "", {istr("Content-Type"): "text/xml", "X-Name": "caf\udce9"}, "http://gw/calc")
    decoded, body = lk.decode(lk.encode(call, b"<b/>"))
    assert decoded.headers == {"Content-Type": "text/xml", "X-Name": "caf\u00e9"}
    assert bytes(body) == b"<b/>"
    lone = lk.Call("1", "POST", "", "", {"X": "\ud800"}, "http://gw/calc")
    assert lk.decode(lk.encode(lone))[0].headers == {"X": "?"}


@pytest.mark.parametrize("raw", [b'{"type":"ack","id":"\\ud800"}', b'{"type":"reply","id":"x","status":NaN}',
                                 b'{"type":"ack","id":"x"', b'{"type":"ack","id":"\xff"}'])
def test_the_decoder_is_strict_json(raw):
    with pytest.raises(ProtocolError, match="not JSON"):
        lk.decode(struct.pack("!I", len(raw)) + raw)

