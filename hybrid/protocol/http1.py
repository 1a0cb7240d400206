"""HTTP/1.1 for the gateway's front end: a strict parser for simple request heads, and response heads. Sans-I/O.

The parser accepts only requests it can relay without any doubt about their meaning: origin-form target,
HTTP/1.1, ASCII, no folded or malformed lines, one Host, at most one plain ``Content-Length``, and no
``Transfer-Encoding``, ``Expect`` or ``Upgrade``. For anything else it returns ``None`` and the gateway gives the
connection to aiohttp's complete HTTP implementation, which relays or refuses it. Being this strict is what
keeps the two parsers from ever disagreeing about where a request ends (request smuggling).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Iterable

from multidict import CIMultiDict

__all__ = ["RequestHead", "parse_request_head", "encode_response_head", "MAX_HEAD", "MAX_HEADERS", "http_date"]

#: Longest head the front end parses; a longer one goes to aiohttp, whose own limits refuse it clearly.
MAX_HEAD = 32 * 1024
#: Most header lines the front end parses (aiohttp's limits apply beyond it).
MAX_HEADERS = 100

_METHOD = re.compile(r"[A-Z]{1,20}")
_TARGET = re.compile(r"/[\x21-\x7e]*")
# name ":" OWS value OWS, where the value has no control characters but HTAB (RFC 9110 §5.5).
_FIELD = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[\x20-\x7e\t]*[\x21-\x7e])?)[ \t]*")
_DIGITS = re.compile(r"[0-9]{1,12}")


@dataclass(slots=True)
class RequestHead:
    method: str
    #: the target as sent (origin form), its raw path and raw query (no '?'; empty when absent)
    target: str
    path: str
    query: str
    headers: CIMultiDict[str]
    host: str
    content_length: int
    keep_alive: bool
    size: int


def parse_request_head(head: bytes) -> RequestHead | None:
    """``head`` is everything up to and including the blank line. ``None``: not a simple request (see above)."""
    if not head.isascii() or len(head) > MAX_HEAD or not head.endswith(b"\r\n\r\n"):
        return None
    text = head.decode("ascii")
    body = text[:-4]
    lines = body.split("\r\n")
    # Every CR and LF must belong to a CRLF: a bare one is a line ending two parsers might read differently.
    if len(lines) > MAX_HEADERS + 1 or body.count("\r") + body.count("\n") != 2 * (len(lines) - 1):
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        return None
    method, target = parts[0], parts[1]
    if not _METHOD.fullmatch(method) or method == "CONNECT" or not _TARGET.fullmatch(target) or "#" in target:
        return None
    path, _, query = target.partition("?")
    if "//" in path or "/." in path:
        return None  # dot segments and empty segments: aiohttp's URL handling may normalise them
    headers: CIMultiDict[str] = CIMultiDict()
    host: str | None = None
    length: str | None = None
    keep_alive = True
    for line in lines[1:]:
        m = _FIELD.fullmatch(line)
        if m is None:
            return None  # obs-fold, a space before the colon, a control character, no colon
        name, value = m.group(1), m.group(2)
        lname = name.lower()
        if lname == "host":
            if host is not None:
                return None
            host = value
        elif lname == "content-length":
            if length is not None or not _DIGITS.fullmatch(value):
                return None
            length = value
        elif lname in ("transfer-encoding", "expect", "upgrade"):
            return None
        elif lname == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "upgrade" in tokens:
                return None
            if "close" in tokens:
                keep_alive = False
        headers.add(name, value)
    if not host:
        return None
    return RequestHead(method=method, target=target, path=path, query=query, headers=headers, host=host,
                       content_length=int(length) if length is not None else 0, keep_alive=keep_alive,
                       size=len(head))


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently", 302: "Found",
            304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

_date_cache: tuple[int, str] = (-1, "")


def http_date(now: float | None = None) -> str:
    """The ``Date`` header value, formatted once a second."""
    global _date_cache
    second = int(time.time() if now is None else now)
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, usegmt=True))
    return _date_cache[1]


def encode_response_head(status: int, reason: str | None, headers: Iterable[tuple[str, str]]) -> bytes:
    """Status line and header lines, ending with the blank line. Names and values must already be safe (no CR,
    LF or NUL: :func:`hybrid.protocol.messages.response_headers_for_sender` filters the listener's)."""
    lines = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "replace")
