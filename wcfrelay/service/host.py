"""``RelayServiceHost``: host Spyne services behind the gateway, WCF ``ServiceHost`` style (asyncio).

The host dials *out*: one WebSocket (the listener link, :mod:`wcfrelay.link`) per endpoint to
``ws(s)://gateway/$wcf/{path}?{registration}`` with a Listen token in ``ServiceBusAuthorization``. The gateway
sends each caller's request as a ``call`` link message; the host runs it through the endpoint's
:class:`~wcfrelay.service.spyne_app.SpyneBytesApp` on a bounded thread pool (Spyne is synchronous) and sends
the ``reply``. Calls are independent tasks, so one slow operation never holds up the others. One-way calls
(NetOneway, NetEvent) are acknowledged with ``ack`` first and run afterwards.

::

    host = RelayServiceHost(connection_string)
    host.add_endpoint(make_application("soap11"), "calculator", BasicHttpRelayBinding(),
                      ServiceRegistrySettings("public", "Calculator"))
    async with host:
        await host.wait_closed()

An endpoint whose binding is :class:`~wcfrelay.bindings.HybridConnectionRelayBinding` has no link: the host runs a
:class:`~hybrid.client.HybridConnectionListener` on the hybrid connection named by its path instead
(:class:`HybridEndpoint`). Relayed HTTP requests (``POST http(s)://gateway/{path}``, ``GET …?wsdl``) reach the
same service as on a legacy binding, and hybrid WebSocket senders carry SOAP envelopes as messages, many calls at
once, with callbacks to the caller (:mod:`wcfrelay.service.websocket`). Legacy and hybrid endpoints can serve one
service side by side in one host.

An endpoint's handler is a Spyne application or any :class:`~wcfrelay.service.handler.EndpointHandler`, such as
:class:`~wcfrelay.service.forward.SoapForwarder`, which forwards every request to an existing HTTP service.

Connection status follows WCF's ``IConnectionStatus``: ``status`` is Online, Connecting or Offline,
``last_error`` keeps the latest failure, and ``on_online`` / ``on_connecting`` / ``on_offline`` are called on each
change (for the whole host; each :class:`RelayEndpoint` has its own too). A lost link is re-established with
exponential backoff (1 s doubling to 60 s by default, as the WCF ``RelayConnectionStatus`` sample does); a refusal
that retrying cannot fix (400 bad registration, 401/403 unauthorized or over quota, 404 no such endpoint, 409 the
address is registered with another binding) takes the endpoint Offline for good. Tokens are renewed with
``renewToken`` before they expire.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import re
import signal
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Self
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidStatus

from hybrid.auth import ConnectionString
from hybrid.client._transport import USER_AGENT, send_binary, shut_down
from hybrid.client.connection import RelayedConnection
from hybrid.client.http import RelayedHttpRequest, RelayedHttpResponse
from hybrid.client.listener import AcceptContext, HybridConnectionListener
from hybrid.client.status import ListenerStatus, translate_connect_error
from hybrid.client.tokens import (
    DEFAULT_TOKEN_TTL,
    SharedAccessSignatureTokenProvider,
    TokenProvider,
    renewal_delay,
    token_provider_from_connection_string,
)
from hybrid.errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequest,
    ConfigError,
    ConnectionClosed,
    EndpointNotFound,
    PayloadTooLarge,
    ProtocolError,
    RelayError,
)
from wcfrelay import link, soap
from wcfrelay.bindings import (
    BasicHttpRelayBinding,
    HybridConnectionRelayBinding,
    RelayBinding,
    ServiceRegistrySettings,
    link_message_limit,
)
from wcfrelay.service.handler import (
    EndpointHandler,
    ServiceRequest,
    SpyneHandler,
    error_result,
    header_value,
    response_headers,
)
from wcfrelay.service.spyne_app import SoapResult, SpyneBytesApp
from wcfrelay.service.websocket import CallbackChannel, SoapWebSocketSession, hard_message_limit

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "AddressAlreadyInUse",
    "Backoff",
    "ConnectionStatus",
    "HybridEndpoint",
    "RelayEndpoint",
    "RelayServiceHost",
    "aggregate_status",
    "is_permanent",
    "link_refusal",
    "link_url",
    "precheck_one_way",
    "reconnect_ladder",
    "run_call",
    "split_address",
    "via_public_base",
]

log = logging.getLogger("wcfrelay.host")

#: Online / Connecting / Offline, the names of WCF's ``IConnectionStatus`` events.
ConnectionStatus = ListenerStatus
StatusCallback = Callable[[], Any]

#: the WCF ``RelayConnectionStatus`` sample's backoff: 1 s, doubling, at most 60 s
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 60.0
#: a link that stayed up this long counts as healthy: the next outage starts the backoff from the beginning
STABLE_AFTER = 5.0
#: handshake refusals that retrying cannot fix
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 409})


class AddressAlreadyInUse(RelayError):
    """The address is already registered with another binding (WCF ``AddressAlreadyInUseException``)."""

    http_status = 409
    close_code = 1008
    code = "AddressAlreadyInUse"


# ------------------------------------------------------------------------------------------------- pure parts


class Backoff:
    """Exponential reconnect delays: ``initial``, doubling, capped at ``maximum``; ``reset()`` after a success."""

    def __init__(self, initial: float = DEFAULT_BACKOFF_INITIAL, maximum: float = DEFAULT_BACKOFF_MAX,
                 factor: float = 2.0) -> None:
        if initial < 0 or maximum < initial or factor < 1:
            raise ConfigError("backoff needs 0 <= initial <= maximum and factor >= 1")
        self.initial = float(initial)
        self.maximum = float(maximum)
        self.factor = float(factor)
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * self.factor ** min(self._attempt, 64))
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0


def aggregate_status(statuses: Iterable[ConnectionStatus]) -> ConnectionStatus:
    """The host's status from its endpoints': Connecting if any is, else Offline if any is (or none exist),
    else Online."""
    values = list(statuses)
    if not values:
        return ConnectionStatus.OFFLINE
    if ConnectionStatus.CONNECTING in values:
        return ConnectionStatus.CONNECTING
    if ConnectionStatus.OFFLINE in values:
        return ConnectionStatus.OFFLINE
    return ConnectionStatus.ONLINE


_REFUSALS: dict[int, type[RelayError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: AuthorizationError,
    404: EndpointNotFound,
    409: AddressAlreadyInUse,
    413: PayloadTooLarge,
}


def link_refusal(status: int, reason: str = "", body: bytes = b"") -> RelayError:
    """The error for a gateway that refused the link handshake with HTTP ``status``.

    The message holds the status, the reason phrase and the start of the body (the gateway explains there).
    ``error.permanent`` says whether retrying is pointless (400, 401, 403, 404, 409).
    """
    cls = _REFUSALS.get(status, RelayError)
    text = body[:300].decode("utf-8", errors="replace").strip().replace("\r", " ").replace("\n", " ")
    message = f"the gateway refused the link: {status} {reason}".strip()
    if text and text != reason:
        message += f" ({text})"
    error = cls(message, http_status=status)
    error.permanent = status in PERMANENT_STATUSES  # type: ignore[attr-defined]
    return error


def is_permanent(error: BaseException | None) -> bool:
    """True for a link refusal retrying cannot fix (WCF: RelayNotFound, AuthorizationFailed, AddressAlreadyInUse)."""
    return bool(getattr(error, "permanent", False))


_TLS_SCHEMES = {"sb": True, "wss": True, "https": True, "ws": False, "http": False}


def split_address(address: str, base: str | None = None) -> tuple[str, str, bool]:
    """``(authority, path, tls)`` for an endpoint address.

    ``address`` is ``sb://host[:port]/path`` (also ws/wss/http/https) or a bare ``path`` resolved against
    ``base`` (the connection string's ``Endpoint``). TLS follows the scheme: ``sb``, ``wss`` and ``https`` mean TLS.
    """
    text = address.strip()
    if "://" not in text:
        if not base:
            raise ConfigError(f"endpoint address {address!r} is a bare path, and there is no connection string "
                              "Endpoint (or endpoint=) to resolve it against")
        base_parts = urlsplit(base.strip())
        prefix = [s for s in base_parts.path.split("/") if s]
        text = f"{base_parts.scheme}://{base_parts.netloc}/" + "/".join(prefix + [s for s in text.split("/") if s])
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _TLS_SCHEMES or not parts.hostname:
        raise ConfigError(f"endpoint address must look like sb://host[:port]/path or be a path, not {address!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"endpoint address has an invalid port: {address!r}") from None
    if parts.query or parts.fragment:
        raise ConfigError(f"endpoint address must not have a query or fragment: {address!r}")
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ConfigError(f"endpoint address {address!r} names no path")
    if segments[0].startswith("$"):
        raise ConfigError(f"endpoint paths must not start with '$' (reserved by the gateway): {address!r}")
    return parts.netloc.rpartition("@")[2], "/".join(segments), _TLS_SCHEMES[scheme]


def link_url(authority: str, path: str, registration: link.Registration, *, tls: bool) -> str:
    """``ws(s)://authority/$wcf/{path}?{registration}``."""
    scheme = "wss" if tls else "ws"
    return f"{scheme}://{authority}{link.LINK_PREFIX}{quote(path, safe='/')}?{registration.to_query()}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _error_result(app: SpyneBytesApp, error: RelayError, *, keep_status: bool) -> SoapResult:
    """An error found outside Spyne, in the endpoint's wire format (SOAP fault, or JSON for WebHttp)."""
    version = app.soap_version
    if version is None:
        import json

        body = json.dumps({"faultcode": ("Client." if error.http_status < 500 else "Server.") + error.code,
                           "faultstring": error.reason, "detail": None}).encode()
        return SoapResult(error.http_status, "application/json; charset=utf-8", body)
    fault = soap.relay_error_fault(version, error, keep_http_status=keep_status)
    return SoapResult(fault.status, fault.content_type, fault.body)


def run_call(app: SpyneBytesApp, call: link.Call, body: bytes) -> SoapResult:
    """Run one link call through ``app`` (synchronous; the host runs it on its thread pool). Never raises."""
    path = call.path if call.path.startswith("/") else "/" + call.path
    try:
        return app.handle(
            body,
            content_type=_header(call.headers, "Content-Type") or "",
            soap_action=_header(call.headers, "SOAPAction"),
            http_method=call.method,
            query_string=call.query,
            path=path,
            public_url=call.public_url,
            headers=call.headers,
        )
    except RelayError as exc:  # e.g. ?wsdl on a WebHttp endpoint (404), a malformed public URL (400)
        return _error_result(app, exc, keep_status=call.method.upper() != "POST")
    except Exception:  # a bug must become a fault, never a dead link
        log.exception("the service failed on a call to %s", path)
        return _error_result(app, RelayError("the service failed to process the request"), keep_status=False)


def precheck_one_way(app: SpyneBytesApp, call: link.Call, body: bytes) -> SoapResult | None:
    """A fault to answer *instead of* acknowledging a one-way SOAP message that can never run, else None.

    The checks are the ones SpyneBytesApp makes before Spyne runs (well-formed and safe XML, SOAP version,
    mustUnderstand, known operation), so a broken message reaches its sender as a fault rather than a silent
    202. Fast (one parse of at most 64 KB); runs on the host's thread pool.
    """
    version = app.soap_version
    if version is None or call.method.upper() != "POST":
        return None
    try:
        envelope = soap.parse_envelope(body, max_size=app.max_request_size)
    except RelayError as exc:
        return _error_result(app, exc, keep_status=False)
    refusal = soap.check_version(envelope, version) or soap.check_must_understand(envelope, app.understood_headers)
    if refusal is None:
        qname = envelope.body_qname
        if qname is None or qname.text not in app.application.interface.service_method_map:
            refusal = soap.fault_response(
                envelope.version, soap.FaultCode.SENDER,
                "the SOAP Body is empty" if qname is None else f"this endpoint has no operation for body element "
                f"{qname.text}", subcode="EmptyBody" if qname is None else "OperationNotFound")
    if refusal is None:
        return None
    return SoapResult(refusal.status, refusal.content_type, refusal.body)


def bound_reply(app: SpyneBytesApp, result: SoapResult, max_message: int) -> SoapResult:
    """``result``, or a Receiver fault when its body exceeds the binding's message size (the gateway would drop it)."""
    return _bound(app.soap_version, result, max_message)


def _bound(version: soap.SoapVersion | None, result: SoapResult, max_message: int) -> SoapResult:
    if len(result.body) <= max_message:
        return result
    error = PayloadTooLarge(f"the service's response is {len(result.body)} bytes; this endpoint's limit is "
                            f"{max_message} (max_received_message_size)")
    error.http_status = 500
    return error_result(version, error, keep_status=False)


def reconnect_ladder(initial: float, maximum: float, factor: float = 2.0) -> tuple[float, ...]:
    """The host's backoff (``initial`` doubling up to ``maximum``) as a listener's reconnect ladder."""
    backoff = Backoff(initial, maximum, factor)
    delays = [backoff.next_delay()]
    while delays[-1] < maximum and len(delays) < 64:
        delays.append(backoff.next_delay())
    return tuple(delays)


#: characters a path keeps when it is percent-encoded again (RFC 3986 pchar and "/")
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
_HOST_PORT = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def via_public_base(headers: Mapping[str, str], *, tls: bool) -> str | None:
    """``http(s)://host[:port]`` the caller used, from the ``Via`` entry the gateway appends (its last one).

    The gateway adds ``1.1 {Host}`` after whatever the caller sent, so the last entry is the gateway's own; None
    when there is no such entry or it does not look like ``host[:port]``.
    """
    via = header_value(headers, "Via")
    if not via:
        return None
    last = via.rsplit(",", 1)[-1].split()
    if len(last) < 2 or not _HOST_PORT.fullmatch(last[1]):
        return None
    return f"{'https' if tls else 'http'}://{last[1]}"


# ------------------------------------------------------------------------------------------------- endpoints


class _Link:
    """One open link WebSocket and the token it was opened with."""

    def __init__(self, ws: ClientConnection, token: str | None, issued_at: float, expiry: float) -> None:
        self.ws = ws
        self.token = token
        self.issued_at = issued_at
        self.expiry = expiry
        self.opened_at = time.monotonic()


class _Endpoint:
    """What every endpoint kind has: address, binding, handler, and a connection status with callbacks."""

    def __init__(self, host: RelayServiceHost, handler: EndpointHandler, authority: str, path: str, tls: bool,
                 binding: RelayBinding, registry: ServiceRegistrySettings | None) -> None:
        self.host = host
        #: what runs each request: a SpyneHandler, a SoapForwarder, …
        self.handler = handler
        #: the Spyne application (None when the handler is not Spyne, e.g. a forwarder)
        self.app: SpyneBytesApp | None = handler.app if isinstance(handler, SpyneHandler) else None
        self.authority = authority
        self.path = path
        self.tls = tls
        self.binding = binding
        self.registry = registry or ServiceRegistrySettings()
        self.on_online: StatusCallback | None = None
        self.on_connecting: StatusCallback | None = None
        self.on_offline: StatusCallback | None = None
        self._status = ConnectionStatus.OFFLINE
        self._last_error: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- public surface -------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``sb://authority/path``."""
        return f"sb://{self.authority}/{quote(self.path, safe='/')}"

    @property
    def audience(self) -> str:
        """The SAS audience of this endpoint: ``http://authority/path``."""
        return f"http://{self.authority}/{quote(self.path, safe='/')}"

    @property
    def http_url(self) -> str:
        """Where callers reach this endpoint, assuming the gateway's public address is the one the host dials."""
        return f"{'https' if self.tls else 'http'}://{self.authority}/{quote(self.path, safe='/')}"

    @property
    def status(self) -> ConnectionStatus:
        return self._status

    @property
    def is_online(self) -> bool:
        return self._status is ConnectionStatus.ONLINE

    @property
    def last_error(self) -> BaseException | None:
        return self._last_error

    @property
    def calls_in_flight(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r}, {self.binding.name}, status={self._status.value})"

    # -- status ---------------------------------------------------------------------------------------

    def _set_status(self, status: ConnectionStatus) -> None:
        if status is self._status:
            return
        self._status = status
        log.info("%s: %s", self.address, status.value)
        _fire({ConnectionStatus.ONLINE: self.on_online, ConnectionStatus.CONNECTING: self.on_connecting,
               ConnectionStatus.OFFLINE: self.on_offline}[status], self._spawn)
        self.host._endpoint_status_changed(self)

    def _spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError


