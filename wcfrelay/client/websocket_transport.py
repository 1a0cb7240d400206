"""SOAP over one hybrid WebSocket, for zeep: many calls in flight on one socket, and callbacks from the service.

The open-standards counterpart of NetTcpRelayBinding. :class:`HybridWebSocketTransport` is a
``zeep.transports.AsyncTransport`` (for ``zeep.AsyncClient``) that opens ONE Hybrid Connections sender WebSocket
(:meth:`hybrid.client.HybridConnectionClient.connect`) to an endpoint hosted with
:class:`~wcfrelay.bindings.HybridConnectionRelayBinding` and sends every SOAP envelope as a text message:

* each call gets a WS-Addressing ``MessageID`` (added when the envelope lacks one) and its answer is the message
  whose ``RelatesTo`` names it, so any number of calls can be in flight at once and answered in any order;
* messages from the service that relate to no call (``RelatesTo`` absent) are callbacks of a duplex contract: they
  go to ``callbacks``, a Spyne application for the callback contract, a ``{action: handler}`` mapping, or one
  handler for all (plain functions run on the event loop; coroutine functions as tasks);
* the WSDL is loaded over relayed HTTP from the same hybrid connection (``http(s)://gateway/{path}?wsdl``), with
  the Send token, as :class:`~wcfrelay.client.aiohttp_transport.AiohttpTransport` does.

::

    client = hybrid_websocket_zeep_client("https://relay.example.com/calculator?wsdl", connection_string=send_cs,
                                          callbacks={"http://tempuri.org/ICalculatorDuplex/Equation": on_equation})
    async with client:
        results = await asyncio.gather(*(client.service.Add(i, i) for i in range(100)))   # one socket

:func:`hybrid_websocket_zeep_client` builds the ``zeep.AsyncClient`` (``sync=True``: a ``zeep.Client`` on
:class:`SyncHybridWebSocketTransport`, which runs the async transport on a private event loop thread).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl as ssl_module
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import zeep
from lxml import etree
from zeep.transports import Transport
from zeep.wsdl.utils import etree_to_string

from hybrid.auth import ConnectionString
from hybrid.client.connection import RelayedConnection
from hybrid.client.sender import HybridConnectionClient
from hybrid.client.tokens import DEFAULT_TOKEN_TTL, TokenProvider, token_provider_from_connection_string
from hybrid.errors import ConfigError, ConnectionClosed, RelayError, RelayTimeout
from wcfrelay import soap, soap_ws
from wcfrelay.client.aiohttp_transport import AiohttpTransport
from wcfrelay.client.tokens import RelayToken, TokenSource, audience_for

__all__ = [
    "CallbackMessage",
    "Callbacks",
    "HybridWebSocketTransport",
    "SyncHybridWebSocketTransport",
    "hybrid_websocket_zeep_client",
]

log = logging.getLogger("wcfrelay.client")

DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024


@dataclass(frozen=True)
class CallbackMessage:
    """A message the service sent on its own (a callback): its Action, MessageID and parsed envelope."""

    action: str | None
    message_id: str | None
    envelope: soap.Envelope
    data: bytes

    @property
    def body(self) -> etree._Element | None:
        """The Body's first element (the callback operation's wrapper in document/literal)."""
        return self.envelope.body_element


CallbackHandler = Callable[[CallbackMessage], Any]
#: a Spyne Application / SpyneBytesApp for the callback contract, {action: handler} (``"*"`` for the rest), or one
#: handler for every callback
Callbacks = Any


def _action_of(headers: Mapping[str, str] | None) -> str | None:
    """The SOAP action zeep put in the HTTP headers (SOAPAction for 1.1, the content type's action for 1.2)."""
    for key, value in (headers or {}).items():
        lowered = key.lower()
        if lowered == "soapaction" and value.strip().strip('"'):
            return value.strip().strip('"')
        if lowered == "content-type":
            for item in value.split(";")[1:]:
                name, _, val = item.partition("=")
                if name.strip().lower() == "action" and val.strip().strip('"'):
                    return val.strip().strip('"')
    return None


class _Dispatcher:
    """Hands callbacks to the application's handler(s)."""

    def __init__(self, callbacks: Callbacks) -> None:
        self.spyne: Any = None
        self.by_action: dict[str, CallbackHandler] = {}
        self.default: CallbackHandler | None = None
        if callbacks is None:
            return
        if isinstance(callbacks, Mapping):
            self.by_action = {str(k): v for k, v in callbacks.items() if k != "*"}
            self.default = callbacks.get("*")
            return
        if hasattr(callbacks, "handle") and hasattr(callbacks, "protocol"):  # a SpyneBytesApp
            self.spyne = callbacks
            return
        if hasattr(callbacks, "in_protocol") and hasattr(callbacks, "interface"):  # a spyne Application
            from wcfrelay.service.spyne_app import SpyneBytesApp

            self.spyne = SpyneBytesApp(callbacks, ws_addressing=False)
            return
        if callable(callbacks):
            self.default = callbacks
            return
        raise ConfigError("callbacks must be a Spyne Application (or SpyneBytesApp), a mapping of wsa:Action to "
                          f"handler, or one handler, not {type(callbacks).__name__}")

    async def dispatch(self, message: CallbackMessage) -> None:
        if self.spyne is not None:
            result = await asyncio.to_thread(self.spyne.handle, message.data,
                                             content_type=message.envelope.version.content_type,
                                             soap_action=message.action)
            if result.status >= 400:
                log.warning("the callback handler failed on %s (%d): %r", message.action, result.status,
                            result.body[:300])
            return
        handler = self.by_action.get(message.action or "", self.default)
        if handler is None:
            log.warning("no handler for the callback %s; dropped", message.action)
            return
        result = handler(message)
        if inspect.isawaitable(result):
            await result


class HybridWebSocketTransport(AiohttpTransport):
    """``zeep.transports.AsyncTransport`` carrying SOAP envelopes on one hybrid WebSocket (see the module docstring).

    ``client`` is the :class:`~hybrid.client.HybridConnectionClient` of the endpoint's hybrid connection (``suffix``
    and ``query`` go into the sender URL). ``token`` (a :class:`~wcfrelay.client.tokens.RelayToken`) authorizes the
    WSDL download over relayed HTTP. ``operation_timeout`` (seconds, None for none) bounds each call;
    ``max_in_flight`` bounds the calls waiting on the socket (further calls wait for a slot).

    The socket is opened on first use (or with :meth:`connect`); if it is lost, calls in flight fail with
    :class:`~hybrid.errors.ConnectionClosed` and the next call opens a new one.
    """

    def __init__(
        self,
        client: HybridConnectionClient,
        *,
        suffix: str = "",
        query: str = "",
        callbacks: Callbacks = None,
        token: RelayToken | None = None,
        timeout: float = 300,
        operation_timeout: float | None = 60.0,
        max_in_flight: int = 1000,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        verify_ssl: bool | ssl_module.SSLContext = True,
        wsdl_session: requests.Session | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ConfigError("max_in_flight must be at least 1")
        super().__init__(None, token=token, timeout=timeout, operation_timeout=operation_timeout,
                         verify_ssl=verify_ssl, wsdl_session=wsdl_session)
        self.client = client
        self.suffix = suffix
        self.query = query
        self.max_in_flight = max_in_flight
        self.max_message_size = max_message_size
        self.dispatcher = _Dispatcher(callbacks)
        #: how many sockets were opened, calls answered, callbacks received
        self.connections_opened = 0
        self.calls = 0
        self.callbacks_received = 0
        self._conn: RelayedConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[tuple[bytes, soap.Envelope]]] = {}
        self._lock: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None
        self._callback_tasks: set[asyncio.Task[Any]] = set()

    @property
    def connection(self) -> RelayedConnection | None:
        """The open WebSocket, if any."""
        return self._conn if self._conn is not None and not self._conn.closed else None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def connect(self) -> RelayedConnection:
        """The open WebSocket, opened now if there is none."""
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._slots = asyncio.Semaphore(self.max_in_flight)
        async with self._lock:
            conn = self.connection
            if conn is not None:
                return conn
            conn = await self.client.connect(self.suffix, self.query)
            self._conn = conn
            self.connections_opened += 1
            self._reader = asyncio.create_task(self._read(conn), name="soap-ws-reader")
            return conn

    async def _read(self, conn: RelayedConnection) -> None:
        error: BaseException = ConnectionClosed("the SOAP WebSocket closed")
        try:
            while True:
                raw = await conn.recv()
                data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
                try:
                    envelope = soap.parse_envelope(data, max_size=self.max_message_size)
                except RelayError as exc:
                    log.warning("ignoring an unreadable message from the service: %s", exc)
                    continue
                route = soap_ws.correlation(envelope)
                if route.relates_to is not None:
                    future = self._pending.pop(route.relates_to, None)
                    if future is not None and not future.done():
                        future.set_result((data, envelope))
                    else:
                        log.info("dropping an answer to %s: no call is waiting for it", route.relates_to)
                    continue
                self.callbacks_received += 1
                message = CallbackMessage(route.action, route.message_id, envelope, data)
                task = asyncio.ensure_future(self._callback(message))
                self._callback_tasks.add(task)
                task.add_done_callback(self._callback_tasks.discard)
        except ConnectionClosed as exc:
            error = exc
        except asyncio.CancelledError:
            error = ConnectionClosed("the transport was closed")
            raise
        finally:
            if self._conn is conn:
                self._conn = None
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(ConnectionClosed(f"the SOAP WebSocket was lost before the answer came: "
                                                          f"{error}"))

    async def _callback(self, message: CallbackMessage) -> None:
        try:
            await self.dispatcher.dispatch(message)
        except Exception:
            log.exception("the callback handler failed on %s", message.action)

    # -- zeep's transport interface -----------------------------------------------------------------

    async def post_xml(self, address: str, envelope: Any, headers: dict) -> requests.Response:
        """Send one envelope (an lxml element from zeep) and wait for the message that relates to it."""
        message_id = soap_ws.ensure_addressing(envelope, action=_action_of(headers))
        data = etree_to_string(envelope)
        return await self._call(address, message_id, data)

    async def post(self, address: str, message: bytes | str, headers: dict) -> requests.Response:
        """A ready envelope: parsed (hardened), given a MessageID, sent as :meth:`post_xml` does."""
        data = message.encode("utf-8") if isinstance(message, str) else message
        envelope = soap.parse_envelope(data, max_size=self.max_message_size)
        return await self.post_xml(address, envelope.root, headers)

    async def _call(self, address: str, message_id: str, data: bytes) -> requests.Response:
        conn = await self.connect()
        assert self._slots is not None
        async with self._slots:
            if message_id in self._pending:
                raise ConfigError(f"a call with MessageID {message_id!r} is already in flight on this socket")
            future: asyncio.Future[tuple[bytes, soap.Envelope]] = asyncio.get_running_loop().create_future()
            self._pending[message_id] = future
            try:
                await conn.send(data.decode("utf-8"))
                if self.operation_timeout is None:
                    reply, envelope = await future
                else:
                    try:
                        reply, envelope = await asyncio.wait_for(future, self.operation_timeout)
                    except TimeoutError:
                        raise RelayTimeout(f"no answer to {message_id} within {self.operation_timeout} s") from None
            finally:
                self._pending.pop(message_id, None)
        self.calls += 1
        if soap_ws.is_ack(envelope):
            return self._response(202, {}, b"", address, None)
        status = 500 if envelope.is_fault else 200
        return self._response(status, {"Content-Type": envelope.version.content_type}, reply, address, "utf-8")

    async def aclose(self) -> None:
        """Close the WebSocket (calls in flight fail with ConnectionClosed) and the HTTP sessions."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                await conn.close(1000, "done")
            except Exception as exc:  # noqa: BLE001 - closing anyway
                log.debug("closing the SOAP WebSocket: %s", exc)
        if self._reader is not None:
            if not self._reader.done():
                try:
                    await asyncio.wait_for(asyncio.shield(self._reader), 5)
                except (TimeoutError, asyncio.CancelledError):
                    self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        tasks = list(self._callback_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.close()
        await super().aclose()


class SyncHybridWebSocketTransport(Transport):
    """A ``zeep.transports.Transport`` (for the synchronous ``zeep.Client``) over a
    :class:`HybridWebSocketTransport` running on a private event loop thread. Callbacks run on that thread.
    Close it with :meth:`close` (``zeep.Client`` used as a context manager does)."""

    def __init__(self, transport: HybridWebSocketTransport) -> None:
        super().__init__(session=transport.wsdl_session, timeout=transport.load_timeout,
                         operation_timeout=transport.operation_timeout)
        self.transport = transport
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="soap-ws-transport", daemon=True)
        self._thread.start()

    def _run(self, coro: Awaitable[Any]) -> Any:
        if self._loop.is_closed():
            raise ConnectionClosed("the transport is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def connect(self) -> RelayedConnection:
        return self._run(self.transport.connect())

    def post_xml(self, address: str, envelope: Any, headers: dict) -> requests.Response:
        return self._run(self.transport.post_xml(address, envelope, headers))

    def post(self, address: str, message: bytes | str, headers: dict) -> requests.Response:
        return self._run(self.transport.post(address, message, headers))

    def load(self, url: str) -> bytes:
        return self.transport.load(url)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self.transport.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def hybrid_websocket_zeep_client(
    wsdl_address: str,
    *,
    connection_string: str | ConnectionString | None = None,
    token_provider: TokenProvider | None = None,
    entity_path: str | None = None,
    suffix: str = "",
    callbacks: Callbacks = None,
    sync: bool = False,
    tls: bool | None = None,
    ssl: ssl_module.SSLContext | None = None,
    token_ttl: float = DEFAULT_TOKEN_TTL,
    operation_timeout: float | None = 60.0,
    max_in_flight: int = 1000,
    max_message_size: int = DEFAULT_MAX_MESSAGE,
    **zeep_kwargs: Any,
) -> zeep.AsyncClient | zeep.Client:
    """A zeep client for an endpoint on a hybrid connection, calling over one hybrid WebSocket.

    ``wsdl_address`` is the endpoint's relayed HTTP URL with ``?wsdl`` (``https://gateway/{path}?wsdl``): the WSDL
    is loaded from there, and the hybrid connection is its path (or ``entity_path``). Credentials: a connection
    string (its key signs tokens for this gateway) or a :class:`~hybrid.client.tokens.TokenProvider`; neither means
    anonymous (hybrid connections that do not require client authorization). TLS follows the URL's scheme unless
    ``tls`` says otherwise. Returns a ``zeep.AsyncClient`` (close it with ``async with`` or
    ``await client.transport.aclose()``), or with ``sync=True`` a ``zeep.Client`` (``client.transport.close()``).
    """
    if "transport" in zeep_kwargs:
        raise ConfigError("hybrid_websocket_zeep_client builds its own transport")
    if connection_string is not None and token_provider is not None:
        raise ConfigError("give a connection string or a token provider, not both")
    parts = urlsplit(wsdl_address.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the WSDL address must be an http(s) URL of the relayed endpoint, not {wsdl_address!r}")
    entity = entity_path or "/".join(unquote(s) for s in parts.path.split("/") if s)
    if entity.lower().endswith(".wsdl"):
        entity = entity.rpartition("/")[0]
    if not entity:
        raise ConfigError("the WSDL address names no hybrid connection (no path) and entity_path is not given")
    provider: TokenSource | None = token_provider
    if connection_string is not None:
        cs = connection_string if isinstance(connection_string, ConnectionString) \
            else ConnectionString.parse(connection_string)
        provider = token_provider_from_connection_string(cs)
    use_tls = (parts.scheme == "https") if tls is None else tls
    sender = HybridConnectionClient(f"sb://{parts.netloc.rpartition('@')[2]}/{entity}", provider,  # type: ignore[arg-type]
                                    tls=use_tls, ssl=ssl, token_ttl=token_ttl, max_message_size=max_message_size)
    token = RelayToken(provider, audience_for(wsdl_address), ttl=token_ttl)
    transport = HybridWebSocketTransport(sender, suffix=suffix, callbacks=callbacks, token=token,
                                         operation_timeout=operation_timeout, max_in_flight=max_in_flight,
                                         max_message_size=max_message_size,
                                         verify_ssl=ssl if ssl is not None else True)
    if sync:
        sync_transport = SyncHybridWebSocketTransport(transport)
        client: zeep.AsyncClient | zeep.Client = zeep.Client(wsdl_address, transport=sync_transport, **zeep_kwargs)
    else:
        client = zeep.AsyncClient(wsdl_address, transport=transport, **zeep_kwargs)
    client.relay_token = token  # type: ignore[attr-defined,union-attr]
    return client
