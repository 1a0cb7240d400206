"""SOAP over a hybrid WebSocket, service side: one caller's socket, many calls in flight, callbacks to the caller.

A :class:`~wcfrelay.bindings.HybridConnectionRelayBinding` endpoint accepts hybrid WebSocket senders on its hybrid
connection (the listener's ``connection_handler``) and runs a :class:`SoapWebSocketSession` for each. Every message
is one SOAP envelope (the wire rules are in :mod:`wcfrelay.soap_ws`):

* each message is handled in its own task, so one slow call never holds up the others on the socket; at most
  ``max_calls_per_connection`` are in flight per socket (past that the session stops reading it, and TCP pushes
  back on the caller), and the host's ``max_concurrent_calls`` bounds all of them together;
* the answer carries ``RelatesTo`` = the request's ``MessageID`` and an ``Action``
  (:func:`wcfrelay.soap.add_response_addressing`); a one-way operation is acknowledged (:data:`~wcfrelay.soap_ws.
  ACK_ACTION`) when its message had a ``MessageID``;
* a message that is not a readable SOAP envelope, or is larger than the endpoint's ``max_received_message_size``,
  is answered with a SOAP fault and the socket stays usable; a message larger than twice that (at least 1 MiB
  more) is refused by the WebSocket layer itself, which closes the socket with 1009 (message too big);
* while a service method runs for a message from the socket, :func:`callback_channel` returns the socket's
  :class:`CallbackChannel`: ``channel.send(action, body)`` sends a one-way SOAP message (a callback of a duplex
  contract) to the caller over the same socket, also before the call's own answer.
"""

from __future__ import annotations

import asyncio
import logging

from lxml import etree

from hybrid.client.connection import RelayedConnection
from hybrid.errors import ConnectionClosed, PayloadTooLarge, RelayError
from wcfrelay import soap, soap_ws
from wcfrelay.service.handler import EndpointHandler, Runner, ServiceRequest, callback_channel

__all__ = ["CallbackChannel", "SoapWebSocketSession", "callback_channel", "hard_message_limit"]

log = logging.getLogger("wcfrelay.host")

#: messages up to this size are parsed on the event loop; bigger ones on the host's thread pool
_INLINE_PARSE = 256 * 1024


def hard_message_limit(max_message: int) -> int:
    """The WebSocket layer's own limit: past it a message is not even read (the socket closes with 1009)."""
    return max(2 * max_message, max_message + (1 << 20))


