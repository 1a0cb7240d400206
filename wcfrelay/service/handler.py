"""What an endpoint of a :class:`~wcfrelay.service.host.RelayServiceHost` runs for each request.

An endpoint's *handler* is either a Spyne application (:class:`SpyneHandler` around a
:class:`~wcfrelay.service.spyne_app.SpyneBytesApp`) or a forwarder to an existing HTTP service
(:class:`wcfrelay.service.forward.SoapForwarder`). The host's transports (the listener link of the legacy bindings,
and relayed HTTP and SOAP-over-WebSocket on a hybrid connection) hand every request to the handler in the same
shape, :class:`ServiceRequest`, and send back the :class:`~wcfrelay.service.spyne_app.SoapResult` it returns.

A service method running for a message that came over a hybrid WebSocket can call its caller back:
:func:`callback_channel` returns that socket's :class:`~wcfrelay.service.websocket.CallbackChannel` (None for
calls that came over HTTP or a listener link).
"""

from __future__ import annotations

import abc
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hybrid.client.http import RelayedHttpRequest, RelayedHttpResponse
from hybrid.errors import ConfigError, PayloadTooLarge, RelayError
from wcfrelay import soap
from wcfrelay.service.spyne_app import SoapResult, SpyneBytesApp

if TYPE_CHECKING:
    from wcfrelay.bindings import RelayBinding
    from wcfrelay.service.websocket import CallbackChannel

__all__ = [
    "EndpointHandler",
    "HandlerResult",
    "Runner",
    "ServiceRequest",
    "SpyneHandler",
    "callback_channel",
    "error_result",
    "header_value",
    "read_bounded",
    "response_headers",
    "run_service_request",
]

log = logging.getLogger("wcfrelay.host")

#: runs a synchronous function on the host's thread pool: ``await run(func, *args)``
Runner = Callable[..., Awaitable[Any]]

_CURRENT_CALLBACKS: contextvars.ContextVar[CallbackChannel | None] = contextvars.ContextVar(
    "wcfrelay_callback_channel", default=None)


def callback_channel() -> CallbackChannel | None:
    """The callback channel to the caller of the operation now running, or None.

    Call it inside a Spyne service method: when the request arrived as a message on a hybrid WebSocket
    (:class:`~wcfrelay.bindings.HybridConnectionRelayBinding`), the result sends one-way SOAP messages back to that
    caller over the same socket (``channel.send(action, body)``), also while the call is still in progress.
    """
    return _CURRENT_CALLBACKS.get()


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


