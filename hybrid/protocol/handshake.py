"""The server side of the WebSocket opening handshake (RFC 6455 §4.2), pure."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

from ..errors import BadRequest

__all__ = ["accept_key", "check_upgrade", "handshake_headers", "offered_subprotocols"]

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + _GUID).encode("ascii")).digest()).decode("ascii")


def check_upgrade(method: str, headers: Mapping[str, str]) -> str:
    """Validate an upgrade request; returns the client's key. BadRequest (400) names what is wrong."""
    if method != "GET":
        raise BadRequest("a WebSocket upgrade must use GET")
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        raise BadRequest("expected 'Upgrade: websocket'")
    if "upgrade" not in [t.strip().lower() for t in headers.get("Connection", "").split(",")]:
        raise BadRequest("expected 'Connection: Upgrade'")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise BadRequest("unsupported Sec-WebSocket-Version (13 expected)")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise BadRequest("invalid Sec-WebSocket-Key") from None
    return key


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    value = headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in value.split(",") if p.strip()]


def handshake_headers(key: str, subprotocol: str | None) -> dict[str, str]:
    """Response headers for the 101. No extension is ever accepted (spec §2.6)."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept_key(key)}
    if subprotocol:
        headers["Sec-WebSocket-Protocol"] = subprotocol
    return headers
