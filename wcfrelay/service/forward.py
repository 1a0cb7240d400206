"""Forward a relay endpoint to an existing HTTP service, unchanged: :class:`SoapForwarder`.

An on-premises SOAP service (WCF, ASMX, Java, anything that speaks SOAP over HTTP) is put behind the relay without
touching it: a :class:`~wcfrelay.service.host.RelayServiceHost` endpoint whose handler is a ``SoapForwarder`` sends
every request it gets to the service's local URL and the answer back. It works on the legacy bindings (the listener
link carries whole messages, up to the binding's ``max_received_message_size``) and on a hybrid connection
(:class:`~wcfrelay.bindings.HybridConnectionRelayBinding`: relayed HTTP bodies stream in both directions; SOAP
envelopes arriving on a hybrid WebSocket are POSTed one by one).

Request ``http(s)://gateway/{path}{/rest}?{query}`` goes to ``{target}{/rest}?{query}``: ``…/calc?wsdl`` to
``http://localhost:8080/Service.svc?wsdl``, ``…/calc?xsd=xsd0`` to ``…/Service.svc?xsd=xsd0``.

Metadata names the service's local address, which callers cannot reach. In answers to GET requests that are WSDL
or XML Schema documents, every address that points into the service is rewritten to the relay's public address:
``soap:address``/``soap12:address``/``http:address`` ``location``, ``wsa:Address`` (WS-Addressing 1.0 and 2004/08)
inside ``wsdl:port`` endpoint references, ``wsdl:import location``, and ``xsd:import``/``xsd:include``/
``xsd:redefine`` ``schemaLocation`` (their ``?xsd=xsd0`` / ``?wsdl=wsdl0`` queries kept). An address points into
the service when its path starts with the target's path and its host or port is the target's (WCF writes the
machine name where the target says ``localhost``). Documents are parsed with the hardened parser of
:mod:`wcfrelay.soap` (no DTD, no entities, no network). Everything else passes through untouched.

The service's own faults reach callers as they are. When the service cannot be reached the caller gets HTTP 502
(504 after ``timeout``) with a SOAP fault in the caller's SOAP version (subcode ``ServiceUnreachable`` /
``ServiceTimeout``), or plain text for non-SOAP requests; the local address is logged, never sent to callers.
"""

from __future__ import annotations

import logging
import ssl as ssl_module
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from lxml import etree
from yarl import URL

from hybrid.client.http import RelayedHttpRequest, RelayedHttpResponse
from hybrid.errors import ConfigError, PayloadTooLarge, RelayError
from wcfrelay import soap
from wcfrelay.service.handler import (
    EndpointHandler,
    HandlerResult,
    Runner,
    ServiceRequest,
    header_value,
)
from wcfrelay.service.spyne_app import SoapResult, parse_content_type

__all__ = [
    "DEFAULT_MAX_METADATA",
    "ServiceTimeout",
    "ServiceUnreachable",
    "SoapForwarder",
    "check_target",
    "map_address",
    "rewrite_metadata",
]

log = logging.getLogger("wcfrelay.forward")

#: WSDL and XSD documents larger than this pass through unrewritten
DEFAULT_MAX_METADATA = 16 * 1024 * 1024
_CHUNK = 64 * 1024

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL20_NS = "http://www.w3.org/ns/wsdl"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
_ADDRESS_ELEMENTS = {
    "{http://schemas.xmlsoap.org/wsdl/soap/}address": "location",
    "{http://schemas.xmlsoap.org/wsdl/soap12/}address": "location",
    "{http://schemas.xmlsoap.org/wsdl/http/}address": "location",
    f"{{{WSDL_NS}}}import": "location",
    f"{{{XSD_NS}}}import": "schemaLocation",
    f"{{{XSD_NS}}}include": "schemaLocation",
    f"{{{XSD_NS}}}redefine": "schemaLocation",
    f"{{{WSDL20_NS}}}endpoint": "address",
    f"{{{WSDL20_NS}}}import": "location",
    f"{{{WSDL20_NS}}}include": "location",
}
_WSA_ADDRESSES = frozenset({
    "{http://www.w3.org/2005/08/addressing}Address",
    "{http://schemas.xmlsoap.org/ws/2004/08/addressing}Address",
})
_PORTS = frozenset({f"{{{WSDL_NS}}}port", f"{{{WSDL20_NS}}}endpoint"})
_METADATA_ROOTS = frozenset({f"{{{WSDL_NS}}}definitions", f"{{{WSDL20_NS}}}description", f"{{{XSD_NS}}}schema"})
_XML_MEDIA = frozenset({"text/xml", "application/xml", "application/wsdl+xml", "application/xsd+xml"})

