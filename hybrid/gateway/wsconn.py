"""A gateway-side WebSocket on a connection that aiohttp has upgraded.

After the 101 the socket replaces aiohttp's payload parser, so the bytes of the connection come straight to a
:class:`FrameParser`. Two modes:

* **relay** (sender ↔ listener rendezvous): every frame is written to the peer's transport *in the same callback that
  read it* — header as soon as it is parsed, payload chunks as they arrive, unmasked once. No task switch, no queue,
  no reassembly. When the peer's transport asks to pause writing, this socket stops reading until it drains, so a
  slow reader slows the writer and gateway memory stays flat.
* **endpoint** (control channels and HTTP rendezvous, where the gateway itself speaks): text messages are
  reassembled up to a bound, binary messages are passed on chunk by chunk; both go to ``on_event`` in the read
  callback, whose owner pauses reading when it cannot take more. Or, in message mode, whole messages up to a bound
  go to ``on_message``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..errors import ConnectionClosed, PayloadTooLarge, RelayError
from ..protocol import frames as fr
from ..protocol.messages import MAX_CONTROL_MESSAGE

__all__ = ["BDATA", "BEND", "BSTART", "CLOSED", "SOCKETS_KEY", "TEXT", "GatewaySocket", "upgrade"]

log = logging.getLogger("hybrid.gateway.ws")

# Endpoint-mode events
TEXT, BSTART, BDATA, BEND, CLOSED = "text", "bstart", "bdata", "bend", "closed"

#: Every open gateway socket of an application, so shutdown can say goodbye (a WeakSet).
SOCKETS_KEY: web.AppKey[weakref.WeakSet[GatewaySocket]] = web.AppKey("gateway_sockets")

#: How long a close handshake may take before the connection is dropped.
CLOSE_TIMEOUT = 5.0


class GatewaySocket:
    """One upgraded connection. Implements aiohttp's payload-parser interface (``feed_data``/``feed_eof``)."""

    def __init__(self, request: web.BaseRequest, *, label: str, max_text: int = MAX_CONTROL_MESSAGE) -> None:
        self.label = label
        self._protocol: Any = request.protocol
        transport = request.transport
        if transport is None:
            raise ConnectionClosed("connection lost before the upgrade")
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self._parser = fr.FrameParser(require_mask=True)
        self._max_text = max_text
        self.peer: GatewaySocket | None = None
        self._batch: list[bytes] | None = None  # messages waiting for this iteration's write
        #: the 101 response; the aiohttp handler returns it so nothing else is written
        self.response: web.StreamResponse | None = None
        #: message mode (set before :meth:`attach`): called with (opcode, payload) for each whole message, up to
        #: ``max_text`` bytes, in the read callback itself
        self.on_message: Callable[[int, bytes], None] | None = None
        #: event mode (set before :meth:`attach`): called with (TEXT, bytes), (BSTART, None), (BDATA, bytes),
        #: (BEND, None) and finally (CLOSED, (code, reason)), in the read callback itself
        self.on_event: Callable[[str, Any], None] | None = None
        # endpoint mode state
        self._message_op = -1
        self._text_parts: list[bytes] = []
        self._text_size = 0
        # lifecycle
        self.close_sent = False
        self.close_received = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._paused = False
        self._eof = False
        self.done: asyncio.Future[None] = self._loop.create_future()
        self.last_seen = self._loop.time()

    # ---- aiohttp payload-parser interface -------------------------------------------------------------------------
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.last_seen = self._loop.time()
        if self.close_received:
            return False, b""  # nothing may follow a close frame
        try:
            events = self._parser.feed(data)
            if self.peer is not None:
                self._relay(events)
            else:
                self._deliver(events)
        except RelayError as exc:
            log.info("%s: closing: %s", self.label, exc)
            self.fail(exc.close_code, exc.reason)
        return False, b""

    def feed_eof(self) -> None:
        if self._eof:
            return
        self._eof = True
        peer = self.peer
        if peer is not None and not peer.close_sent:
            if self._parser.in_frame:
                peer.abort()  # half a frame went out: the peer's stream cannot be completed
            else:
                peer.send_close(1001, "the other party went away")
                peer.close_later()
        self._push(CLOSED, (self.close_code or 1006, self.close_reason))
        if not self.done.done():
            self.done.set_result(None)

    # ---- relay mode ----------------------------------------------------------------------------------------------
    def pair(self, other: GatewaySocket) -> None:
        """Relay frames both ways between two sockets from now on."""
        self.peer = other
        other.peer = self

    def _relay(self, events: list) -> None:
        peer = self.peer
        assert peer is not None
        # Everything one read produced goes out in one write: a header and its payload in one system call.
        out: list[bytes] = []
        for ev in events:
            kind = ev[0]
            if kind == fr.DATA:
                out.append(ev[1])
            elif kind == fr.HEADER:
                out.append(fr.frame_header(ev[1], ev[2], ev[3]))
            elif kind == fr.CONTROL:
                if out:
                    peer._transport.write(b"".join(out) if len(out) > 1 else out[0])
                    out = []
                self._relay_control(ev[1], ev[2])
        if out:
            peer._transport.write(b"".join(out) if len(out) > 1 else out[0])
        if peer._protocol.writing_paused and not self._paused:
            self.pause_reading()
            self._loop.create_task(self._resume_after(peer))

    def _relay_control(self, opcode: int, payload: bytes) -> None:
        peer = self.peer
        assert peer is not None
        if opcode == fr.OP_CLOSE:
            code, reason = fr.parse_close(payload)
            self.close_received = True
            self.close_code, self.close_reason = code, reason
            if not peer.close_sent:
                peer.send_close(code, reason)
            for sock in (self, peer):
                if sock.close_sent and sock.close_received:
                    sock.close_transport()
                else:
                    sock.close_later()
        else:
            # Pings and pongs travel end to end: the parties see each other's liveness, not the gateway's.
            peer._transport.write(fr.encode_frame(opcode, payload))

    async def _resume_after(self, peer: GatewaySocket) -> None:
        try:
            await peer.drain()
        except ConnectionClosed:
            return
        self.resume_reading()

    # ---- endpoint mode -------------------------------------------------------------------------------------------
    def _deliver(self, events: list) -> None:
        if self.on_message is not None:
            self._deliver_whole(events)
            return
        for ev in events:
            kind = ev[0]
            if kind == fr.DATA:
                if self._message_op == fr.OP_TEXT:
                    self._text_size += len(ev[1])
                    if self._text_size > self._max_text:
                        raise PayloadTooLarge(f"text message larger than {self._max_text} bytes")
                    self._text_parts.append(ev[1])
                else:
                    self._push(BDATA, ev[1])
            elif kind == fr.HEADER:
                opcode = ev[2]
                if opcode != fr.OP_CONT:
                    self._message_op = opcode
                    if opcode == fr.OP_BINARY:
                        self._push(BSTART, None)
                    else:
                        self._text_parts, self._text_size = [], 0
            elif kind == fr.END:
                if ev[1]:  # message complete
                    if self._message_op == fr.OP_TEXT:
                        self._push(TEXT, b"".join(self._text_parts))
                        self._text_parts = []
                    else:
                        self._push(BEND, None)
                    self._message_op = -1
            else:
                self._endpoint_control(ev[1], ev[2])

    def _deliver_whole(self, events: list) -> None:
        """Message mode: each whole message goes to ``on_message`` in this very callback (no task hop)."""
        assert self.on_message is not None
        for ev in events:
            kind = ev[0]
            if kind == fr.DATA:
                self._text_size += len(ev[1])
                if self._text_size > self._max_text:
                    raise PayloadTooLarge(f"message larger than {self._max_text} bytes")
                self._text_parts.append(ev[1])
            elif kind == fr.HEADER:
                if ev[2] != fr.OP_CONT:
                    self._message_op = ev[2]
                    self._text_parts, self._text_size = [], 0
            elif kind == fr.END:
                if ev[1]:
                    parts, self._text_parts = self._text_parts, []
                    self.on_message(self._message_op, parts[0] if len(parts) == 1 else b"".join(parts))
                    self._message_op = -1
            else:
                self._endpoint_control(ev[1], ev[2])

    def _endpoint_control(self, opcode: int, payload: bytes) -> None:
        if opcode == fr.OP_PING:
            self._transport.write(fr.encode_frame(fr.OP_PONG, payload))
        elif opcode == fr.OP_CLOSE:
            code, reason = fr.parse_close(payload)
            self.close_received = True
            self.close_code, self.close_reason = code, reason
            if not self.close_sent:
                self.send_close(code if code is not None else None, "")
            self.close_transport()
        # unsolicited pongs only refresh last_seen

    def _push(self, kind: str, value: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, value)

    # ---- writing -------------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return not self._eof and not self.close_sent

    def send_text(self, text: str) -> None:
        self.send_frame(fr.OP_TEXT, text.encode("utf-8"))

    def send_message_batched(self, opcode: int, payload: bytes) -> None:
        """Send one whole message with the others sent in this event-loop iteration, in one write: a control
        channel busy with many small requests costs one system call per iteration rather than one per message."""
        if self._eof or self.close_sent:
            raise ConnectionClosed(f"{self.label}: socket closed")
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            self._loop.call_soon(self._flush_batch)
        batch.append(fr.frame_header(True, opcode, len(payload)))
        batch.append(payload)

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch and not self._eof:
            self._transport.write(b"".join(batch))

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        if self._eof or self.close_sent:
            raise ConnectionClosed(f"{self.label}: socket closed")
        if self._batch:
            self._flush_batch()  # frames leave in the order they were sent
        header = fr.frame_header(fin, opcode, len(payload))
        # One write, one system call; past 64 KiB the copy costs more than the second call saves.
        if len(payload) <= 65536:
            self._transport.write(header + payload)
        else:
            self._transport.write(header)
            self._transport.write(payload)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._eof:
            raise ConnectionClosed(f"{self.label}: connection lost")
        if self._protocol.writing_paused:
            try:
                await self._protocol._drain_helper()
            except (ConnectionError, RuntimeError):
                raise ConnectionClosed(f"{self.label}: connection lost") from None

    def send_close(self, code: int | None, reason: str = "") -> None:
        if self.close_sent or self._eof:
            return
        self.close_sent = True
        if code in (1005, 1006, 1015):  # never valid on the wire (spec §2.6): say "going away"
            code = 1001
        if self._batch:
            self._flush_batch()
        self._transport.write(fr.encode_close(code, reason))

    def going_away(self, reason: str = "the gateway is shutting down") -> None:
        """Close with 1001 from the gateway's side, unless a relayed frame is half written (then drop)."""
        if self.peer is not None and self.peer._parser.in_frame:
            self.abort()
            return
        self.send_close(1001, reason)
        self.close_later(2.0)

    def fail(self, code: int, reason: str) -> None:
        """Close with ``code`` at once; the relay peer (if any) learns the same."""
        peer = self.peer
        if peer is not None and not peer.close_sent:
            if self._parser.in_frame:
                peer.abort()
            else:
                peer.send_close(1011 if code != 1008 else code, "relay error")
                peer.close_later()
        self.close_received = True  # read nothing more from a peer that broke the protocol
        self.send_close(code, reason)
        self.close_later(1.0)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake from the gateway's side, bounded in time."""
        self.send_close(code, reason)
        try:
            await asyncio.wait_for(asyncio.shield(self.done), CLOSE_TIMEOUT)
        except TimeoutError:
            self.abort()

    def close_later(self, delay: float = CLOSE_TIMEOUT) -> None:
        """Drop the TCP connection if the close handshake has not finished in ``delay`` seconds."""
        self._loop.call_later(delay, self.close_transport)

    def close_transport(self) -> None:
        if not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def pause_reading(self) -> None:
        self._paused = True
        self._protocol.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and not self._eof:
            self._paused = False
            self._protocol.resume_reading()

    def handler_response(self) -> web.StreamResponse:
        """What the aiohttp handler returns: the 101 already sent, so nothing more is written."""
        assert self.response is not None
        return self.response

    def attach(self, request: web.BaseRequest) -> None:
        """Route the connection's bytes to this socket from now on."""
        request.protocol.set_parser(self)  # type: ignore[arg-type]  # same interface as aiohttp's reader
        request.protocol.keep_alive(False)

    def remote(self) -> tuple[str, int]:
        peer = self._transport.get_extra_info("peername") or ("", 0)
        return str(peer[0]), int(peer[1])


async def upgrade(request: web.BaseRequest, headers: dict[str, str], *, label: str, attach: bool = True) -> GatewaySocket:
    """Send the 101 (``headers`` from ``handshake_headers``) and take over the connection.

    With ``attach=False`` the caller pairs sockets first and then calls :meth:`GatewaySocket.attach`: bytes that
    arrive meanwhile wait in aiohttp's buffer, so none can reach the parser before the relay is wired.
    """
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()
    await response.prepare(request)
    sock = GatewaySocket(request, label=label)
    sock.response = response
    registry = request.app.get(SOCKETS_KEY) if hasattr(request, "app") else None
    if registry is not None:
        registry.add(sock)
    if attach:
        sock.attach(request)
    return sock