class CallbackChannel:
    """The caller at the other end of one hybrid WebSocket: send it one-way SOAP messages (callbacks).

    ``send`` is for service methods (they run on the host's thread pool): it blocks until the message is written.
    ``send_async`` is the same for coroutines on the host's event loop. ``send_envelope``/``send_envelope_async``
    take a complete envelope instead. ``version`` is the SOAP version callbacks are written in (the endpoint's).
    """

    def __init__(self, connection: RelayedConnection, version: soap.SoapVersion,
                 loop: asyncio.AbstractEventLoop, *, max_message: int = soap.DEFAULT_MAX_ENVELOPE_SIZE) -> None:
        self.connection = connection
        self.version = version
        self.max_message = max_message
        #: how many callbacks were sent
        self.sent = 0
        self._loop = loop
        self._closed = False

    @property
    def id(self) -> str:
        """The relayed connection's tracking id."""
        return self.connection.tracking_id

    @property
    def closed(self) -> bool:
        return self._closed or self.connection.closed

    def _check_thread(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self._loop:
            raise RuntimeError("CallbackChannel.send blocks; on the host's event loop use await send_async(…)")

    async def send_envelope_async(self, envelope: bytes | str) -> None:
        """Send a complete SOAP envelope as one text message. Raises ConnectionClosed once the caller is gone."""
        if self.closed:
            raise ConnectionClosed("the caller's WebSocket is closed")
        text = envelope if isinstance(envelope, str) else envelope.decode("utf-8")
        await self.connection.send(text)
        self.sent += 1

    async def send_async(self, action: str, body: etree._Element | str | bytes | None = None, *,
                         headers: tuple[etree._Element, ...] = ()) -> str:
        """Send a one-way message with ``wsa:Action`` = ``action`` and ``body`` as the Body's element (an lxml
        element or its XML text). Returns the message's ``MessageID``."""
        message_id = soap_ws.new_message_id()
        envelope = soap_ws.build_message(self.version, action, body, message_id=message_id, headers=headers,
                                         max_size=self.max_message)
        await self.send_envelope_async(envelope)
        return message_id

    def send(self, action: str, body: etree._Element | str | bytes | None = None, *,
             headers: tuple[etree._Element, ...] = (), timeout: float = 30.0) -> str:
        """:meth:`send_async` from a thread (a service method); waits until the message is written."""
        self._check_thread()
        future = asyncio.run_coroutine_threadsafe(self.send_async(action, body, headers=headers), self._loop)
        return future.result(timeout)

    def send_envelope(self, envelope: bytes | str, *, timeout: float = 30.0) -> None:
        """:meth:`send_envelope_async` from a thread."""
        self._check_thread()
        asyncio.run_coroutine_threadsafe(self.send_envelope_async(envelope), self._loop).result(timeout)

    def __repr__(self) -> str:
        return f"CallbackChannel({self.id!r}, {'closed' if self.closed else 'open'})"


class SoapWebSocketSession:
    """Serve one hybrid WebSocket of SOAP envelopes for an endpoint (see the module docstring)."""

    def __init__(
        self,
        connection: RelayedConnection,
        handler: EndpointHandler,
        run: Runner,
        *,
        public_url: str,
        max_message: int,
        max_in_flight: int,
        limiter: asyncio.Semaphore | None = None,
        label: str = "",
    ) -> None:
        self.connection = connection
        self.handler = handler
        self.run = run
        self.public_url = public_url
        self.max_message = max_message
        self.version = handler.soap_version or soap.SoapVersion.SOAP12
        context = connection.context
        self.path = (context.suffix if context is not None else "") or "/"
        self.query = context.query if context is not None else ""
        self.label = label or connection.tracking_id
        self.channel = CallbackChannel(connection, self.version, asyncio.get_running_loop(), max_message=max_message)
        #: messages received, answers sent, messages refused (faults for unreadable or oversized messages)
        self.received = 0
        self.answered = 0
        self.refused = 0
        self._slots = asyncio.Semaphore(max_in_flight)
        self._limiter = limiter
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def serve(self) -> None:
        """Read and dispatch messages until the caller closes the socket; then wait for the calls in flight."""
        closing = (1000, "")
        try:
            while True:
                await self._slots.acquire()
                if self._limiter is not None:
                    await self._limiter.acquire()
                try:
                    message = await self.connection.recv()
                except ConnectionClosed as exc:
                    self._release()
                    log.debug("%s: SOAP WebSocket closed: %s", self.label, exc)
                    break
                self.received += 1
                task = asyncio.ensure_future(self._process(message))
                self._tasks.add(task)
                task.add_done_callback(self._done)
        except asyncio.CancelledError:
            # The host is closing: abandon the calls in flight (their answers could not be sent anyway).
            closing = (1001, "the service is closing")
            for task in list(self._tasks):
                task.cancel()
            raise
        finally:
            self.channel._closed = True
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            if not self.connection.closed:
                try:
                    await self.connection.close(*closing)
                except Exception as exc:  # noqa: BLE001 - the socket is going away anyway
                    log.debug("%s: closing the SOAP WebSocket: %s", self.label, exc)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._release()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: a SOAP WebSocket message failed", self.label, exc_info=task.exception())

    def _release(self) -> None:
        self._slots.release()
        if self._limiter is not None:
            self._limiter.release()

    async def _process(self, message: str | bytes) -> None:
        text = isinstance(message, str)
        data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        answer = await self.answer(data)
        if answer is None:
            return
        try:
            await self.connection.send(_as_text(answer) if text else answer)
            self.answered += 1
        except ConnectionClosed:
            log.info("%s: the caller left before an answer could be sent", self.label)

    async def answer(self, data: bytes) -> bytes | None:
        """The answer to one message (a reply, a fault, an acknowledgement), or None when none is due."""
        if len(data) > self.max_message:
            self.refused += 1
            error = PayloadTooLarge(f"the message is {len(data)} bytes; this endpoint's limit is {self.max_message} "
                                    "(max_received_message_size)")
            return soap_ws.error_fault(self.version, error, soap_ws.peek_message_id(data))
        try:
            if len(data) <= _INLINE_PARSE:
                envelope = soap.parse_envelope(data, max_size=self.max_message)
            else:
                envelope = await self.run(_parse, data, self.max_message)
        except RelayError as exc:
            self.refused += 1
            return soap_ws.error_fault(self.version, exc, soap_ws.peek_message_id(data))
        route = soap_ws.correlation(envelope)
        if route.relates_to is not None:
            # An answer to one of our callbacks: callbacks are one-way, so there is nothing to hand it to.
            log.debug("%s: ignoring a message that relates to %s", self.label, route.relates_to)
            return None
        content_type = envelope.version.content_type
        if envelope.version is soap.SoapVersion.SOAP12 and route.action:
            content_type += f'; action="{route.action}"'
        request = ServiceRequest(method="POST", path=self.path, query=self.query,
                                 headers={"Content-Type": content_type}, body=data, public_url=self.public_url,
                                 content_type=content_type, soap_action=route.action, callbacks=self.channel)
        result = await self.handler.handle(request, self.run)
        if result.one_way or (result.status == 202 and not result.body):
            return soap_ws.build_ack(envelope.version, route.message_id) if route.message_id else None
        return _correlated(result.body, result.status, route, envelope.version)


def _parse(data: bytes, max_size: int) -> soap.Envelope:
    return soap.parse_envelope(data, max_size=max_size)


def _correlated(body: bytes, status: int, route: soap_ws.Correlation, version: soap.SoapVersion) -> bytes:
    """``body`` with RelatesTo/Action for the request (unless the service put them there already).

    A body that is no SOAP envelope (a forwarded service answering an HTML error page) becomes a Receiver fault.
    """
    if route.message_id is None and route.action is None:
        return body
    if route.message_id is not None and route.message_id.encode("utf-8") in body:
        return body  # the service (Spyne with WS-Addressing, or a WCF service) answered with RelatesTo itself
    try:
        return soap.add_response_addressing(body, route.message_id, request_action=route.action,
                                            max_size=max(len(body) + 1, soap.DEFAULT_MAX_ENVELOPE_SIZE))
    except RelayError:
        error = RelayError(f"the service answered HTTP {status} without a SOAP envelope")
        return soap_ws.error_fault(version, error, route.message_id)


def _as_text(data: bytes) -> str:
    """An answer as a text message: UTF-8, re-encoded when the service answered in another encoding."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        root = etree.fromstring(data, soap._parser())
        return etree.tostring(root, encoding="unicode")