#: request headers never forwarded (hop-by-hop, recomputed, or the relay's own)
_DROP_REQUEST = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding",
    "servicebusauthorization",
})
#: response headers never passed back (aiohttp decodes compressed bodies; lengths are recomputed)
_DROP_RESPONSE = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "content-length", "content-encoding",
})


class ServiceUnreachable(RelayError):
    """The forwarded service refused the connection, is down, or broke the exchange."""

    http_status = 502
    code = "ServiceUnreachable"


class ServiceTimeout(RelayError):
    """The forwarded service did not answer in time."""

    http_status = 504
    code = "ServiceTimeout"


def check_target(target: str) -> str:
    """The service URL, checked: absolute ``http(s)://host[:port][/path]``, no query, fragment or credentials."""
    text = (target or "").strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the service URL must be an absolute http:// or https:// URL such as "
                          f"http://localhost:8080/Service.svc, not {target!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"the service URL has an invalid port: {target!r}") from None
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ConfigError(f"the service URL must not have a query or fragment (requests keep theirs): {target!r}")
    if parts.username or parts.password:
        raise ConfigError("the service URL must not carry credentials")
    if any(c in text for c in " \t\r\n"):
        raise ConfigError(f"the service URL must not contain whitespace: {target!r}")
    return text.rstrip("/") if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}"


def _port(parts: Any) -> int | None:
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None


