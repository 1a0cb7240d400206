"""Control messages of the Hybrid Connections protocol (spec §2). Pure: JSON in, typed objects out, and back.

Each message is one JSON object with one top-level key (``accept``, ``request``, ``response``, ``renewToken``).
Unknown keys are ignored by receivers (§2.1). Header maps are ``{str: str}``: repeated headers are joined with
``", "``, never sent as arrays (.NET's serializer refuses arrays).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import PayloadTooLarge, ProtocolError

__all__ = [
    "HOP_BY_HOP",
    "INLINE_BODY_LIMIT",
    "MAX_CONTROL_MESSAGE",
    "Accept",
    "RemoteEndpoint",
    "RenewToken",
    "Request",
    "Response",
    "Unknown",
    "encode",
    "encode_bytes",
    "join_headers",
    "json_bytes",
    "parse_message",
    "request_headers_for_listener",
    "response_headers_for_sender",
    "wire_text",
]

#: .NET reads control messages into a 64 KiB buffer; the doc caps header metadata at 32 kB (§2.1).
MAX_CONTROL_MESSAGE = 64 * 1024
#: Requests and responses up to this size (headers plus body) travel on the control channel (§2.7).
INLINE_BODY_LIMIT = 64 * 1024

#: RFC 7230 connection-level headers, never relayed either way (§2.3); "Close" appears in the doc's list.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Content-Length",
        "Host",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Close",
    )
)
_RELAY_AUTH = frozenset({"servicebusauthorization"})
#: RFC 7230 ``token``: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(slots=True)
class RemoteEndpoint:
    address: str
    port: int

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port}


@dataclass(slots=True)
class Accept:
    """Gateway → listener: a sender is waiting; open a WebSocket to ``address`` (§2.2)."""

    address: str
    id: str
    connect_headers: Mapping[str, str]
    remote_endpoint: RemoteEndpoint | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"address": self.address, "id": self.id, "connectHeaders": dict(self.connect_headers)}
        if self.remote_endpoint:
            body["remoteEndpoint"] = self.remote_endpoint.to_json()
        return {"accept": body}


@dataclass(slots=True)
class Request:
    """Gateway → listener HTTP request (§2.3). Without ``method`` it is the rendezvous-only shape (b)."""

    address: str
    id: str
    method: str | None = None
    request_target: str | None = None
    request_headers: Mapping[str, str] = field(default_factory=dict)
    body: bool | None = None
    remote_endpoint: RemoteEndpoint | None = None

    @property
    def inline(self) -> bool:
        return self.method is not None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"address": self.address, "id": self.id}
        if self.method is not None:
            # Both fields are required on the full shape: hyco-https keys on method, .NET on body (§2.3).
            body["requestTarget"] = self.request_target or "/"
            body["method"] = self.method
            body["requestHeaders"] = dict(self.request_headers)
            body["body"] = bool(self.body)
            if self.remote_endpoint:
                body["remoteEndpoint"] = self.remote_endpoint.to_json()
        return {"request": body}


@dataclass(slots=True)
class Response:
    """Listener → gateway HTTP response (§2.4)."""

    request_id: str
    status_code: int
    status_description: str | None = None
    response_headers: Mapping[str, str] = field(default_factory=dict)
    body: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requestId": self.request_id,
            "statusCode": self.status_code,
            "responseHeaders": dict(self.response_headers),
            "body": self.body,
        }
        if self.status_description is not None:
            out["statusDescription"] = self.status_description
        return {"response": out}


@dataclass(slots=True)
class RenewToken:
    """Listener → gateway: a fresh token for the control channel (§2.5). The token is raw, not URL-encoded."""

    token: str

    def to_json(self) -> dict[str, Any]:
        return {"renewToken": {"token": self.token}}


@dataclass(slots=True)
class Unknown:
    """A well-formed message with a key nobody here knows; receivers ignore it (§2.1)."""

    key: str


Message = Accept | Request | Response | RenewToken | Unknown


def encode(message: Accept | Request | Response | RenewToken) -> str:
    """Compact JSON text for one control message."""
    return json_bytes(message.to_json()).decode("utf-8")


def encode_bytes(message: Accept | Request | Response | RenewToken) -> bytes:
    """The same as :func:`encode`, as the UTF-8 a text frame carries."""
    return json_bytes(message.to_json())


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON (orjson: measured cheaper than the json module on the gateway's per-request path).
    Text that cannot be UTF-8 (surrogate escapes of bytes that were not) is made sendable by :func:`wire_text`."""
    try:
        # OPT_NON_STR_KEYS admits multidict's istr keys, which are str subclasses.
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return orjson.dumps(_sendable(obj), option=orjson.OPT_NON_STR_KEYS)


def _sendable(value: Any) -> Any:
    if isinstance(value, str):
        return wire_text(value)
    if isinstance(value, dict):
        return {wire_text(k): _sendable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sendable(v) for v in value]
    return value


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be an object")
    out: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, list):  # tolerate arrays from lenient listeners; join them as HTTP would
            v = ", ".join(str(x) for x in v)
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ProtocolError(f"{what}: header '{str(k)[:40]}' is not a string")
        out[str(k)] = str(v)
    return out


def _remote(value: Any) -> RemoteEndpoint | None:
    if not isinstance(value, dict):
        return None
    try:
        return RemoteEndpoint(str(value.get("address", "")), int(value.get("port", 0)))
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON 1e999 parses as float infinity
        return None


def _required_str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{what}: '{key}' must be a non-empty string")
    return value


