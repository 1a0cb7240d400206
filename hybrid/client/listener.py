"""``HybridConnectionListener``: the on-premises side of a hybrid connection (spec §1.1, §2).

The listener keeps one control channel open (``…/$hc/{entity}?sb-hc-action=listen``). The gateway announces
WebSocket senders with ``accept`` and HTTP requests with ``request`` on it. The listener

* accepts a sender by opening a WebSocket to ``accept.address`` unchanged, or rejects it by opening that address
  with ``sb-hc-statusCode``/``sb-hc-statusDescription`` and expecting 410 (spec §2.6);
* answers HTTP requests inline on the control channel or over a rendezvous (spec §2.3, §2.4, §2.7);
* renews its token with ``renewToken`` before it expires (spec §2.5);
* reconnects on the .NET ladder 0, 1, 2, 5, 10, 30 s, except after a 404 (spec §2.8).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Self

from multidict import CIMultiDict, CIMultiDictProxy
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidStatus

from ..auth import ConnectionString
from ..errors import ConfigError, ProtocolError, RelayError
from ..protocol.messages import (
    Accept,
    RemoteEndpoint,
    RenewToken,
    Request,
    encode,
    parse_message,
)
from ._transport import open_websocket, send_message_pair, shut_down
from .addressing import new_tracking_id, reject_url, resolve_endpoint, split_accept_address
from .connection import RelayedConnection, _closed_error
from .http import (
    FLUSH_TIMEOUT,
    RelayedHttpRequest,
    RelayedHttpResponse,
    RequestHandler,
    ResponsePlan,
    at_least_one_fragment,
    plan_response,
)
from .status import DEFAULT_RECONNECT_DELAYS, ListenerStatus, ReconnectLadder, should_reconnect
from .tokens import DEFAULT_TOKEN_TTL, TokenProvider, renewal_delay

__all__ = [
    "AcceptContext",
    "AcceptDecision",
    "AcceptHandler",
    "ConnectionHandler",
    "HybridConnectionListener",
    "normalise_decision",
]

log = logging.getLogger("hybrid.client.listener")

AcceptDecision = bool | int | tuple[int, str] | None
AcceptHandler = Callable[["AcceptContext"], AcceptDecision | Awaitable[AcceptDecision]]
ConnectionHandler = Callable[[RelayedConnection], Awaitable[None]]
StatusCallback = Callable[[], Any]

#: A control channel that stayed up this long counts as stable: the next outage starts the ladder again.
STABLE_AFTER = 5.0
#: Default rejection when an accept handler says no (.NET: 400 "Rejected by user code", spec §2.6).
DEFAULT_REJECT = (400, "Rejected by user code")


class AcceptContext:
    """What a listener knows about a WebSocket sender before accepting it (spec §2.2, §1.3).

    ``path`` is ``/entity/suffix`` and ``suffix`` the part after the entity, both recovered from ``accept.address``
    by dropping ``$hc/``; ``query`` is the sender's query with ``sb-hc-*`` pairs filtered out (spec §1.2).
    Set ``subprotocol`` in an accept handler to choose another offered subprotocol; it defaults to the first one
    the sender offered, as .NET and hyco-ws do (spec §2.6).
    """

    def __init__(
        self,
        *,
        id: str,
        address: str,
        entity: str,
        connect_headers: Mapping[str, str],
        remote_endpoint: RemoteEndpoint | None = None,
    ) -> None:
        self.id = id
        self.address = address
        self.entity = entity
        self.connect_headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(connect_headers))
        self.remote_endpoint = remote_endpoint
        self.path, self.suffix, self.query = split_accept_address(address, entity)
        offered = self.connect_headers.get("Sec-WebSocket-Protocol", "")
        self.offered_subprotocols: list[str] = [p.strip() for p in offered.split(",") if p.strip()]
        self.subprotocol: str | None = self.offered_subprotocols[0] if self.offered_subprotocols else None

    @classmethod
    def from_accept(cls, accept: Accept, entity: str) -> AcceptContext:
        """Build from a parsed ``accept`` message."""
        return cls(
            id=accept.id,
            address=accept.address,
            entity=entity,
            connect_headers=accept.connect_headers,
            remote_endpoint=accept.remote_endpoint,
        )

    def __repr__(self) -> str:
        return f"AcceptContext(id={self.id!r}, suffix={self.suffix!r}, query={self.query!r})"


def normalise_decision(decision: Any) -> tuple[int, str] | None:
    """None to accept, else ``(status, description)`` to reject.

    ``True`` accepts; ``False`` or ``None`` rejects with 400 "Rejected by user code"; an int rejects with that
    status; ``(status, description)`` rejects with both. A rejection status must be 4xx or 5xx, because the sender
    must see an error (the gateway refuses anything else).
    """
    if decision is True:
        return None
    if decision is False or decision is None:
        return DEFAULT_REJECT
    if isinstance(decision, int) and not isinstance(decision, bool):
        status, description = decision, ""
    elif isinstance(decision, tuple) and len(decision) == 2:
        status, description = int(decision[0]), str(decision[1] or "")
    else:
        raise TypeError(f"an accept handler returns a bool or (status, description), not {decision!r}")
    if not 400 <= status <= 599:
        raise ValueError(f"a rejection status must be 4xx or 5xx, not {status}")
    if not description:
        description = DEFAULT_REJECT[1]
    return status, description.replace("\r", " ").replace("\n", " ")


class _ControlChannel:
    """One control-channel WebSocket and its send lock.

    The lock is held across a ``response`` JSON and its body message so nothing else slips between them (spec §2.1).
    """

    def __init__(self, ws: ClientConnection, token: str | None, issued_at: float, expiry: float) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.token = token
        self.issued_at = issued_at
        self.expiry = expiry
        self.opened_at = time.monotonic()

    async def send(self, text: str) -> None:
        async with self.lock:
            await self.ws.send(text)

    async def send_with_body(self, text: str, body: bytes | None) -> None:
        await send_message_pair(self.ws, text, body, self.lock)


class HybridConnectionListener:
    """Listen on a hybrid connection for WebSocket senders and HTTP requests.

    Address it with a connection string that has ``EntityPath`` (or pass ``entity_path``), or with an
    ``sb://host[:port]/entity`` address and a :class:`~hybrid.client.tokens.TokenProvider`. ``tls=False`` (or
    ``scheme="ws"``) talks plain ``ws://`` to a local gateway; ``ssl`` is an ``SSLContext`` for ``wss``.

    WebSocket senders: iterate ``async for conn in listener`` (or ``await listener.accept_connection()``), or give
    ``connection_handler`` to get each connection in its own task. ``accept_handler(context)`` decides first: return
    ``True`` to accept, ``False`` or ``(status, description)`` to reject.

    HTTP: ``request_handler(request)`` is awaited in its own task per request and returns a
    :class:`~hybrid.client.http.RelayedHttpResponse` (or bytes/str for a 200).

    Status: ``status`` is Online, Connecting or Offline; ``on_online``/``on_connecting``/``on_offline`` are called on
    each change (plain functions or coroutine functions) and ``last_error`` keeps the latest failure.
    """

    def __init__(
        self,
        address: str | ConnectionString,
        token_provider: TokenProvider | None = None,
        *,
        entity_path: str | None = None,
        tls: bool | None = None,
        scheme: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        accept_handler: AcceptHandler | None = None,
        connection_handler: ConnectionHandler | None = None,
        request_handler: RequestHandler | None = None,
        on_online: StatusCallback | None = None,
        on_connecting: StatusCallback | None = None,
        on_offline: StatusCallback | None = None,
        reconnect_delays: Sequence[float] = DEFAULT_RECONNECT_DELAYS,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        renew_fraction: float = 0.8,
        ping_interval: float | None = 30.0,
        ping_timeout: float | None = 30.0,
        open_timeout: float = 60.0,
        max_message_size: int | None = 16 << 20,
        proxy: str | bool | None = True,
        flush_timeout: float = FLUSH_TIMEOUT,
    ) -> None:
        self.address, token_provider = resolve_endpoint(address, token_provider, entity_path=entity_path, tls=tls,
                                                        scheme=scheme)
        if not 0.0 < renew_fraction < 1.0:
            raise ConfigError("renew_fraction must be between 0 and 1")
        self.token_provider = token_provider
        self.tracking_id = new_tracking_id()
        self.accept_handler = accept_handler
        self.connection_handler = connection_handler
        self.request_handler = request_handler
        self.on_online = on_online
        self.on_connecting = on_connecting
        self.on_offline = on_offline
        self._ssl = ssl
        self._reconnect_delays = tuple(reconnect_delays)
        self._ladder = ReconnectLadder(self._reconnect_delays)
        self._token_ttl = token_ttl
        self._renew_fraction = renew_fraction
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._max_message_size = max_message_size
        self._proxy = proxy
        self._flush_timeout = flush_timeout
        self._status = ListenerStatus.OFFLINE
        self._last_error: BaseException | None = None
        self._channel: _ControlChannel | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepted: asyncio.Queue[RelayedConnection | None] = asyncio.Queue()
        self._closing = False
        self._log = logging.LoggerAdapter(log, {"entity": self.address.entity, "listener": self.tracking_id})

    # -- public surface ---------------------------------------------------------------------------

    @property
    def entity(self) -> str:
        """The hybrid connection's name."""
        return self.address.entity

    @property
    def status(self) -> ListenerStatus:
        """Online, Connecting or Offline."""
        return self._status

    @property
    def is_online(self) -> bool:
        return self._status is ListenerStatus.ONLINE

    @property
    def last_error(self) -> BaseException | None:
        """The latest control-channel failure (a ``hybrid.errors`` exception), or None."""
        return self._last_error

    async def open(self) -> None:
        """Connect the control channel. Raises the ``hybrid.errors`` exception if the first attempt fails
        (401 AuthenticationError, 403 AuthorizationError, 404 EndpointNotFound, ConnectionClosed if unreachable)."""
        if self._run_task is not None and not self._run_task.done():
            raise RuntimeError("the listener is already open")
        self._closing = False
        self._accepted = asyncio.Queue()
        self._ladder = ReconnectLadder(self._reconnect_delays)
        self._set_status(ListenerStatus.CONNECTING)
        try:
            channel = await self._connect_control()
        except BaseException as exc:
            self._last_error = exc
            self._set_status(ListenerStatus.OFFLINE)
            raise
        self._set_status(ListenerStatus.ONLINE)
        self._run_task = asyncio.create_task(self._run(channel), name=f"hc-listener-{self.entity}")

    async def close(self) -> None:
        """Close the control channel and stop reconnecting. Connections already taken from ``async for`` stay
        open; tasks running ``connection_handler`` or HTTP requests are cancelled. ``async for`` ends."""
        self._closing = True
        channel = self._channel
        await shut_down(channel.ws if channel is not None else None, "listener closed", self._run_task, self._tasks)
        self._run_task = None
        self._channel = None
        self._set_status(ListenerStatus.OFFLINE)
        self._accepted.put_nowait(None)

    async def accept_connection(self) -> RelayedConnection | None:
        """The next accepted WebSocket connection, or None once the listener is closed or gave up."""
        conn = await self._accepted.get()
        if conn is None:
            self._accepted.put_nowait(None)  # let every other waiter see the end too
        return conn

    async def __aiter__(self) -> AsyncIterator[RelayedConnection]:
        while True:
            conn = await self.accept_connection()
            if conn is None:
                return
            yield conn

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"HybridConnectionListener({self.address.sb_uri!r}, status={self._status.value})"

    # -- status -----------------------------------------------------------------------------------

    def _set_status(self, status: ListenerStatus) -> None:
        if status is self._status:
            return
        self._status = status
        self._log.info("status %s", status.value)
        callback = {
            ListenerStatus.ONLINE: self.on_online,
            ListenerStatus.CONNECTING: self.on_connecting,
            ListenerStatus.OFFLINE: self.on_offline,
        }[status]
        if callback is None:
            return
        try:
            result = callback()
            if inspect.isawaitable(result):
                self._spawn(result)
        except Exception:  # noqa: BLE001 - application code and network faults must not stop the listener
            self._log.exception("status callback for %s failed", status.value)

    def _spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- control channel --------------------------------------------------------------------------

    async def _connect_control(self) -> _ControlChannel:
        headers: dict[str, str] = {}
        token: str | None = None
        issued = time.time()
        expiry = float("inf")
        if self.token_provider is not None:
            token, expiry = await self.token_provider.get_token(self.address.audience, self._token_ttl)
            # §1.1: all three client libraries send the token in the ServiceBusAuthorization header.
            headers["ServiceBusAuthorization"] = token
        ws = await open_websocket(
            self.address.listen_url(self.tracking_id),
            what="listen",
            headers=headers,
            ssl=self._ssl,
            proxy=self._proxy,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            # Control messages and inline bodies each stay within 64 KiB (spec §2.1); leave headroom.
            max_size=1 << 20,
        )
        channel = _ControlChannel(ws, token, issued, expiry)
        self._channel = channel
        self._log.debug("control channel open")
        return channel

    async def _run(self, channel: _ControlChannel) -> None:
        """Serve the control channel; on loss, reconnect on the ladder until closed or told 404 (spec §2.8)."""
        while True:
            error = await self._serve(channel)
            self._channel = None
            if self._closing:
                return
            self._last_error = error
            self._log.warning("control channel lost: %s", error)
            if time.monotonic() - channel.opened_at >= STABLE_AFTER:
                self._ladder.reset()
            self._set_status(ListenerStatus.CONNECTING)
            next_channel = await self._reconnect()
            if next_channel is None:
                return
            channel = next_channel
            self._set_status(ListenerStatus.ONLINE)

    async def _reconnect(self) -> _ControlChannel | None:
        while not self._closing:
            delay = self._ladder.next_delay()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._closing:
                return None
            try:
                return await self._connect_control()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - application code and network faults must not stop the listener
                self._last_error = exc
                if not should_reconnect(exc):
                    # .NET ShouldReconnect: EndpointNotFound ends the listener (spec §2.8).
                    self._log.error("giving up: %s", exc)
                    self._set_status(ListenerStatus.OFFLINE)
                    self._accepted.put_nowait(None)
                    return None
                self._log.info("reconnect failed (%s); next attempt on the ladder", exc)
        return None

    async def _serve(self, channel: _ControlChannel) -> BaseException:
        renew = asyncio.create_task(self._renew_loop(channel))
        try:
            while True:
                raw = await channel.ws.recv()
                await self._dispatch(channel, raw)
        except WsConnectionClosed as exc:
            return _closed_error(exc, "control channel")
        except Exception as exc:  # noqa: BLE001 - application code and network faults must not stop the listener
            self._log.exception("control channel failed")
            await channel.ws.close(1011, "listener error")
            return exc
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)

    async def _dispatch(self, channel: _ControlChannel, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            # A stray binary message (e.g. an empty one) carries nothing for us; ignore it (spec §2.1).
            self._log.debug("ignoring a binary message of %d bytes on the control channel", len(raw))
            return
        try:
            message = parse_message(raw)
        except RelayError as exc:
            self._log.warning("ignoring a bad control message: %s", exc)
            return
        if isinstance(message, Accept):
            self._spawn(self._handle_accept(message))
        elif isinstance(message, Request):
            if not message.inline:
                # Shape (b): the request itself waits on a rendezvous (spec §2.3, §2.7).
                self._spawn(self._handle_rendezvous_request(message))
                return
            body = b""
            if message.body:
                # §2.1: the body is exactly the next message, and it is binary.
                following = await channel.ws.recv()
                if not isinstance(following, bytes):
                    self._log.warning("request %s: body expected, got a text message; dropping it", message.id)
                    await self._dispatch(channel, following)
                    return
                body = following
            self._spawn(self._handle_inline_request(message, body, channel))
        else:
            self._log.debug("ignoring control message %r", message)

    async def _renew_loop(self, channel: _ControlChannel) -> None:
        """Send ``renewToken`` at ``renew_fraction`` of each token's lifetime (spec §2.5)."""
        provider = self.token_provider
        if provider is None or channel.expiry == float("inf"):
            return
        issued, expiry = channel.issued_at, channel.expiry
        while True:
            await asyncio.sleep(renewal_delay(issued, expiry, time.time(), fraction=self._renew_fraction))
            try:
                token, new_expiry = await provider.get_token(self.address.audience, self._token_ttl)
            except Exception as exc:  # noqa: BLE001 - application code and network faults must not stop the listener
                self._log.warning("token renewal failed: %s; retrying", exc)
                issued, expiry = time.time(), time.time() + 10.0
                continue
            if token == channel.token and new_expiry <= expiry:
                self._log.warning("the token provider cannot renew its token; it expires at %d", int(expiry))
                return
            # §2.5: the raw token, not URL-encoded.
            await channel.send(encode(RenewToken(token)))
            channel.token = token
            issued, expiry = time.time(), new_expiry
            self._log.debug("token renewed until %d", int(expiry))

    # -- WebSocket senders (spec §2.2, §2.6) ------------------------------------------------------

    async def _handle_accept(self, accept: Accept) -> None:
        context = AcceptContext.from_accept(accept, self.entity)
        rejection: tuple[int, str] | None = None
        if self.accept_handler is not None:
            try:
                decision = self.accept_handler(context)
                if inspect.isawaitable(decision):
                    decision = await decision
                rejection = normalise_decision(decision)
            except Exception:  # noqa: BLE001 - application code and network faults must not stop the listener
                self._log.exception("accept handler failed for %s", accept.id)
                rejection = (500, "Accept handler failed")
        if rejection is not None:
            await self._reject(accept, *rejection)
            return
        try:
            ws = await self._open_rendezvous(
                accept.address, "accept", subprotocols=[context.subprotocol] if context.subprotocol else None
            )
        except Exception as exc:  # noqa: BLE001 - application code and network faults must not stop the listener
            self._log.warning("accept %s failed: %s", accept.id, exc)
            return
        conn = RelayedConnection(ws, tracking_id=accept.id, context=context)
        if self.connection_handler is not None:
            await self._run_connection_handler(conn)
        else:
            self._accepted.put_nowait(conn)

    async def _run_connection_handler(self, conn: RelayedConnection) -> None:
        assert self.connection_handler is not None
        try:
            await self.connection_handler(conn)
        except Exception:  # noqa: BLE001 - application code and network faults must not stop the listener
            self._log.exception("connection handler failed for %s", conn.tracking_id)
            await conn.close(1011, "listener error")

    async def _reject(self, accept: Accept, status: int, description: str) -> None:
        """Open the accept address with the rejection parameters; the gateway answers 410 Gone (spec §2.6)."""
        url = reject_url(accept.address, status, description)
        try:
            ws = await self._open_rendezvous(url, "reject")
        except RelayError as exc:
            cause = exc.__cause__
            if isinstance(cause, InvalidStatus) and cause.response.status_code == 410:
                self._log.debug("rejected %s with %d", accept.id, status)
                return
            self._log.warning("reject %s: the gateway answered %s, expected 410", accept.id, exc)
            return
        except Exception as exc:  # noqa: BLE001 - application code and network faults must not stop the listener
            self._log.warning("reject %s failed: %s", accept.id, exc)
            return
        self._log.warning("reject %s: the gateway accepted the rejection handshake instead of answering 410", accept.id)
        await ws.close(1000)

    async def _open_rendezvous(
        self, url: str, what: str, *, subprotocols: Sequence[str] | None = None, max_size: int | None = None
    ) -> ClientConnection:
        # Rendezvous addresses carry their own credential: no token (spec §3.4).
        return await open_websocket(
            url,
            what=what,
            subprotocols=subprotocols,
            ssl=self._ssl,
            proxy=self._proxy,
            open_timeout=min(self._open_timeout, 20.0),  # .NET AcceptTimeout is 20 s (spec §2.9)
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            max_size=max_size if max_size is not None else self._max_message_size,
        )

    # -- HTTP (spec §2.3, §2.4, §2.7) -------------------------------------------------------------

    async def _invoke(self, request: RelayedHttpRequest) -> RelayedHttpResponse:
        handler = self.request_handler
        if handler is None:
            return RelayedHttpResponse(501, "RequestHandler has not been configured", {}, b"")
        try:
            result = await handler(request)
        except Exception:  # noqa: BLE001 - application code and network faults must not stop the listener
            self._log.exception("request handler failed for %s", request.id)
            return RelayedHttpResponse(500, "Internal Server Error", {}, b"")
        if isinstance(result, RelayedHttpResponse):
            return result
        if result is None:
            return RelayedHttpResponse(204)
        if isinstance(result, (bytes, bytearray, memoryview, str)):
            return RelayedHttpResponse(200, body=result)
        self._log.error("request handler returned %s; answering 500", type(result).__name__)
        return RelayedHttpResponse(500, "Internal Server Error", {}, b"")

    async def _handle_inline_request(self, message: Request, body: bytes, channel: _ControlChannel) -> None:
        request = RelayedHttpRequest.from_message(message, entity=self.entity, body=body)
        result = await self._invoke(request)
        plan = await plan_response(
            message.id, result, head=request.method.upper() == "HEAD", flush_timeout=self._flush_timeout
        )
        if plan.inline:
            try:
                await channel.send_with_body(encode(plan.response), plan.body if plan.response.body else None)
                self._log.debug("request %s: %d answered inline", message.id, result.status)
                return
            except WsConnectionClosed:
                # The control channel went away meanwhile; the rendezvous address still works (spec §2.7).
                self._log.info("request %s: control channel closed, answering over a rendezvous", message.id)
        try:
            await self._respond_over_rendezvous(message.address, plan)
        finally:
            plan.cancel()

    async def _respond_over_rendezvous(self, address: str, plan: ResponsePlan) -> None:
        """Listener-initiated rendezvous: JSON then the body as one fragmented binary message (spec §2.7)."""
        try:
            ws = await self._open_rendezvous(address, "request")
        except Exception as exc:  # noqa: BLE001 - application code and network faults must not stop the listener
            self._log.warning("response rendezvous %s failed: %s", address, exc)
            return
        try:
            await self._send_response(ws, plan)
            await ws.close(1000, "NormalClosure")
            self._log.debug("request %s answered over a rendezvous", plan.response.request_id)
        except WsConnectionClosed as exc:
            self._log.warning("response rendezvous closed early: %s", exc)

    @staticmethod
    async def _send_response(ws: ClientConnection, plan: ResponsePlan) -> None:
        await ws.send(encode(plan.response))
        if not plan.response.body:
            return
        if plan.inline:
            await ws.send(plan.body or b"")
        else:
            assert plan.stream is not None
            await ws.send(at_least_one_fragment(plan.stream))

    async def _handle_rendezvous_request(self, message: Request) -> None:
        """Gateway-initiated rendezvous: the full request and its body arrive there, and the answer goes there."""
        try:
            ws = await self._open_rendezvous(message.address, "request", max_size=None)
        except Exception as exc:  # noqa: BLE001 - application code and network faults must not stop the listener
            self._log.warning("request rendezvous %s failed: %s", message.id, exc)
            return
        try:
            first = await ws.recv()
            parsed = parse_message(first) if isinstance(first, str) else None
            if not isinstance(parsed, Request) or not parsed.inline:
                raise ProtocolError("the first message on a request rendezvous must be a full request")
            body_source = _rendezvous_body(ws) if parsed.body else None
            request = RelayedHttpRequest.from_message(parsed, entity=self.entity, body=body_source, rendezvous=True)
            result = await self._invoke(request)
            plan = await plan_response(
                parsed.id, result, head=request.method.upper() == "HEAD", flush_timeout=self._flush_timeout
            )
            try:
                await self._send_response(ws, plan)
            finally:
                plan.cancel()
            # Read what the application left unread so the closing handshake is not stuck behind it.
            await asyncio.wait_for(request.body.drain(), 30)
            await ws.close(1000, "NormalClosure")
        except WsConnectionClosed as exc:
            self._log.warning("request rendezvous %s closed early: %s", message.id, exc)
        except (TimeoutError, RelayError) as exc:
            self._log.warning("request rendezvous %s: %s", message.id, exc)
            await ws.close(1008 if isinstance(exc, ProtocolError) else 1011, str(exc)[:120])
        finally:
            if ws.close_code is None:
                await ws.close(1011)


async def _rendezvous_body(ws: ClientConnection) -> AsyncIterator[bytes]:
    """The request body: one (possibly fragmented) binary message, yielded fragment by fragment (spec §2.1)."""
    async for fragment in ws.recv_streaming(decode=False):
        yield fragment