class RelayEndpoint(_Endpoint):
    """One legacy-binding endpoint of a :class:`RelayServiceHost`: address, binding, service, and its link's status."""

    def __init__(self, host: RelayServiceHost, handler: EndpointHandler | SpyneBytesApp, authority: str, path: str,
                 tls: bool, binding: RelayBinding, registry: ServiceRegistrySettings | None) -> None:
        if isinstance(handler, SpyneBytesApp):
            handler = SpyneHandler(handler)
        super().__init__(host, handler, authority, path, tls, binding, registry)
        self.registration = binding.registration(path, self.registry)
        #: how many link handshakes were attempted, renewals sent, and ``error`` messages the gateway sent
        self.connect_attempts = 0
        self.renewals = 0
        self.link_errors: list[link.LinkError] = []
        self._link: _Link | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._backoff = host._new_backoff()

    @property
    def url(self) -> str:
        """The link URL this endpoint opens."""
        return link_url(self.authority, self.path, self.registration, tls=self.tls)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def _open(self) -> None:
        self._backoff.reset()
        self._set_status(ConnectionStatus.CONNECTING)
        try:
            channel = await self._connect()
        except BaseException as exc:
            self._last_error = exc
            self._set_status(ConnectionStatus.OFFLINE)
            raise
        self._set_status(ConnectionStatus.ONLINE)
        self._run_task = asyncio.create_task(self._run(channel), name=f"wcf-link-{self.path}")

    async def _close(self) -> None:
        channel = self._link
        await shut_down(channel.ws if channel is not None else None, "host closed", self._run_task, self._tasks)
        self._run_task = None
        self._link = None
        self._set_status(ConnectionStatus.OFFLINE)

    async def _connect(self) -> _Link:
        host = self.host
        headers: dict[str, str] = {}
        token: str | None = None
        issued = time.time()
        expiry = float("inf")
        if host.token_provider is not None:
            token, expiry = await host.token_provider.get_token(self.audience, host.token_ttl)
            headers["ServiceBusAuthorization"] = token
        options: dict[str, Any] = {
            "additional_headers": headers,
            "compression": None,  # link messages are opaque SOAP bytes; the gateway never deflates
            "user_agent_header": USER_AGENT,
            "proxy": host.proxy,
            "open_timeout": host.open_timeout,
            "ping_interval": host.ping_interval,
            "ping_timeout": host.ping_timeout,
            "max_size": link_message_limit(self.binding.max_message),
        }
        if self.tls and host.ssl is not None:
            options["ssl"] = host.ssl
        self.connect_attempts += 1
        try:
            ws = await connect(self.url, **options)
        except InvalidStatus as exc:
            response = exc.response
            raise link_refusal(response.status_code, response.reason_phrase, bytes(response.body or b"")) from exc
        except Exception as exc:
            translated = translate_connect_error(exc, "link")
            if translated is exc:
                raise
            raise translated from exc
        channel = _Link(ws, token, issued, expiry)
        self._link = channel
        return channel

    async def _run(self, channel: _Link) -> None:
        """Serve the link; when it is lost, reconnect with backoff until closed or refused for good."""
        while True:
            error = await self._serve(channel)
            self._link = None
            if self.host._closing:
                return
            self._last_error = error
            self.host._last_error = error
            log.warning("%s: link lost: %s", self.address, error)
            if time.monotonic() - channel.opened_at >= self.host.stable_after:
                self._backoff.reset()
            self._set_status(ConnectionStatus.CONNECTING)
            next_channel = await self._reconnect()
            if next_channel is None:
                return
            channel = next_channel
            self._set_status(ConnectionStatus.ONLINE)

    async def _reconnect(self) -> _Link | None:
        while not self.host._closing:
            await asyncio.sleep(self._backoff.next_delay())
            if self.host._closing:
                return None
            try:
                return await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - network faults must not end the host
                self._last_error = exc
                self.host._last_error = exc
                if is_permanent(exc):
                    log.error("%s: giving up: %s", self.address, exc)
                    self._set_status(ConnectionStatus.OFFLINE)
                    self.host._endpoint_gave_up()
                    return None
                log.info("%s: reconnect failed (%s); retrying", self.address, exc)
        return None

    async def _serve(self, channel: _Link) -> BaseException:
        renew = asyncio.create_task(self._renew_loop(channel))
        limiter = self.host._limiter
        try:
            while True:
                raw = await channel.ws.recv()
                if isinstance(raw, str):
                    log.warning("%s: ignoring a text message on the link (link messages are binary)", self.address)
                    continue
                try:
                    message, body = link.decode(raw)
                except ProtocolError as exc:
                    log.warning("%s: ignoring a bad link message: %s", self.address, exc)
                    continue
                if isinstance(message, link.Call):
                    assert limiter is not None
                    # Backpressure: past the concurrency limit, stop reading so the gateway stops sending.
                    await limiter.acquire()
                    task = self._spawn(self._handle_call(channel, message, bytes(body)))
                    task.add_done_callback(lambda _t: limiter.release())
                elif isinstance(message, link.LinkError):
                    self.link_errors.append(message)
                    del self.link_errors[:-100]
                    log.warning("%s: the gateway reported an error%s: %s", self.address,
                                f" for call {message.id}" if message.id else "", message.message)
                else:
                    log.warning("%s: ignoring an unexpected %s link message", self.address, type(message).__name__)
        except WsConnectionClosed as exc:
            return _closed_error(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the host alive; reconnect instead
            log.exception("%s: link failed", self.address)
            await channel.ws.close(1011, "host error")
            return exc
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)

    async def _renew_loop(self, channel: _Link) -> None:
        """Send ``renewToken`` at ``renew_fraction`` of each token's lifetime."""
        provider = self.host.token_provider
        if provider is None or channel.expiry == float("inf"):
            return
        issued, expiry = channel.issued_at, channel.expiry
        while True:
            await asyncio.sleep(renewal_delay(issued, expiry, time.time(), fraction=self.host.renew_fraction))
            try:
                token, new_expiry = await provider.get_token(self.audience, self.host.token_ttl)
            except Exception as exc:  # noqa: BLE001 - a token service hiccup: retry soon
                log.warning("%s: token renewal failed: %s; retrying", self.address, exc)
                issued, expiry = time.time(), time.time() + 10.0
                continue
            if token == channel.token and new_expiry <= expiry:
                log.warning("%s: the token provider cannot renew its token; it expires at %d", self.address,
                            int(expiry))
                return
            await channel.ws.send(link.encode(link.RenewToken(token)))
            self.renewals += 1
            channel.token = token
            issued, expiry = time.time(), new_expiry
            log.debug("%s: token renewed until %d", self.address, int(expiry))

    # -- calls ----------------------------------------------------------------------------------------

    async def _handle_call(self, channel: _Link, call: link.Call, body: bytes) -> None:
        ws = channel.ws
        if self.app is None:
            # Another kind of handler (a forwarder): the whole request in, the whole answer out.
            # The gateway hands over the path decoded; handlers get it percent-encoded, as hybrid requests carry it.
            request = ServiceRequest(method=call.method, path=quote(call.path or "/", safe=_PATH_SAFE),
                                     query=call.query, headers=call.headers, body=body, public_url=call.public_url)
            result = await self.handler.handle(request, self.host._run_in_pool)
            await self._send_reply(ws, call, _bound(self.handler.soap_version, result, self.binding.max_message))
            return
        # A GET on a one-way endpoint (``?wsdl``) is no message to deliver: it is answered like any request.
        if call.one_way and call.method.upper() not in ("GET", "HEAD"):
            refusal = await self.host._run_in_pool(precheck_one_way, self.app, call, body)
            if refusal is not None:
                await self._send_reply(ws, call, refusal)
                return
            # The caller gets 202 as soon as a host has the message; the operation runs afterwards.
            try:
                await ws.send(link.encode(link.Ack(call.id)))
            except WsConnectionClosed:
                log.info("%s: link closed before call %s was acknowledged", self.address, call.id)
                return
            result = await self.host._run_in_pool(run_call, self.app, call, body)
            if result.status >= 400:
                log.warning("%s: one-way call %s failed (%d): %r", self.address, call.id, result.status,
                            result.body[:300])
            return
        result = await self.host._run_in_pool(run_call, self.app, call, body)
        await self._send_reply(ws, call, bound_reply(self.app, result, self.binding.max_message))

    async def _send_reply(self, ws: ClientConnection, call: link.Call, result: SoapResult) -> None:
        headers = response_headers(result)
        try:
            await send_binary(ws, link.encode(link.Reply(call.id, result.status, headers), result.body))
        except WsConnectionClosed:
            log.info("%s: link closed before the reply to call %s was sent", self.address, call.id)


