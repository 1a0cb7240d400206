"""The front end's strict HTTP/1.1 head parser: simple requests parse, anything doubtful is declined (None)."""

from __future__ import annotations

import pytest

from hybrid.protocol import http1


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_simple_get_parses_with_raw_path_and_query():
    h = http1.parse_request_head(head("GET /hc/a%20b?x=1&sb-hc-token=t HTTP/1.1", "Host: gw:9", "X-A:  v  "))
    assert h is not None
    assert (h.method, h.target, h.path, h.query) == ("GET", "/hc/a%20b?x=1&sb-hc-token=t", "/hc/a%20b",
                                                     "x=1&sb-hc-token=t")
    assert h.host == "gw:9" and h.content_length == 0 and h.keep_alive
    assert h.headers["x-a"] == "v"  # optional whitespace trimmed, names case-insensitive
    assert h.size == len(head("GET /hc/a%20b?x=1&sb-hc-token=t HTTP/1.1", "Host: gw:9", "X-A:  v  "))


def test_post_with_length_and_repeated_headers():
    h = http1.parse_request_head(head("POST /hc HTTP/1.1", "Host: h", "Content-Length: 12", "X-M: 1", "X-M: 2",
                                      "Connection: keep-alive, close"))
    assert h is not None
    assert h.content_length == 12 and h.headers.getall("X-M") == ["1", "2"] and not h.keep_alive


def test_empty_header_value_is_allowed():
    h = http1.parse_request_head(head("GET / HTTP/1.1", "Host: h", "X-Empty:"))
    assert h is not None and h.headers["X-Empty"] == ""


@pytest.mark.parametrize("raw", [
    head("GET /x HTTP/1.0", "Host: h"),  # HTTP/1.0: keep-alive rules differ
    head("GET http://h/x HTTP/1.1", "Host: h"),  # absolute form
    head("CONNECT h:443 HTTP/1.1", "Host: h"),
    head("get /x HTTP/1.1", "Host: h"),  # methods are upper-case tokens
    head("GET  /x HTTP/1.1", "Host: h"),  # two spaces
    head("GET /x HTTP/1.1"),  # no Host
    head("GET /x HTTP/1.1", "Host: a", "Host: b"),
    head("GET /x HTTP/1.1", "Host: h", "Content-Length: 1", "Content-Length: 1"),
    head("GET /x HTTP/1.1", "Host: h", "Content-Length: +1"),
    head("GET /x HTTP/1.1", "Host: h", "Content-Length: 1,1"),
    head("POST /x HTTP/1.1", "Host: h", "Transfer-Encoding: chunked"),
    head("POST /x HTTP/1.1", "Host: h", "Content-Length: 5", "Transfer-Encoding: chunked"),
    head("POST /x HTTP/1.1", "Host: h", "Expect: 100-continue"),
    head("GET /x HTTP/1.1", "Host: h", "Upgrade: websocket"),
    head("GET /x HTTP/1.1", "Host: h", "Connection: Upgrade"),
    head("GET /x HTTP/1.1", "Host: h", "X-Fold: a", " continued"),  # obs-fold
    head("GET /x HTTP/1.1", "Host: h", "X-Sp : a"),  # space before the colon
    head("GET /x HTTP/1.1", "Host: h", "NoColon"),
    head("GET /x HTTP/1.1", "Host: h", "X-Ctl: a\x01b"),
    head("GET /x HTTP/1.1", "Host: h", "X-Bare: a\rb"),  # bare CR
    b"GET /x HTTP/1.1\r\nHost: h\nX-LF: 1\r\n\r\n",  # bare LF as a line ending
    head("GET /x HTTP/1.1", "Host: h", "X-Utf: \u00e9"),  # not ASCII
    head("GET /a/../b HTTP/1.1", "Host: h"),  # dot segments
    head("GET /a//b HTTP/1.1", "Host: h"),
    head("GET /x#frag HTTP/1.1", "Host: h"),
    head("GET /x HTTP/1.1", "Host: h", *[f"X-{i}: v" for i in range(http1.MAX_HEADERS + 1)]),
    b"GET /x HTTP/1.1\r\nHost: h\r\n",  # not a complete head
])
def test_doubtful_heads_are_declined(raw):
    assert http1.parse_request_head(raw) is None


def test_a_failing_head_never_backtracks_exponentially():
    """Each line parses one way only: 100 lines with spaces in their values, then a bad one, fail at once (with an
    ambiguous value pattern this took 2^100 steps)."""
    lines = [f"X-{i}: a b " for i in range(99)]
    assert http1.parse_request_head(head("GET /x HTTP/1.1", "Host: h", *lines, "Bad Line")) is None
    assert http1.parse_request_head(head("GET /x HTTP/1.1", "Host: h", *lines, "X-Last: \x01")) is None


def test_oversized_head_is_declined():
    assert http1.parse_request_head(head("GET /x HTTP/1.1", "Host: h", "X-Big: " + "a" * http1.MAX_HEAD)) is None


def test_response_head_has_status_reason_and_headers():
    raw = http1.encode_response_head(200, None, [("Content-Length", "3"), ("Via", "1.1 gw")])
    assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nVia: 1.1 gw\r\n\r\n"
    assert http1.encode_response_head(599, "Custom", []).startswith(b"HTTP/1.1 599 Custom\r\n")
    assert http1.encode_response_head(299, None, []).startswith(b"HTTP/1.1 299 Unknown\r\n")


def test_http_date_is_the_rfc_format_and_cached_per_second():
    assert http1.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http1.http_date(0.9) == http1.http_date(0)
    assert http1.http_date(86400) == "Fri, 02 Jan 1970 00:00:00 GMT"
