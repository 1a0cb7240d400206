"""The gateway's front end: the first reader of every connection, relaying simple HTTP requests itself.

Most relayed HTTP traffic is small requests to a listener on this node. For those, aiohttp's request and response
objects and its handler task cost more than everything else the relay does, so this protocol parses the head
(:mod:`hybrid.protocol.http1`), sends the request on the listener's control channel and writes the listener's
response, all in callbacks: no task, no per-request objects beyond the pending request itself.

An extension (the WCF-style layer) can carry its simple calls here too: for a path it claims it returns a call
object (``front_call``), which the front end starts once the body is in and which answers through a callback.

Every other connection is handed over to aiohttp, with the bytes read so far, the moment something is not simple:
WebSocket upgrades, the ``/$`` addresses, paths an extension claims but does not carry, chunked or large bodies
(the rendezvous path), ``Expect``, HTTP/1.0, heads the strict parser declines, and every request in a cluster. A
connection that was handed over stays with aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ListenerUnavailable, RelayError, RelayTimeout
from ..protocol import http1, urls
from ..protocol import messages as msgs
from .relay import RESPONSE_TIMEOUT, SENDER_GONE, BodyPipe, PendingRequest

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["HttpFrontEnd"]

log = logging.getLogger("hybrid.gateway.front")

#: Bytes a client may send ahead (pipelining) while a response is pending, before reading pauses.
READ_AHEAD = 64 * 1024
#: An idle keep-alive connection is closed after this long (aiohttp's default too).
KEEPALIVE_TIMEOUT = 75.0
#: A request head (and its small body) must arrive within this long once it has started.
REQUEST_READ_TIMEOUT = 30.0

# States
IDLE, BODY, WAITING, STREAMING, DONE = range(5)


class HttpFrontEnd(asyncio.Protocol):
    """One client connection, until it is closed or handed over to aiohttp."""

    def __init__(self, gateway: Gateway, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.gateway = gateway
        self._fallback = fallback
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._state = IDLE
        self._head: http1.RequestHead | None = None
        self._pending: PendingRequest | None = None
        self._call: Any = None  # an extension's call in progress (see Extension.front_call)
        self._starting = False  # inside a call's start(): its reply must not recurse into _advance
        self._remote: msgs.RemoteEndpoint | None = None
        self._read_paused = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._eof = False
        self._streaming: asyncio.Task[None] | None = None  # a large response on its way (held: tasks are weak)
        #: loop time the request now being read started arriving
        self._started = 0.0
        #: loop time of the last byte read or response written (the sweeper closes idle connections)
        self.last_active = 0.0

    # ---- asyncio.Protocol ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.last_active = self._loop.time()
        self.gateway.front_ends.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self._loop.time()
        if self._buf:
            self._buf += data
        else:
            self._buf = data
            if self._state == IDLE:
                self._started = self.last_active
        if self._state in (IDLE, BODY) and not self._write_paused:
            self._advance()
        elif len(self._buf) > READ_AHEAD and not self._read_paused:
            self._pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._state in (IDLE, BODY):
            self.close()
        return True  # a half-closed client still gets the response it is waiting for

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = DONE
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self.gateway.front_ends.discard(self)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        elif self._state == IDLE and self._buf:
            self._advance()  # a pipelining client has read its responses: serve the next request

    # ---- requests ------------------------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Parse and relay what the buffer holds, one request at a time (responses go out in request order)."""
        while self._state in (IDLE, BODY):
            if self._write_paused:
                # The client is not reading its responses: read no further requests until it does.
                if len(self._buf) > READ_AHEAD and not self._read_paused:
                    self._pause_reading()
                return
            if self._state == IDLE:
                if not self._buf:
                    return
                if self._buf.startswith(b"GET /$"):
                    self._hand_over()  # WebSocket upgrades and /$health: aiohttp's, no need to parse
                    return
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > http1.MAX_HEAD:
                        self._hand_over()
                    elif self._eof:
                        self.close()  # half a request, and the client has stopped sending
                    return
                head = http1.parse_request_head(self._buf[:end + 4])
                if head is None or not self._relayable(head):
                    self._hand_over()
                    return
                self._head = head
                self._state = BODY
            head = self._head
            assert head is not None
            needed = head.size + head.content_length
            if len(self._buf) < needed:
                if self._eof:
                    self.close()
                return
            raw, self._buf = self._buf[:needed], self._buf[needed:]
            self._started = self._loop.time()
            self._state = WAITING
            self.gateway.front_stats["carried"] += 1
            if self._call is not None:
                self._starting = True
                try:
                    self._call.start(raw[head.size:], self._call_reply)
                finally:
                    self._starting = False
                continue
            if not self._relay(head, raw[head.size:]):
                self.gateway.front_stats["carried"] -= 1
                self._buf = raw + self._buf
                self._hand_over()
                return

    def _relayable(self, head: http1.RequestHead) -> bool:
        """Whether this request is the front end's to relay (the rest go to aiohttp)."""
        gateway = self.gateway
        if head.path.startswith("/$") or head.path == "/" or gateway.directory.clustered:
            return False
        # A body that does not fit inline takes the rendezvous path, which streams it: aiohttp's job.
        if head.content_length + head.size > msgs.INLINE_BODY_LIMIT:
            return False
        for ext in gateway.extensions:
            self._call = ext.front_call(head)
            if self._call is not None:
                return True
            if ext.claims(head.method, head.path):
                return False  # the extension's, but not something the front end can carry
        return True

    def _relay(self, head: http1.RequestHead, body: bytes) -> bool:
        """Send the request to a listener, or answer it with an error; ``False``: aiohttp's to relay after all."""
        gateway = self.gateway
        try:
            entity, strip_auth = gateway.route_http(head.method, head.path, head.query, head.headers)
            channel = gateway.choose_listener(entity)
            if channel is None:
                raise ListenerUnavailable("there are no listeners connected for the endpoint")
            headers = msgs.request_headers_for_listener(head.headers.items(), strip_authorization=strip_auth,
                                                        via=f"1.1 {head.host}")
            query = urls.filter_query(head.query)
            request_target = head.path + ("?" + query if query else "")
            # (the exact estimate only where the raw head says it could matter)
            if head.size + len(body) > msgs.INLINE_BODY_LIMIT // 2 - 1024 and \
                    not gateway.fits_inline(headers, request_target, bool(body), len(body)):
                return False  # the rendezvous path
            if self._remote is None:
                peer = self._transport.get_extra_info("peername") if self._transport is not None else None
                if peer:
                    self._remote = msgs.RemoteEndpoint(str(peer[0]), int(peer[1]))
            pending = gateway.open_request(entity, channel, head.method, request_target, headers, bool(body),
                                           self._remote, on_response=self._on_response)
            try:
                gateway.send_inline(pending, body)
            except RelayError:
                gateway.close_request(pending)
                raise ListenerUnavailable("the listener connection closed") from None
        except RelayError as exc:
            log.info("%s %s -> %d %s", head.method, head.path[:200], exc.http_status, exc.reason)
            self._write_error(exc)
            self._finish_exchange(advance=False)  # the loop in _advance goes on: no recursion per request
            return True
        self._pending = pending  # its deadline is watched by the gateway's sweeper (check), not a timer each
        return True


    def _on_response(self, result: tuple[msgs.Response, bytes | BodyPipe | None] | None,
                     error: RelayError | None) -> None:
        """The listener's response (or why there is none), called by the listener socket's reader."""
        pending = self._pending
        head = self._head
        assert pending is not None and head is not None
        if result is None:
            assert error is not None
            self.gateway.close_request(pending)
            self._pending = None
            if self._state != DONE:
                log.info("%s %s -> %d %s", head.method, head.path[:200], error.http_status, error.reason)
                self._write_error(error)
                self._finish_exchange()
            return
        message, body = result
        if self._state == DONE:  # the client went away
            log.info("%s %s: %s", head.method, head.path[:200], SENDER_GONE)
            if isinstance(body, BodyPipe):
                body.abandon()
            self.gateway.close_request(pending)
            self._pending = None
            return
        reason, headers, no_body = self.gateway.response_parts(message, head.method, head.host)
        if isinstance(body, BodyPipe):
            if no_body:
                body.abandon()
            else:
                self._state = STREAMING
                self._streaming = self._loop.create_task(self._stream(message.status_code, reason, headers, body))
                return
        payload = body if isinstance(body, bytes) and not no_body else b""
        assert self._transport is not None
        # Head and body in one write: one system call for the whole response.
        self._transport.write(self._head_bytes(message.status_code, reason, headers,
                                               None if no_body else len(payload)) + payload)
        self.gateway.close_request(pending)
        self._pending = None
        self._finish_exchange()

    async def _stream(self, status: int, reason: str | None, headers: list[tuple[str, str]], pipe: BodyPipe) -> None:
        """A response body larger than the inline limit, chunked, at the pace the client reads it."""
        transport = self._transport
        assert transport is not None and self._pending is not None
        try:
            transport.write(self._head_bytes(status, reason, [*headers, ("Transfer-Encoding", "chunked")], None))
            async for chunk in pipe:
                if self._state == DONE:
                    assert self._head is not None
                    log.info("%s %s: %s", self._head.method, self._head.path[:200], SENDER_GONE)
                    pipe.abandon()
                    return
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if self._write_paused:
                    self._drained = self._loop.create_future()
                    await self._drained
            transport.write(b"0\r\n\r\n")
        except RelayError as exc:
            # The head is out: the only honest signal left is to cut the connection before the end.
            log.info("response body from the listener failed: %s", exc.reason)
            pipe.abandon()
            transport.abort()
            return
        finally:
            self.gateway.close_request(self._pending)
            self._pending = None
        self._finish_exchange()

    def _call_reply(self, status: int, reason: str | None, headers: list[tuple[str, str]], body: bytes) -> None:
        """An extension's call is answered."""
        self._call = None
        if self._state == DONE:
            return
        head = self._head
        assert self._transport is not None and head is not None
        no_body = head.method == "HEAD" or status in (204, 304) or status < 200
        self._transport.write(self._head_bytes(status, urls.sanitize_reason(reason or "") or None, headers,
                                               None if no_body else len(body)) + (b"" if no_body else body))
        self._finish_exchange(advance=not self._starting)

    def _finish_exchange(self, *, advance: bool = True) -> None:
        head = self._head
        self._head = None
        if self._state == DONE:
            return
        self.last_active = self._started = self._loop.time()
        if (head is not None and not head.keep_alive) or (self._eof and not self._buf):
            self._state = DONE
            self.close()
            return
        self._state = IDLE
        if self._read_paused and not self._write_paused:
            self._read_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        if advance:
            self._advance()

    # ---- writing -------------------------------------------------------------------------------------------------
    def _head_bytes(self, status: int, reason: str | None, headers: list[tuple[str, str]],
                    length: int | None) -> bytes:
        assert self._head is not None
        extra = [("Date", http1.http_date())]
        if length is not None:
            extra.append(("Content-Length", str(length)))
        if not self._head.keep_alive:
            extra.append(("Connection", "close"))
        return http1.encode_response_head(status, reason, [*headers, *extra])

    def _write_error(self, exc: RelayError) -> None:
        """Status, a reason phrase a person understands, and Azure's JSON error body (spec §2.8)."""
        assert self._transport is not None
        body = exc.json_body()
        reason = urls.sanitize_reason(exc.reason) or None
        self._transport.write(self._head_bytes(
            exc.http_status, reason, [("Content-Type", "application/json; charset=utf-8")], len(body)) + body)

    # ---- hand-over and closing -----------------------------------------------------------------------------------
    def _hand_over(self) -> None:
        """aiohttp takes the connection from here, starting with what was read so far."""
        transport = self._transport
        assert transport is not None
        self._state = DONE
        self.gateway.front_ends.discard(self)
        self.gateway.front_stats["handed_over"] += 1
        protocol: Any = self._fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._read_paused:
            transport.resume_reading()
        if self._buf:
            data, self._buf = self._buf, b""
            protocol.data_received(data)

    def _pause_reading(self) -> None:
        self._read_paused = True
        assert self._transport is not None
        self._transport.pause_reading()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def check(self, now: float) -> None:
        """One sweep: answer 504 for a request past its deadline; close a connection idle past the keep-alive
        timeout, or one that started a request and did not finish sending it in time."""
        pending = self._pending
        if pending is not None and not pending.done and time.monotonic() > pending.expires:
            pending.fail(RelayTimeout(RESPONSE_TIMEOUT))
        elif self._call is not None and time.monotonic() > self._call.deadline:
            self._call.expire()
        elif self._state == IDLE and not self._buf:
            if now - self.last_active > KEEPALIVE_TIMEOUT:
                self.close()
        elif self._state in (IDLE, BODY) and now - self._started > REQUEST_READ_TIMEOUT:
            self.close()
