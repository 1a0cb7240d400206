"""The listener link of the WCF-style relay layer: how a service host and the gateway talk. Sans-I/O.

A service host opens one WebSocket per relay endpoint to ``/$wcf/{path}?binding=…`` with a Listen token (in the
``ServiceBusAuthorization`` header). Every link message is **one binary WebSocket message**::

    [4 bytes: header length N, big-endian][N bytes: UTF-8 JSON header][body bytes]

so a header and its body can never be separated by another message, and calls are multiplexed by ``id``: many
calls are in flight on one link and replies come back in any order. The JSON headers are described by
``schemas/wcf-link.schema.json``:

* gateway → host ``call``   a request for the service (SOAP envelope, WSDL GET, REST call); body = request body
* host → gateway ``reply``  the answer to a call; body = response body
* host → gateway ``ack``    a one-way or multicast message was received (the caller then gets 202); a host
  may instead answer a one-way call with a ``reply`` (a fault for a malformed message, or a GET such as ``?wsdl``),
  which the caller then gets as is; a multicast counts only acknowledgements as received
* host → gateway ``renewToken``  a fresh Listen token before the current one expires
* gateway → host ``error``  the gateway refuses something the host sent (for diagnostics; the link stays open)

Registration parameters travel in the link URL's query (see :class:`Registration`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from hybrid.errors import BadRequest, PayloadTooLarge, ProtocolError
from hybrid.protocol.messages import json_bytes

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "LINK_PREFIX",
    "MAX_HEADER",
    "ONEWAY_MAX_MESSAGE",
    "Ack",
    "Binding",
    "Call",
    "ClientAuth",
    "Discovery",
    "LinkError",
    "Registration",
    "RenewToken",
    "Reply",
    "decode",
    "encode",
]

LINK_PREFIX = "/$wcf/"
MAX_HEADER = 64 * 1024
#: NetOneway and NetEvent messages are limited to 64 KB, as in WCF Relay (spec wcf-relay §1.7).
ONEWAY_MAX_MESSAGE = 64 * 1024
#: Request/reply bindings: WCF Relay says "unlimited"; a bound keeps one call from taking the gateway's memory.
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
_LEN = struct.Struct("!I")


class Binding(str, enum.Enum):
    """The relay bindings a host can register, and what each means on the wire."""

    BASIC_HTTP = "basicHttp"  # SOAP 1.1 request/reply
    WS2007_HTTP = "ws2007Http"  # SOAP 1.2 + WS-Addressing 1.0, security None
    WEB_HTTP = "webHttp"  # plain HTTP operations
    NET_ONEWAY = "netOneway"  # one-way, one receiver
    NET_EVENT = "netEvent"  # one-way, every receiver on the address

    @property
    def one_way(self) -> bool:
        return self in (Binding.NET_ONEWAY, Binding.NET_EVENT)

    @property
    def soap_version(self) -> str | None:
        return {"basicHttp": "1.1", "ws2007Http": "1.2", "netOneway": "1.2", "netEvent": "1.2"}.get(self.value)


class ClientAuth(str, enum.Enum):
    """``RelayClientAuthenticationType``: callers need a Send token, or anyone may call."""

    RELAY_ACCESS_TOKEN = "relayAccessToken"
    NONE = "none"


class Discovery(str, enum.Enum):
    """``DiscoveryType``: private endpoints work but are not listed in the namespace feed (the default)."""

    PRIVATE = "private"
    PUBLIC = "public"


@dataclass(frozen=True)
class Registration:
    """What a host asks for when it opens a link: the query string of ``/$wcf/{path}``."""

    binding: Binding
    client_auth: ClientAuth = ClientAuth.RELAY_ACCESS_TOKEN
    discovery: Discovery = Discovery.PRIVATE
    display_name: str = ""
    #: the largest message the endpoint takes; by default 64 KB for one-way bindings, 16 MiB otherwise
    max_message: int = 0

    def __post_init__(self) -> None:
        if not self.max_message:
            object.__setattr__(self, "max_message",
                               ONEWAY_MAX_MESSAGE if self.binding.one_way else DEFAULT_MAX_MESSAGE)

    def to_query(self) -> str:
        params = {"binding": self.binding.value, "clientAuth": self.client_auth.value,
                  "discovery": self.discovery.value, "maxMessage": str(self.max_message)}
        if self.display_name:
            params["displayName"] = self.display_name
        return urlencode(params)

    @classmethod
    def from_query(cls, raw_query: str) -> Registration:
        values: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            if name in values:
                raise BadRequest(f"link parameter '{name[:40]}' given more than once")
            values[name] = value
        unknown = set(values) - {"binding", "clientAuth", "discovery", "displayName", "maxMessage"}
        if unknown:
            raise BadRequest(f"unknown link parameter '{min(unknown)[:40]}'")
        try:
            binding = Binding(values.get("binding", ""))
        except ValueError:
            raise BadRequest("binding must be one of " + ", ".join(b.value for b in Binding)) from None
        try:
            client_auth = ClientAuth(values.get("clientAuth", ClientAuth.RELAY_ACCESS_TOKEN.value))
            discovery = Discovery(values.get("discovery", Discovery.PRIVATE.value))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        display = values.get("displayName", "")
        if len(display) > 256 or any(ord(c) < 32 for c in display):
            raise BadRequest("displayName must be at most 256 printable characters")
        limit = ONEWAY_MAX_MESSAGE if binding.one_way else DEFAULT_MAX_MESSAGE
        try:
            max_message = int(values.get("maxMessage", str(limit)))
        except ValueError:
            raise BadRequest("maxMessage must be a number of bytes") from None
        if not 1 <= max_message <= limit:
            raise BadRequest(f"maxMessage must be between 1 and {limit} for {binding.value}")
        return cls(binding, client_auth, discovery, display, max_message)


@dataclass(frozen=True)
class Call:
    """Gateway → host: one request for the service."""

    id: str
    method: str
    path: str  # the part of the request path after the endpoint's own path, "" for the endpoint itself
    query: str  # raw query string, relay parameters removed
    headers: Mapping[str, str]
    public_url: str  # the endpoint's address as callers see it (for WSDL addresses)
    one_way: bool = False

    def header(self) -> dict[str, Any]:
        return {"type": "call", "id": self.id, "method": self.method, "path": self.path, "query": self.query,
                "headers": dict(self.headers), "publicUrl": self.public_url, "oneWay": self.one_way}


@dataclass(frozen=True)
class Reply:
    """Host → gateway: the answer to a call."""

    id: str
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        return {"type": "reply", "id": self.id, "status": self.status, "headers": dict(self.headers)}


@dataclass(frozen=True)
class Ack:
    """Host → gateway: a one-way message was received."""

    id: str

    def header(self) -> dict[str, Any]:
        return {"type": "ack", "id": self.id}


@dataclass(frozen=True)
class RenewToken:
    token: str

    def header(self) -> dict[str, Any]:
        return {"type": "renewToken", "token": self.token}


@dataclass(frozen=True)
class LinkError:
    """Gateway → host: something the host sent was refused."""

    message: str
    id: str | None = None

    def header(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "message": self.message}
        if self.id is not None:
            out["id"] = self.id
        return out


Message = Call | Reply | Ack | RenewToken | LinkError


def encode(message: Message, body: bytes = b"") -> bytes:
    """One link message: length-prefixed JSON header, then the body (text that cannot be UTF-8 is made sendable
    as :func:`hybrid.protocol.messages.json_bytes` says)."""
    head = json_bytes(message.header())
    if len(head) > MAX_HEADER:
        raise PayloadTooLarge("link header too large")
    return _LEN.pack(len(head)) + head + body


def _str(obj: Mapping[str, Any], key: str, *, required: bool = True, limit: int = 8192) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise ProtocolError(f"link message: '{key}' must be a string of at most {limit} characters")
    return value


def _headers(obj: Mapping[str, Any]) -> dict[str, str]:
    value = obj.get("headers", {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ProtocolError("link message: 'headers' must map strings to strings")
    return value


def decode(data: bytes | memoryview) -> tuple[Message, memoryview]:
    """Split one link message into its header object and a view of its body. Raises ProtocolError."""
    view = memoryview(data)
    if len(view) < 4:
        raise ProtocolError("link message shorter than its length prefix")
    (size,) = _LEN.unpack_from(view)
    if size > MAX_HEADER or size > len(view) - 4:
        raise ProtocolError("link message header length is out of range")
    try:
        # Strict: invalid UTF-8, lone surrogate escapes, NaN and nesting past 1,024 levels are all refused.
        head = orjson.loads(view[4 : 4 + size])
    except orjson.JSONDecodeError:
        raise ProtocolError("link message header is not JSON") from None
    if not isinstance(head, dict):
        raise ProtocolError("link message header must be an object")
    body = view[4 + size :]
    kind = head.get("type")
    message: Message
    if kind == "reply":
        status = head.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise ProtocolError("reply: 'status' must be an HTTP status")
        message = Reply(_str(head, "id", limit=128), status, _headers(head))
    elif kind == "ack":
        message = Ack(_str(head, "id", limit=128))
    elif kind == "renewToken":
        message = RenewToken(_str(head, "token", limit=4096))
    elif kind == "call":
        message = Call(_str(head, "id", limit=128), _str(head, "method", limit=32), _str(head, "path", required=False),
                       _str(head, "query", required=False), _headers(head), _str(head, "publicUrl"),
                       head.get("oneWay") is True)
    elif kind == "error":
        message = LinkError(_str(head, "message"), head.get("id") if isinstance(head.get("id"), str) else None)
    else:
        raise ProtocolError(f"unknown link message type {str(kind)[:40]!r}")
    return message, body