@dataclass
class ServiceRequest:
    """One request for an endpoint, whichever way it came in.

    ``path`` is what follows the endpoint's path (``/`` for the endpoint itself), percent-encoded as on the wire,
    ``query`` the raw query string without ``?``, ``public_url`` the endpoint's address as callers see it (``http(s)://gateway/{endpoint path}``).
    ``callbacks`` is the caller's socket for SOAP over a hybrid WebSocket, else None.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    public_url: str
    content_type: str | None = None
    soap_action: str | None = None
    callbacks: CallbackChannel | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            self.path = "/" + self.path
        if self.content_type is None:
            self.content_type = header_value(self.headers, "Content-Type") or ""
        if self.soap_action is None:
            self.soap_action = header_value(self.headers, "SOAPAction")


@dataclass(frozen=True)
class HandlerResult(SoapResult):
    """A :class:`SoapResult` with more response headers than the content type (a forwarded service's)."""

    headers: Mapping[str, str] = field(default_factory=dict)


def error_result(version: soap.SoapVersion | None, error: RelayError, *, keep_status: bool) -> SoapResult:
    """An error found outside the service, in the endpoint's wire format (SOAP fault, or JSON without SOAP)."""
    if version is None:
        import json

        body = json.dumps({"faultcode": ("Client." if error.http_status < 500 else "Server.") + error.code,
                           "faultstring": error.reason, "detail": None}).encode()
        return SoapResult(error.http_status, "application/json; charset=utf-8", body)
    fault = soap.relay_error_fault(version, error, keep_http_status=keep_status)
    return SoapResult(fault.status, fault.content_type, fault.body)


def response_headers(result: SoapResult) -> dict[str, str]:
    """The headers to answer ``result`` with: its own (a :class:`HandlerResult`'s) and its content type."""
    headers = dict(getattr(result, "headers", None) or {})
    if result.content_type:
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        headers["Content-Type"] = result.content_type
    return headers


async def read_bounded(request: RelayedHttpRequest, limit: int) -> bytes | None:
    """The whole request body, or None once it passes ``limit`` bytes (the rest is left unread)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def run_service_request(app: SpyneBytesApp, request: ServiceRequest) -> SoapResult:
    """Run one request through a Spyne application (synchronous; on the host's thread pool). Never raises.

    While the service method runs, :func:`callback_channel` returns ``request.callbacks``.
    """
    token = _CURRENT_CALLBACKS.set(request.callbacks)
    try:
        return app.handle(
            request.body,
            content_type=request.content_type or "",
            soap_action=request.soap_action,
            http_method=request.method,
            query_string=request.query,
            path=request.path,
            public_url=request.public_url,
            headers=request.headers,
        )
    except RelayError as exc:  # e.g. ?wsdl on a WebHttp endpoint (404), a malformed public URL (400)
        return error_result(app.soap_version, exc, keep_status=request.method.upper() != "POST")
    except Exception:  # a bug must become a fault, never a dead endpoint
        log.exception("the service failed on a request to %s", request.path)
        return error_result(app.soap_version, RelayError("the service failed to process the request"),
                            keep_status=False)
    finally:
        _CURRENT_CALLBACKS.reset(token)


class EndpointHandler(abc.ABC):
    """What an endpoint runs for each request. Subclass it to serve requests some other way than Spyne.

    ``handle`` gets the whole request and returns the whole answer (the listener link, and SOAP over a hybrid
    WebSocket, carry complete messages); ``handle_http`` serves a relayed HTTP request on a hybrid connection and
    may stream (the default reads the body up to the endpoint's limit and calls ``handle``).
    """

    #: the Spyne protocol the binding must fit (``"soap11"``, ``"soap12"``, ``"http"``), or None for any
    protocol: str | None = None
    #: whether a one-way binding (NetOneway, NetEvent) may carry this handler
    supports_one_way: bool = False

    @property
    def soap_version(self) -> soap.SoapVersion | None:
        """The SOAP version of errors made outside the handler (None: JSON errors)."""
        return {"soap11": soap.SoapVersion.SOAP11, "soap12": soap.SoapVersion.SOAP12}.get(self.protocol or "")

    def attach(self, binding: RelayBinding) -> None:
        """Called once by ``add_endpoint``: refuse (ConfigError) a binding this handler cannot serve."""
        if self.protocol is not None:
            binding.check_protocol(self.protocol)
        if binding.one_way and not self.supports_one_way:
            raise ConfigError(f"{type(self).__name__} cannot serve the one-way binding {binding.name}")

    @abc.abstractmethod
    async def handle(self, request: ServiceRequest, run: Runner) -> SoapResult:
        """Answer one complete request; never raise for a request's own problems (answer a fault instead)."""

    async def handle_http(self, request: RelayedHttpRequest, *, path: str, public_url: str, max_message: int,
                          run: Runner) -> RelayedHttpResponse:
        """Answer a relayed HTTP request on a hybrid connection (``path``: what follows the endpoint's path)."""
        body = await read_bounded(request, max_message)
        if body is None:
            error = PayloadTooLarge(f"the request is larger than this endpoint's limit of {max_message} bytes "
                                    "(max_received_message_size)")
            result = error_result(self.soap_version, error, keep_status=True)
        else:
            service_request = ServiceRequest(method=request.method, path=path, query=request.query,
                                             headers=dict(request.headers), body=body, public_url=public_url)
            result = await self.handle(service_request, run)
        return RelayedHttpResponse(result.status, headers=response_headers(result), body=result.body)

    async def aclose(self) -> None:
        """Release what the handler holds (called when the host closes)."""


class SpyneHandler(EndpointHandler):
    """A Spyne application as an endpoint handler: each request runs on the host's thread pool."""

    supports_one_way = True

    def __init__(self, app: SpyneBytesApp) -> None:
        self.app = app
        self.protocol = app.protocol

    @property
    def soap_version(self) -> soap.SoapVersion | None:
        return self.app.soap_version

    async def handle(self, request: ServiceRequest, run: Runner) -> SoapResult:
        return await run(run_service_request, self.app, request)

    def __repr__(self) -> str:
        return f"SpyneHandler({self.app.application.name!r}, {self.protocol})"