class HybridEndpoint(_Endpoint):
    """An endpoint on a hybrid connection (:class:`~wcfrelay.bindings.HybridConnectionRelayBinding`).

    The host runs a :class:`~hybrid.client.HybridConnectionListener` on the hybrid connection named by ``path``
    (``listener`` once open). Relayed HTTP requests go to the handler as on a legacy binding (``GET …?wsdl`` gets
    the WSDL for ``http(s)://gateway/{path}``); each hybrid WebSocket sender gets a
    :class:`~wcfrelay.service.websocket.SoapWebSocketSession`. The endpoint's status follows the listener's
    Online/Connecting/Offline events; reconnects use the host's backoff as the listener's ladder, and a refusal
    the listener does not retry (404: no such hybrid connection) takes the endpoint Offline for good.
    """

    def __init__(self, host: RelayServiceHost, handler: EndpointHandler, authority: str, path: str, tls: bool,
                 binding: HybridConnectionRelayBinding, registry: ServiceRegistrySettings | None) -> None:
        super().__init__(host, handler, authority, path, tls, binding, registry)
        self.binding: HybridConnectionRelayBinding = binding
        self.listener: HybridConnectionListener | None = None
        #: the SOAP WebSocket sessions open now
        self.sessions: set[SoapWebSocketSession] = set()
        #: relayed HTTP requests and WebSocket connections served so far
        self.http_requests = 0
        self.websocket_connections = 0
        self._http_in_flight = 0
        self._was_online = False

    @property
    def url(self) -> str:
        """Where WebSocket senders connect: ``ws(s)://authority/$hc/{path}``."""
        return f"{'wss' if self.tls else 'ws'}://{self.authority}/$hc/{quote(self.path, safe='/')}"

    @property
    def calls_in_flight(self) -> int:
        return self._http_in_flight + sum(session.in_flight for session in self.sessions)

    @property
    def callback_channels(self) -> list[CallbackChannel]:
        """One :class:`~wcfrelay.service.websocket.CallbackChannel` per connected WebSocket caller (to push
        callbacks outside a call, e.g. to every caller)."""
        return [session.channel for session in self.sessions if not session.channel.closed]

    def public_url(self, headers: Mapping[str, str] | None = None) -> str:
        """``http(s)://gateway/{path}`` as callers see it: the host's ``public_url`` if set, else the address the
        caller used (the gateway's ``Via`` entry), else the address the host dials."""
        if self.host.public_url:
            base = self.host.public_url
        else:
            base = via_public_base(headers or {}, tls=self.tls) or f"{'https' if self.tls else 'http'}://{self.authority}"
        return f"{base.rstrip('/')}/{quote(self.path, safe='/')}"

    # -- lifecycle ------------------------------------------------------------------------------------

    def _make_listener(self) -> HybridConnectionListener:
        host = self.host
        return HybridConnectionListener(
            f"sb://{self.authority}/{self.path}",
            host.token_provider,
            tls=self.tls,
            ssl=host.ssl,
            accept_handler=self._accept,
            connection_handler=self._serve_connection,
            request_handler=self._serve_request,
            on_online=lambda: self._listener_status(ConnectionStatus.ONLINE),
            on_connecting=lambda: self._listener_status(ConnectionStatus.CONNECTING),
            on_offline=lambda: self._listener_status(ConnectionStatus.OFFLINE),
            reconnect_delays=reconnect_ladder(host.backoff_initial, host.backoff_max),
            token_ttl=host.token_ttl,
            renew_fraction=host.renew_fraction,
            ping_interval=host.ping_interval,
            ping_timeout=host.ping_timeout,
            open_timeout=host.open_timeout,
            max_message_size=hard_message_limit(self.binding.max_message),
            proxy=host.proxy,
        )

    def _listener_status(self, status: ConnectionStatus) -> None:
        listener = self.listener
        if listener is not None and listener.last_error is not None:
            self._last_error = listener.last_error
            if status is not ConnectionStatus.ONLINE:
                self.host._last_error = listener.last_error
        if status is ConnectionStatus.ONLINE:
            self._was_online = True
        self._set_status(status)
        if status is ConnectionStatus.OFFLINE and self._was_online and not self.host._closing:
            # The listener gave up (it retries everything but "no such hybrid connection").
            log.error("%s: giving up: %s", self.address, self._last_error)
            self.host._endpoint_gave_up()

    async def _open(self) -> None:
        self._set_status(ConnectionStatus.CONNECTING)
        self._was_online = False
        self.listener = self._make_listener()
        try:
            await self.listener.open()
        except BaseException as exc:
            self._last_error = exc
            self._set_status(ConnectionStatus.OFFLINE)
            raise

    async def _close(self) -> None:
        listener = self.listener
        if listener is not None:
            await listener.close()  # cancels its request and connection tasks
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.sessions.clear()
        self._set_status(ConnectionStatus.OFFLINE)

    # -- callers --------------------------------------------------------------------------------------

    def _accept(self, context: AcceptContext) -> bool | tuple[int, str]:
        if not self.binding.websocket:
            return 405, "this endpoint takes no WebSocket senders (HybridConnectionRelayBinding websocket=False)"
        return True

    async def _serve_connection(self, connection: RelayedConnection) -> None:
        self.websocket_connections += 1
        session = SoapWebSocketSession(
            connection, self.handler, self.host._run_in_pool,
            public_url=self.public_url(connection.context.connect_headers if connection.context else None),
            max_message=self.binding.max_message,
            max_in_flight=self.binding.max_calls_per_connection,
            limiter=self.host._limiter,
            label=f"{self.address} ws {connection.tracking_id}",
        )
        self.sessions.add(session)
        try:
            await session.serve()
        finally:
            self.sessions.discard(session)

    async def _serve_request(self, request: RelayedHttpRequest) -> RelayedHttpResponse:
        if not self.binding.http:
            return RelayedHttpResponse(405, body=b"this endpoint takes SOAP over WebSocket only",
                                       headers={"Content-Type": "text/plain; charset=utf-8"})
        self.http_requests += 1
        limiter = self.host._limiter
        if limiter is not None:
            await limiter.acquire()
        self._http_in_flight += 1
        try:
            return await self.handler.handle_http(
                request, path=request.suffix or "/", public_url=self.public_url(request.headers),
                max_message=self.binding.max_message, run=self.host._run_in_pool)
        finally:
            self._http_in_flight -= 1
            if limiter is not None:
                limiter.release()


