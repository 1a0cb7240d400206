"""Server side of the WebSocket opening handshake (RFC 6455 §4.2)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from hybrid.errors import BadRequest
from hybrid.protocol.handshake import accept_key, check_upgrade, handshake_headers, offered_subprotocols

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3 sample nonce
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3 published answer
HYCO_WS_KEY = "MTMtMTc5NTY2OTM3MzA4MQ=="  # base64("13-1795669373081"), what hyco-ws sends (spec §5.4)


def good_headers(**over) -> dict[str, str]:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": RFC_KEY}
    headers.update(over)
    return {k: v for k, v in headers.items() if v is not None}


def independent_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()


def test_accept_key_rfc_vector():
    assert accept_key(RFC_KEY) == RFC_ACCEPT
    assert independent_accept(RFC_KEY) == RFC_ACCEPT


@pytest.mark.parametrize("key", [HYCO_WS_KEY, base64.b64encode(bytes(16)).decode(),
                                 base64.b64encode(b"\xff" * 16).decode()])
def test_accept_key_matches_independent_computation(key):
    assert accept_key(key) == independent_accept(key)


def test_check_upgrade_returns_key():
    assert check_upgrade("GET", good_headers()) == RFC_KEY
    assert check_upgrade("GET", good_headers(**{"Sec-WebSocket-Key": f"  {RFC_KEY} "})) == RFC_KEY


def test_hyco_ws_key_is_accepted():
    assert len(base64.b64decode(HYCO_WS_KEY)) == 16
    assert check_upgrade("GET", good_headers(**{"Sec-WebSocket-Key": HYCO_WS_KEY})) == HYCO_WS_KEY


@pytest.mark.parametrize("over", [
    {"Upgrade": "WebSocket"},
    {"Upgrade": " websocket "},
    {"Connection": "keep-alive, Upgrade"},
    {"Connection": "upgrade"},
    {"Connection": "Upgrade,keep-alive"},
    {"Sec-WebSocket-Version": " 13 "},
])
def test_check_upgrade_tolerates_ordinary_variations(over):
    assert check_upgrade("GET", good_headers(**over)) == RFC_KEY


@pytest.mark.parametrize("method, over, what", [
    ("POST", {}, "GET"),
    ("get", {}, "GET"),
    ("GET", {"Upgrade": None}, "Upgrade"),
    ("GET", {"Upgrade": "h2c"}, "Upgrade"),
    ("GET", {"Upgrade": "websocket2"}, "Upgrade"),
    ("GET", {"Connection": None}, "Connection"),
    ("GET", {"Connection": "keep-alive"}, "Connection"),
    ("GET", {"Connection": "upgrades"}, "Connection"),
    ("GET", {"Sec-WebSocket-Version": None}, "Version"),
    ("GET", {"Sec-WebSocket-Version": "8"}, "Version"),
    ("GET", {"Sec-WebSocket-Version": "13, 8"}, "Version"),
    ("GET", {"Sec-WebSocket-Key": None}, "Key"),
    ("GET", {"Sec-WebSocket-Key": ""}, "Key"),
    ("GET", {"Sec-WebSocket-Key": "not base64!"}, "Key"),
    ("GET", {"Sec-WebSocket-Key": base64.b64encode(bytes(15)).decode()}, "Key"),
    ("GET", {"Sec-WebSocket-Key": base64.b64encode(bytes(17)).decode()}, "Key"),
    ("GET", {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}, "Key"),  # padding missing
    ("GET", {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==é"}, "Key"),
])
def test_check_upgrade_refusals(method, over, what):
    with pytest.raises(BadRequest) as info:
        check_upgrade(method, good_headers(**over))
    assert what in str(info.value)
    assert info.value.http_status == 400


@pytest.mark.parametrize("value, expected", [
    ("chat, superchat", ["chat", "superchat"]),
    ("chat", ["chat"]),
    (" a ,, b ,", ["a", "b"]),
    ("", []),
])
def test_offered_subprotocols(value, expected):
    assert offered_subprotocols({"Sec-WebSocket-Protocol": value}) == expected


def test_no_subprotocol_header():
    assert offered_subprotocols({}) == []


def test_handshake_headers():
    headers = handshake_headers(RFC_KEY, None)
    assert headers == {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": RFC_ACCEPT}
    with_proto = handshake_headers(RFC_KEY, "chat")
    assert with_proto["Sec-WebSocket-Protocol"] == "chat"
    assert with_proto["Sec-WebSocket-Accept"] == RFC_ACCEPT
    # No extension is ever accepted (spec §2.6).
    assert not any(k.lower() == "sec-websocket-extensions" for k in with_proto)
    assert "Sec-WebSocket-Protocol" not in handshake_headers(RFC_KEY, "")