def parse_message(text: str | bytes) -> Message:
    """Parse one control message. Raises ProtocolError (malformed) or PayloadTooLarge (oversize)."""
    # The limit is in bytes (.NET's receive buffer); a str is measured as the UTF-8 it travels as.
    if len(text) > MAX_CONTROL_MESSAGE or (
        isinstance(text, str) and len(text) * 4 > MAX_CONTROL_MESSAGE
        and len(text.encode("utf-8", "surrogatepass")) > MAX_CONTROL_MESSAGE
    ):
        raise PayloadTooLarge(f"control message larger than {MAX_CONTROL_MESSAGE} bytes")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        # What orjson refuses but the json module reads (lone surrogate escapes, NaN, big numbers) is still
        # accepted from listeners and senders, as before; what neither reads is malformed.
        try:
            data = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: "[[[[…" too deep
            raise ProtocolError(f"control message is not JSON: {exc.__class__.__name__}") from None
    if not isinstance(data, dict) or len(data) != 1:
        raise ProtocolError("control message must be an object with exactly one key")
    (key, body), = data.items()
    if key not in ("accept", "request", "response", "renewToken"):
        return Unknown(str(key))  # ignored whatever its value (§2.1)
    if not isinstance(body, dict):
        raise ProtocolError(f"'{str(key)[:40]}' must be an object")
    if key == "response":
        request_id = body.get("requestId")
        if not isinstance(request_id, str) or not request_id:
            raise ProtocolError("response: 'requestId' must be a non-empty string")
        raw_status = body.get("statusCode")
        try:
            # The doc's example writes the status as a string; .NET sends an int (§2.4).
            status = int(raw_status) if isinstance(raw_status, (int, str, float)) and not isinstance(
                raw_status, bool) else -1
        except (TypeError, ValueError, OverflowError):
            status = -1
        if not 100 <= status <= 599:
            raise ProtocolError("response: 'statusCode' must be an HTTP status")
        desc = body.get("statusDescription")
        return Response(
            request_id=request_id,
            status_code=status,
            status_description=desc if isinstance(desc, str) else None,
            response_headers=_str_map(body.get("responseHeaders"), "response"),
            body=body.get("body") is True,
        )
    if key == "renewToken":
        return RenewToken(_required_str(body, "token", "renewToken"))
    if key == "accept":
        return Accept(
            address=_required_str(body, "address", "accept"),
            id=_required_str(body, "id", "accept"),
            connect_headers=_str_map(body.get("connectHeaders"), "accept"),
            remote_endpoint=_remote(body.get("remoteEndpoint")),
        )
    if key == "request":
        address = _required_str(body, "address", "request")
        rid = _required_str(body, "id", "request")
        method = body.get("method")
        if method is None:
            return Request(address=address, id=rid)
        if not isinstance(method, str) or not method:
            raise ProtocolError("request: 'method' must be a string")
        return Request(
            address=address,
            id=rid,
            method=method,
            request_target=str(body.get("requestTarget") or "/"),
            request_headers=_str_map(body.get("requestHeaders"), "request"),
            body=body.get("body") is True,
            remote_endpoint=_remote(body.get("remoteEndpoint")),
        )
    return Unknown(str(key))


def wire_text(value: str) -> str:
    """A header value as text that can travel as UTF-8. A value whose bytes were not UTF-8 (obs-text), which
    aiohttp keeps as surrogate escapes, is read as ISO-8859-1, HTTP's historical reading (RFC 9110 §5.5)."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return value.encode("utf-8", "replace").decode("utf-8")


def join_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Fold repeated headers into one ``", "``-joined value, keeping the first spelling of each name; values
    that were not UTF-8 are read as ISO-8859-1 (:func:`wire_text`)."""
    out: dict[str, str] = {}
    index: dict[str, str] = {}
    for name, value in items:
        if not value.isascii():
            value = wire_text(value)
        lname = name.lower()
        if lname in index:
            key = index[lname]
            out[key] = out[key] + ", " + value
        else:
            index[lname] = name
            out[name] = value
    return out


def request_headers_for_listener(
    items: Iterable[tuple[str, str]], *, strip_authorization: bool, via: str
) -> dict[str, str]:
    """Sender headers as the listener sees them: no hop-by-hop (including those the sender's ``Connection``
    header names, RFC 7230 §6.1), no relay token, ``Via`` added (§2.3, §1.4)."""
    items = list(items)
    named = {t.strip().lower() for n, v in items if n.lower() == "connection" for t in v.split(",")}
    kept = []
    for name, value in items:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in _RELAY_AUTH or lname in named:
            continue
        if strip_authorization and lname == "authorization":
            continue
        kept.append((name, value))
    headers = join_headers(kept)
    _append_via(headers, via)
    return headers


def response_headers_for_sender(headers: Mapping[str, str], *, via: str) -> list[tuple[str, str]]:
    """Listener response headers as the sender gets them: length and framing recomputed, ``Via`` added (§2.4)."""
    out = [(k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP and _safe_header(k, v)]
    merged = dict(out)
    _append_via(merged, via)
    return [(k, v) for k, v in merged.items()]


def _append_via(headers: dict[str, str], via: str) -> None:
    for k, v in headers.items():
        if k.lower() == "via":
            headers[k] = v + ", " + via
            return
    headers["Via"] = via


def _safe_header(name: str, value: str) -> bool:
    """Refuse header names or values that would split a response (CR/LF/NUL) or are not tokens."""
    if not _TOKEN.fullmatch(name):
        return False
    # RFC 7230 field-value: no control characters except HTAB (CR, LF and NUL would split the response).
    return _UNSAFE_VALUE.search(value) is None