def _closed_error(exc: WsConnectionClosed) -> ConnectionClosed:
    code = exc.rcvd.code if exc.rcvd is not None else (exc.sent.code if exc.sent is not None else 1006)
    reason = exc.rcvd.reason if exc.rcvd is not None else (exc.sent.reason if exc.sent is not None else "")
    error = ConnectionClosed(f"link closed ({code} {reason})".replace(" )", ")"))
    error.close_code = code
    error.close_reason = reason  # type: ignore[attr-defined]
    return error


def _fire(callback: StatusCallback | None, spawn: Callable[[Awaitable[Any]], Any]) -> None:
    if callback is None:
        return
    try:
        result = callback()
        if inspect.isawaitable(result):
            spawn(result)
    except Exception:  # application code must not stop the host
        log.exception("status callback failed")


# ------------------------------------------------------------------------------------------------- the host


def _check_public_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"public_url must be an absolute http(s) URL such as https://relay.example.com, "
                          f"not {value!r}")
    return value.strip().rstrip("/")


class RelayServiceHost:
    """Hosts Spyne services on relay endpoints. See the module docstring.

    Credentials: a connection string (``Endpoint=sb://host[:port]/;SharedAccessKeyName=…;SharedAccessKey=…``, its
    ``Endpoint`` also resolves bare endpoint paths) and/or a ``token_provider``
    (:class:`hybrid.client.tokens.TokenProvider`, or a ready SAS token string). ``tls=False`` talks plain
    ``ws://`` to a local gateway even for ``sb://`` addresses; ``ssl`` is an ``SSLContext`` for ``wss``.

    ``max_workers`` threads run Spyne; at most ``max_concurrent_calls`` calls are in flight (past that the host
    stops reading its links, so the gateway holds further calls). Reconnect delays start at ``backoff_initial``
    and double up to ``backoff_max``.

    ``public_url`` (``https://relay.example.com``) is the gateway's address as callers see it, for the WSDL of
    hybrid endpoints; by default it is the address the caller used (legacy endpoints get it from the gateway).
    """

    def __init__(
        self,
        connection_string: str | ConnectionString | None = None,
        *,
        token_provider: TokenProvider | str | None = None,
        endpoint: str | None = None,
        tls: bool | None = None,
        ssl: ssl_module.SSLContext | None = None,
        max_workers: int = 16,
        max_concurrent_calls: int = 256,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        stable_after: float = STABLE_AFTER,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        renew_fraction: float = 0.8,
        open_timeout: float = 30.0,
        ping_interval: float | None = 30.0,
        ping_timeout: float | None = 30.0,
        proxy: str | bool | None = True,
        public_url: str | None = None,
        on_online: StatusCallback | None = None,
        on_connecting: StatusCallback | None = None,
        on_offline: StatusCallback | None = None,
    ) -> None:
        cs: ConnectionString | None = None
        if connection_string is not None:
            cs = (connection_string if isinstance(connection_string, ConnectionString)
                  else ConnectionString.parse(connection_string))
        if isinstance(token_provider, str):
            token_provider = SharedAccessSignatureTokenProvider(token_provider)
        if token_provider is None and cs is not None:
            token_provider = token_provider_from_connection_string(cs)
        if token_provider is None:
            raise ConfigError("a relay host needs a Listen credential: a connection string with "
                              "SharedAccessKeyName/SharedAccessKey (or SharedAccessSignature), or a token_provider")
        if max_workers < 1 or max_concurrent_calls < 1:
            raise ConfigError("max_workers and max_concurrent_calls must be at least 1")
        if not 0.0 < renew_fraction < 1.0:
            raise ConfigError("renew_fraction must be between 0 and 1")
        Backoff(backoff_initial, backoff_max)  # validate
        self.connection_string = cs
        self.base_endpoint = endpoint or (cs.endpoint if cs is not None else None)
        self.default_entity = cs.entity_path if cs is not None else None
        self.token_provider: TokenProvider = token_provider
        self.tls = tls
        self.ssl = ssl
        self.max_workers = max_workers
        self.max_concurrent_calls = max_concurrent_calls
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.token_ttl = token_ttl
        self.renew_fraction = renew_fraction
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.proxy = proxy
        self.on_online = on_online
        self.on_connecting = on_connecting
        self.on_offline = on_offline
        self.public_url = _check_public_url(public_url)
        self.endpoints: list[RelayEndpoint | HybridEndpoint] = []
        self._status = ConnectionStatus.OFFLINE
        self._last_error: BaseException | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._limiter: asyncio.Semaphore | None = None
        self._closing = True
        self._opened = False
        self._stopped: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- configuration --------------------------------------------------------------------------------

    def add_endpoint(
        self,
        application: Any,
        address: str | None = None,
        binding: RelayBinding | None = None,
        registry: ServiceRegistrySettings | None = None,
    ) -> RelayEndpoint | HybridEndpoint:
        """Add an endpoint: a Spyne ``Application`` (or a ready :class:`SpyneBytesApp`, or any
        :class:`~wcfrelay.service.handler.EndpointHandler` such as a
        :class:`~wcfrelay.service.forward.SoapForwarder`) at ``address``.

        ``address`` is ``sb://host[:port]/path`` or a path resolved against the connection string's Endpoint
        (default: its EntityPath). ``binding`` defaults to :class:`BasicHttpRelayBinding`; the application's
        protocol must fit it (``soap11`` for BasicHttp, ``soap12`` for WS2007Http/NetOneway/NetEvent, ``http`` for
        WebHttp, ``soap12`` or ``soap11`` for HybridConnection). ``registry`` decides whether a legacy endpoint
        appears in the gateway's discovery feed (hybrid connections are never listed).

        A :class:`~wcfrelay.bindings.HybridConnectionRelayBinding` gives a :class:`HybridEndpoint` (a listener on the
        hybrid connection ``path``); every other binding a :class:`RelayEndpoint` (a listener link).
        """
        if self._opened:
            raise RuntimeError("add endpoints before opening the host")
        binding = binding or BasicHttpRelayBinding()
        if not isinstance(binding, RelayBinding):
            raise TypeError(f"binding must be a RelayBinding (BasicHttpRelayBinding(), …), not {binding!r}")
        address = address or self.default_entity
        if not address:
            raise ConfigError("give the endpoint an address (a path or sb://host[:port]/path)")
        authority, path, scheme_tls = split_address(address, self.base_endpoint)
        tls = scheme_tls if self.tls is None else self.tls
        handler = self._handler_for(application, binding, path)
        for other in self.endpoints:
            if (other.authority, other.path.lower()) == (authority, path.lower()):
                raise ConfigError(f"an endpoint at {path!r} is already added to this host")
        hybrid = isinstance(binding, HybridConnectionRelayBinding)
        for other in self.endpoints:
            legacy_path, hybrid_path = (other.path, path) if hybrid else (path, other.path)
            if (isinstance(other, HybridEndpoint) != hybrid and other.authority == authority
                    and hybrid_path.lower().startswith(legacy_path.lower() + "/")):
                log.warning("hybrid endpoint %r lies under legacy endpoint %r: the gateway routes relayed HTTP to the "
                            "legacy endpoint first, so only WebSocket senders reach the hybrid one; give it a path "
                            "of its own", hybrid_path, legacy_path)
        endpoint: RelayEndpoint | HybridEndpoint
        if hybrid:
            endpoint = HybridEndpoint(self, handler, authority, path, tls, binding, registry)  # type: ignore[arg-type]
        else:
            endpoint = RelayEndpoint(self, handler, authority, path, tls, binding, registry)
        self.endpoints.append(endpoint)
        return endpoint

    def _handler_for(self, application: Any, binding: RelayBinding, path: str) -> EndpointHandler:
        """The endpoint handler for what ``add_endpoint`` was given, checked against the binding."""
        if isinstance(application, EndpointHandler):
            application.attach(binding)
            return application
        if isinstance(application, SpyneBytesApp):
            app = application
            binding.check_protocol(app.protocol)
        else:
            from spyne import Application

            if not isinstance(application, Application):
                raise TypeError("application must be a spyne Application, a SpyneBytesApp or an EndpointHandler "
                                f"(e.g. a SoapForwarder), not {type(application).__name__}")
            probe = SpyneBytesApp(application, max_request_size=binding.max_message,
                                  ws_addressing=binding.ws_addressing)
            binding.check_protocol(probe.protocol)
            app = probe
        if binding.one_way:
            request_reply = sorted(
                f"{{{d.in_message.get_namespace()}}}{d.in_message.get_type_name()}"
                for d, *_ in app.application.interface.service_method_map.values() if not d.is_async
            )
            if request_reply:
                log.warning("%s on %s: request/reply operations %s get one-way semantics here (the caller gets 202, "
                            "the reply is discarded)", binding.name, path, ", ".join(request_reply))
        return SpyneHandler(app)

    # -- status ---------------------------------------------------------------------------------------

    @property
    def status(self) -> ConnectionStatus:
        """Online when every endpoint is, Connecting while any is (re)connecting, else Offline."""
        return self._status

    @property
    def is_online(self) -> bool:
        return self._status is ConnectionStatus.ONLINE

    @property
    def last_error(self) -> BaseException | None:
        """The latest link failure of any endpoint."""
        return self._last_error

    def _endpoint_status_changed(self, endpoint: _Endpoint) -> None:
        status = aggregate_status(e.status for e in self.endpoints)
        if status is self._status:
            return
        self._status = status
        _fire({ConnectionStatus.ONLINE: self.on_online, ConnectionStatus.CONNECTING: self.on_connecting,
               ConnectionStatus.OFFLINE: self.on_offline}[status], self._spawn)

    def _endpoint_gave_up(self) -> None:
        if self._stopped is not None and all(e.status is ConnectionStatus.OFFLINE for e in self.endpoints):
            self._stopped.set()

    def _spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _new_backoff(self) -> Backoff:
        return Backoff(self.backoff_initial, self.backoff_max)

    async def _run_in_pool(self, func: Callable[..., Any], *args: Any) -> Any:
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(func, *args))

    # -- lifecycle ------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open every endpoint's link. If any first attempt fails, all are closed and its error is raised
        (401 AuthenticationError, 403 AuthorizationError, 404 EndpointNotFound, 409 AddressAlreadyInUse,
        ConnectionClosed when the gateway is unreachable), as ``ServiceHost.Open`` faults in WCF."""
        if self._opened:
            raise RuntimeError("the host is already open")
        if not self.endpoints:
            raise ConfigError("the host has no endpoints; call add_endpoint first")
        self._opened = True
        self._closing = False
        self._stopped = asyncio.Event()
        self._limiter = asyncio.Semaphore(self.max_concurrent_calls)
        self._pool = concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="wcfrelay-call")
        for endpoint in self.endpoints:
            endpoint._set_status(ConnectionStatus.CONNECTING)
        results = await asyncio.gather(*(e._open() for e in self.endpoints), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self._last_error = failures[0]
            await self.close()
            raise failures[0]

    async def close(self) -> None:
        """Close every link (calls in flight are abandoned; the gateway answers their callers) and stop."""
        self._closing = True
        await asyncio.gather(*(e._close() for e in self.endpoints), return_exceptions=True)
        handlers = {id(e.handler): e.handler for e in self.endpoints}
        for handler in handlers.values():
            try:
                await handler.aclose()
            except Exception:
                log.exception("closing %r failed", handler)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._stopped is not None:
            self._stopped.set()
        self._opened = False

    async def wait_closed(self) -> None:
        """Wait until the host is closed, or every endpoint has given up (a permanent refusal)."""
        if self._stopped is None:
            return
        await self._stopped.wait()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Open, serve until Ctrl-C / SIGTERM (or until every endpoint gave up), close. Blocking; for scripts.

        Returns 0 after a requested stop, 1 when the host could not open or every endpoint gave up.
        """
        return asyncio.run(self._main(install_signal_handlers))

    async def _main(self, install_signal_handlers: bool) -> int:
        try:
            await self.open()
        except RelayError as exc:
            log.error("cannot open the host: %s", exc)
            return 1
        requested = asyncio.Event()
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, requested.set)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread / Windows
                    pass
        stopper = asyncio.ensure_future(requested.wait())
        closed = asyncio.ensure_future(self.wait_closed())
        try:
            await asyncio.wait({stopper, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            closed.cancel()
            await self.close()
        return 0 if requested.is_set() else 1

    def __repr__(self) -> str:
        return f"RelayServiceHost({[e.address for e in self.endpoints]!r}, status={self._status.value})"
