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
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate

from multidict import CIMultiDict

__all__ = ["MAX_HEAD", "MAX_HEADERS", "RequestHead", "encode_response_head", "http_date", "parse_request_head"]

#: Longest head the front end parses; a longer one goes to aiohttp, whose own limits refuse it clearly.
MAX_HEAD = 32 * 1024
#: Most header lines the front end parses (aiohttp's limits apply beyond it).
MAX_HEADERS = 100

# The whole head in one match: request line, header lines of RFC 9110 field syntax (no obs-fold, no space before
# the colon, no control characters but HTAB in values), the blank line. The character classes exclude CR and LF, so
# a bare one cannot match anywhere. Every quantifier is possessive: nothing is ever retried, so any head, good or
# bad, costs one linear pass.
_HEAD = re.compile(
    r"([A-Z]{1,20}) (/[\x21-\x7e]*+) HTTP/1\.1\r\n"
    r"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]++:[\x20-\x7e\t]*+\r\n)*+)\r\n")
# Name and value (leading whitespace skipped) of each line of a head that _HEAD accepted.
_FIELD = re.compile(r"([^:]++):[ \t]*+([^\r]*+)\r\n")
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
    if len(head) > MAX_HEAD or not head.isascii():
        return None
    m = _HEAD.fullmatch(head.decode("ascii"))
    if m is None:
        return None
    method, target, fields = m.groups()
    if method == "CONNECT" or "#" in target or fields.count("\n") > MAX_HEADERS:
        return None
    path, _, query = target.partition("?")
    if "//" in path or "/." in path:
        return None  # dot segments and empty segments: aiohttp's URL handling may normalise them
    pairs = _FIELD.findall(fields)
    if " \r" in fields or "\t\r" in fields:  # trailing whitespace is not part of a value (rare)
        pairs = [(name, value.rstrip(" \t")) for name, value in pairs]
    headers: CIMultiDict[str] = CIMultiDict(pairs)
    hosts = headers.getall("Host", ())
    lengths = headers.getall("Content-Length", ())
    if len(hosts) != 1 or not hosts[0] or len(lengths) > 1 or (lengths and not _DIGITS.fullmatch(lengths[0])):
        return None
    if "Transfer-Encoding" in headers or "Expect" in headers or "Upgrade" in headers:
        return None
    keep_alive = True
    for value in headers.getall("Connection", ()):
        tokens = {t.strip().lower() for t in value.split(",")}
        if "upgrade" in tokens:
            return None
        if "close" in tokens:
            keep_alive = False
    return RequestHead(method=method, target=target, path=path, query=query, headers=headers, host=hosts[0],
                       content_length=int(lengths[0]) if lengths else 0, keep_alive=keep_alive, size=len(head))


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