def map_address(url: str, target: str, public: str) -> str | None:
    """``url`` moved from the service's ``target`` address to the relay's ``public`` one, or None if it does not
    point into the service (relative, elsewhere, or another scheme)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    base = urlsplit(target)
    base_path = base.path.rstrip("/")
    path = parts.path
    lowered = path.lower()
    if base_path and not (lowered == base_path.lower() or lowered.startswith(base_path.lower() + "/")):
        return None
    same_host = (parts.hostname or "").lower() == (base.hostname or "").lower()
    if not same_host and _port(parts) != _port(base):
        return None
    rest = path[len(base_path):]
    mapped = public.rstrip("/") + rest
    if parts.query:
        mapped += "?" + parts.query
    return mapped


def rewrite_metadata(document: bytes, target: str, public: str, *, max_size: int = DEFAULT_MAX_METADATA
                     ) -> tuple[bytes, int] | None:
    """A WSDL or XSD document with its addresses moved from ``target`` to ``public`` (see the module docstring).

    Returns ``(document, count of addresses rewritten)``, or None when ``document`` is not WSDL/XSD (or not
    readable safely); the caller then passes the original through.
    """
    try:
        root = soap._parse_xml(document, max_size=max_size)
    except RelayError:
        return None
    if root.tag not in _METADATA_ROOTS:
        return None
    count = 0
    for element in root.iter():
        tag = element.tag
        if not isinstance(tag, str):
            continue
        attribute = _ADDRESS_ELEMENTS.get(tag)
        if attribute is not None:
            value = element.get(attribute)
            mapped = map_address(value, target, public) if value else None
            if mapped is not None and mapped != value:
                element.set(attribute, mapped)
                count += 1
        elif tag in _WSA_ADDRESSES and _inside_port(element):
            value = (element.text or "").strip()
            mapped = map_address(value, target, public) if value else None
            if mapped is not None and mapped != value:
                element.text = mapped
                count += 1
    encoding = root.getroottree().docinfo.encoding or "UTF-8"
    return etree.tostring(root, encoding=encoding, xml_declaration=True), count


def _inside_port(element: etree._Element) -> bool:
    parent = element.getparent()
    while parent is not None:
        if parent.tag in _PORTS:
            return True
        parent = parent.getparent()
    return False


def _request_version(content_type: str | None, default: soap.SoapVersion | None) -> soap.SoapVersion | None:
    media, _ = parse_content_type(content_type)
    if media == "application/soap+xml":
        return soap.SoapVersion.SOAP12
    if media in ("text/xml", "application/xml"):
        return soap.SoapVersion.SOAP11
    return default


class SoapForwarder(EndpointHandler):
    """An endpoint handler that forwards every request to the HTTP service at ``target`` (module docstring).

    ``timeout`` bounds the wait for the service's answer (connect: ``connect_timeout``); ``rewrite_metadata``
    turns the WSDL/XSD address rewriting off; ``ssl`` is passed to aiohttp for an ``https`` target (False skips
    verification). ``soap_version`` (``"1.1"``/``"1.2"``) is the version of faults for requests whose content type
    says none; by default the binding's. ``session`` may be an ``aiohttp.ClientSession`` of your own.
    """

    supports_one_way = False

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        rewrite_metadata: bool = True,
        max_metadata_size: int = DEFAULT_MAX_METADATA,
        ssl: ssl_module.SSLContext | bool | None = None,
        soap_version: str | None = None,
        session: aiohttp.ClientSession | None = None,
        limit: int = 100,
    ) -> None:
        self.target = check_target(target)
        if timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("timeout and connect_timeout must be positive")
        if max_metadata_size < 1 or limit < 1:
            raise ConfigError("max_metadata_size and limit must be at least 1")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.rewrite = rewrite_metadata
        self.max_metadata_size = max_metadata_size
        self.ssl = ssl
        self.limit = limit
        self._version: soap.SoapVersion | None = None
        if soap_version is not None:
            try:
                self._version = soap.SoapVersion(str(soap_version))
            except ValueError:
                raise ConfigError(f"soap_version must be '1.1' or '1.2', not {soap_version!r}") from None
        self._fixed_version = self._version is not None
        self._session = session
        self._own_session = session is None
        self._max_message = 16 * 1024 * 1024
        #: requests forwarded, and metadata documents rewritten
        self.forwarded = 0
        self.rewritten = 0

    def __repr__(self) -> str:
        return f"SoapForwarder({self.target!r})"

    @property
    def soap_version(self) -> soap.SoapVersion | None:
        return self._version

    def attach(self, binding: Any) -> None:
        super().attach(binding)
        self._max_message = binding.max_message
        if not self._fixed_version:
            self._version = {"soap11": soap.SoapVersion.SOAP11, "soap12": soap.SoapVersion.SOAP12}.get(
                binding.protocol)

    def target_url(self, path: str, query: str) -> str:
        """The service URL for a request to ``{endpoint}{path}?{query}`` (``path`` as received, percent-encoded)."""
        rest = "" if path in ("", "/") else (path if path.startswith("/") else "/" + path)
        url = self.target + rest
        return f"{url}?{query}" if query else url

    # -- plumbing -----------------------------------------------------------------------------------

    def _session_now(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            if not self._own_session:
                raise RuntimeError("the aiohttp session given to SoapForwarder is closed")
            connector = aiohttp.TCPConnector(limit=self.limit, ssl=self.ssl if self.ssl is not None else True)
            session = self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                                            skip_auto_headers=("User-Agent",))
        return session

    async def aclose(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    def _headers(self, headers: Mapping[str, str], public_url: str) -> dict[str, str]:
        out = {k: v for k, v in headers.items() if k.lower() not in _DROP_REQUEST}
        public = urlsplit(public_url)
        out["X-Forwarded-Host"] = public.netloc
        out["X-Forwarded-Proto"] = public.scheme
        return out

    def _response_headers(self, headers: Any, public_url: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in headers.items():
            lowered = name.lower()
            if lowered in _DROP_RESPONSE:
                continue
            if lowered == "location":
                value = map_address(value, self.target, public_url) or value
            out[name] = value if name not in out else f"{out[name]}, {value}"
        return out

    async def _send(self, method: str, url: str, headers: Mapping[str, str], data: Any) -> aiohttp.ClientResponse:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=self.timeout)
        try:
            response = await self._session_now().request(method, URL(url, encoded=True), headers=dict(headers),
                                                          data=data, allow_redirects=False, timeout=timeout)
        except TimeoutError:
            log.warning("forward %s %s: no answer within %.0f s", method, url, self.timeout)
            raise ServiceTimeout(f"the service behind this endpoint did not answer within {self.timeout:g} s") \
                from None
        except aiohttp.ClientError as exc:
            log.warning("forward %s %s: %s: %s", method, url, type(exc).__name__, exc)
            raise ServiceUnreachable(f"the service behind this endpoint cannot be reached ({_why(exc)})") from None
        self.forwarded += 1
        return response

    def _error(self, error: RelayError, method: str, content_type: str | None) -> HandlerResult:
        version = _request_version(content_type, self._version) if method.upper() == "POST" else None
        if version is None:
            return HandlerResult(error.http_status, "text/plain; charset=utf-8",
                                 f"{error.http_status} {error.reason}\n".encode())
        fault = soap.relay_error_fault(version, error, keep_http_status=True)
        return HandlerResult(fault.status, fault.content_type, fault.body)

    def _wants_rewrite(self, method: str, response: aiohttp.ClientResponse) -> bool:
        if not self.rewrite or method.upper() != "GET" or response.status != 200:
            return False
        media, _ = parse_content_type(response.headers.get("Content-Type"))
        return media in _XML_MEDIA

    def _rewritten(self, body: bytes, public_url: str) -> bytes:
        result = rewrite_metadata(body, self.target, public_url, max_size=self.max_metadata_size)
        if result is None:
            return body
        document, count = result
        if count:
            self.rewritten += 1
        return document

    # -- EndpointHandler --------------------------------------------------------------------------

    async def handle(self, request: ServiceRequest, run: Runner) -> SoapResult:
        """A whole request (listener link, SOAP WebSocket message): forward it, read the whole answer."""
        url = self.target_url(request.path, request.query)
        headers = self._headers(request.headers, request.public_url)
        if request.soap_action is not None and header_value(headers, "SOAPAction") is None \
                and _request_version(request.content_type, None) is soap.SoapVersion.SOAP11:
            headers["SOAPAction"] = f'"{request.soap_action}"'
        if request.content_type and header_value(headers, "Content-Type") is None:
            headers["Content-Type"] = request.content_type
        data = request.body if request.body or request.method.upper() not in ("GET", "HEAD") else None
        try:
            response = await self._send(request.method, url, headers, data)
        except RelayError as exc:
            return self._error(exc, request.method, request.content_type)
        async with response:
            try:
                body, complete = await _read_at_most(response, self._max_message)
            except ServiceUnreachable as exc:
                return self._error(exc, request.method, request.content_type)
            if not complete:
                error = PayloadTooLarge(f"the service's answer is larger than this endpoint's limit of "
                                        f"{self._max_message} bytes (max_received_message_size)")
                error.http_status = 502
                return self._error(error, request.method, request.content_type)
            if self._wants_rewrite(request.method, response) and len(body) <= self.max_metadata_size:
                body = self._rewritten(body, request.public_url)
            content_type = response.headers.get("Content-Type", "")
            headers_out = self._response_headers(response.headers, request.public_url)
            return HandlerResult(response.status, content_type, body, headers=headers_out)

    async def handle_http(self, request: RelayedHttpRequest, *, path: str, public_url: str, max_message: int,
                          run: Runner) -> RelayedHttpResponse:
        """A relayed HTTP request on a hybrid connection: bodies stream both ways (WSDL/XSD are rewritten)."""
        url = self.target_url(path, request.query)
        headers = self._headers(request.headers, public_url)
        content_type = request.headers.get("Content-Type")
        method = request.method.upper()
        too_large = False
        data: Any = None
        if request.rendezvous:
            async def limited() -> AsyncIterator[bytes]:
                nonlocal too_large
                size = 0
                async for chunk in request.body:
                    size += len(chunk)
                    if size > max_message:
                        too_large = True
                        return
                    yield chunk
            data = limited() if method not in ("GET", "HEAD") else None
        else:
            body = await request.read()
            if len(body) > max_message:
                too_large = True
            data = body if body or method not in ("GET", "HEAD") else None
        if too_large:
            return _http(self._error(_too_large(max_message), method, content_type))
        try:
            response = await self._send(method, url, headers, data)
        except RelayError as exc:
            return _http(self._error(exc, method, content_type))
        if too_large:
            response.release()
            return _http(self._error(_too_large(max_message), method, content_type))
        headers_out = self._response_headers(response.headers, public_url)
        if method == "HEAD" or response.status in (204, 304):
            response.release()  # no body to relay
            return RelayedHttpResponse(response.status, response.reason, headers_out, b"")
        if self._wants_rewrite(method, response):
            try:
                head, complete = await _read_at_most(response, self.max_metadata_size)
            except ServiceUnreachable as exc:
                response.release()
                return _http(self._error(exc, method, content_type))
            if complete:
                response.release()
                return RelayedHttpResponse(response.status, response.reason, headers_out,
                                           self._rewritten(head, public_url))
            # Too large to rewrite: what was read, then the rest, unchanged.
            return RelayedHttpResponse(response.status, response.reason, headers_out, _stream(response, head))
        return RelayedHttpResponse(response.status, response.reason, headers_out, _stream(response, b""))


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request is larger than this endpoint's limit of {limit} bytes "
                           "(max_received_message_size)")


def _http(result: SoapResult) -> RelayedHttpResponse:
    headers = dict(getattr(result, "headers", None) or {})
    if result.content_type:
        headers["Content-Type"] = result.content_type
    return RelayedHttpResponse(result.status, headers=headers, body=result.body)


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused or no route to it"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection"
    return type(exc).__name__


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """``(body, True)``, or ``(what was read, False)`` once the body passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:
                return b"".join(chunks), False
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ServiceUnreachable(f"the service broke off its answer ({_why(exc)})") from None
    return b"".join(chunks), True


async def _stream(response: aiohttp.ClientResponse, head: bytes) -> AsyncIterator[bytes]:
    """The response body chunk by chunk (after ``head``), releasing the connection at the end."""
    try:
        if head:
            yield head
        async for chunk in response.content.iter_chunked(_CHUNK):
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("the service broke off a streamed answer: %s", _why(exc))
    finally:
        response.release()
