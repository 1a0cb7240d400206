"""Run a Spyne :class:`~spyne.Application` on raw request bytes, without any HTTP server (sans-I/O).

The listener side of a WCF-style relay binding receives a request as bytes plus a few HTTP facts
(content type, SOAPAction, method, path, query) and must hand back bytes plus a status. Spyne's own
servers all own a socket or a WSGI stack; :class:`SpyneBytesApp` instead drives the pipeline Spyne's
transports share (``generate_contexts`` -> ``get_in_object`` -> ``get_out_object`` -> ``get_out_string``
-> ``process_contexts``) through a small ``ServerBase`` subclass with a ``WsgiMethodContext`` built
from a synthetic environ.

Around Spyne it adds what Spyne lacks for WCF callers: the hardened envelope parse, SOAP version
check, mustUnderstand check, WS-Addressing reply headers, 202 for one-way operations, and a WSDL per
public URL (with a bounded cache, unlike ``WsgiApplication`` which keeps the first URL forever).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from lxml import etree

from hybrid.errors import BadRequest, EndpointNotFound, PayloadTooLarge, RelayError
from wcfrelay import compat, soap

# spyne only after the compatibility measure (the package __init__ applies it too).
compat.ensure_spyne_importable()

from spyne import Application
from spyne.auxproc import process_contexts
from spyne.interface import InterfaceDocuments
from spyne.model.fault import Fault
from spyne.protocol.http import HttpRpc
from spyne.protocol.json import JsonDocument
from spyne.protocol.soap import Soap11, Soap12
from spyne.server.http import HttpBase
from spyne.server.wsgi import WsgiMethodContext

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE",
    "Protocol",
    "SoapResult",
    "SpyneBytesApp",
    "build_application",
    "parse_content_type",
    "request_action",
]

logger = logging.getLogger(__name__)

Protocol = Literal["soap11", "soap12", "http"]
#: same guard as the envelope parser; HttpRelay bindings document no limit of their own
DEFAULT_MAX_REQUEST_SIZE = soap.DEFAULT_MAX_ENVELOPE_SIZE
_WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
_WSDL_SOAP_NS = ("http://schemas.xmlsoap.org/wsdl/soap/", "http://schemas.xmlsoap.org/wsdl/soap12/")
_JSON_CONTENT_TYPE = "application/json; charset=utf-8"
_XML_CONTENT_TYPE = "text/xml; charset=utf-8"


@dataclass(frozen=True)
class SoapResult:
    """What to send back: status, content type and body; ``one_way`` means "answer 202, nothing to relay"."""

    status: int
    content_type: str
    body: bytes
    one_way: bool = False
    #: Clark name of the operation Spyne dispatched to (None when the request never got that far)
    operation: str | None = None


def build_application(
    services: Iterable[type],
    *,
    tns: str,
    name: str | None = None,
    protocol: Protocol = "soap11",
    validator: str | None = "lxml",
) -> Application:
    """A Spyne Application with the protocol pair for one relay binding style.

    ``soap11``: Soap11 in/out (BasicHttpRelayBinding); ``soap12``: Soap12 in/out (WS2007HttpRelayBinding
    with security None); ``http``: HttpRpc in, JSON out (WebHttpRelayBinding). ``validator`` applies to
    the SOAP input ("lxml" = schema validation, "soft", or None).
    """
    if protocol == "soap11":
        in_protocol, out_protocol = Soap11(validator=validator), Soap11()
    elif protocol == "soap12":
        in_protocol, out_protocol = Soap12(validator=validator), Soap12()
    elif protocol == "http":
        in_protocol, out_protocol = HttpRpc(validator="soft"), JsonDocument(ignore_wrappers=True)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; use 'soap11', 'soap12' or 'http'")
    return Application(list(services), tns=tns, name=name, in_protocol=in_protocol, out_protocol=out_protocol)


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``'application/soap+xml; charset=utf-8; action="x"'`` -> ``('application/soap+xml', {...})``."""
    if not value:
        return "", {}
    media, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        key, sep, val = item.partition("=")
        if sep:
            params[key.strip().lower()] = val.strip().strip('"')
    return media.strip().lower(), params


def request_action(content_type: str | None, soap_action: str | None) -> str | None:
    """The SOAP action of a request: the SOAPAction header (1.1) or the content type's ``action`` (1.2)."""
    if soap_action is not None and soap_action.strip().strip('"'):
        return soap_action.strip().strip('"')
    return parse_content_type(content_type)[1].get("action") or None


def _status_code(resp_code: Any, default: int) -> int:
    """Spyne keeps statuses as '500 Internal Server Error' strings."""
    if resp_code is None:
        return default
    try:
        return int(str(resp_code).split()[0])
    except ValueError:
        return default


class _BytesServer(HttpBase):
    """The ServerBase subclass that runs one request through Spyne's pipeline."""

    transport = "http://schemas.xmlsoap.org/soap/http"

    def __init__(self, app: Application) -> None:
        # The size limit is enforced by SpyneBytesApp before any parsing; chunking is a WSGI concern.
        super().__init__(app, chunked=False, max_content_length=2**63)

    def run(self, environ: dict[str, Any], body: bytes, charset: str | None) -> tuple[int, str, bytes, Any]:
        """Run the pipeline; returns (status, content type, body, method descriptor or None)."""
        ctx = WsgiMethodContext(self, environ, self.app.out_protocol.mime_type)
        ctx.in_string = [body]
        contexts = self.generate_contexts(ctx, charset)
        p_ctx, others = contexts[0], contexts[1:]
        p_ctx.active = True
        try:
            if p_ctx.in_error is None:
                self.get_in_object(p_ctx)
            if p_ctx.in_error is None:
                self.get_out_object(p_ctx)  # user code; exceptions become p_ctx.out_error
            error = p_ctx.in_error or p_ctx.out_error
            if error is None:
                try:
                    self.get_out_string(p_ctx)
                except Exception as exc:  # serialisation of a bad return value
                    logger.exception("serialising the response of %s failed", p_ctx.method_request_string)
                    error = p_ctx.out_error = Fault("Server", f"Response serialisation failed: {type(exc).__name__}")
                    p_ctx.out_string = None
            if error is not None:
                if p_ctx.transport.resp_code is None:
                    p_ctx.transport.resp_code = p_ctx.out_protocol.fault_to_http_response_code(error)
                p_ctx.out_document = None
                self.get_out_string(p_ctx)
            status = _status_code(p_ctx.transport.resp_code, 200)
            content_type = p_ctx.transport.resp_headers.get("Content-Type") or p_ctx.out_protocol.mime_type
            out = b"".join(
                chunk.encode("utf-8") if isinstance(chunk, str) else chunk for chunk in (p_ctx.out_string or ())
            )
            try:
                process_contexts(self, others, p_ctx, error=error)
            except Exception:
                logger.exception("an auxiliary method of %s failed", p_ctx.method_request_string)
            return status, content_type, out, p_ctx.descriptor
        finally:
            p_ctx.close()

    def decompose_incoming_envelope(self, prot: Any, ctx: Any, message: Any) -> None:
        """HttpRpc hands the request to its transport to split into header and body dicts.

        Query string, form bodies and flat JSON object bodies become the argument dict; werkzeug
        (which Spyne's WSGI server uses for forms) is deliberately not needed.
        """
        environ = ctx.in_document
        params: Mapping[str, list[Any]] = {}
        if self.has_patterns:
            host = (environ.get("HTTP_HOST") or environ["SERVER_NAME"]).partition(":")[0]
            params = self.match_pattern(ctx, environ["REQUEST_METHOD"], environ["PATH_INFO"], host)
        if ctx.method_request_string is None:
            name = environ["PATH_INFO"].rstrip("/").split("/")[-1]
            ctx.method_request_string = f"{{{prot.app.interface.get_tns()}}}{name}"
        ctx.in_header_doc = ctx.transport.headers
        body_doc: dict[str, list[Any]] = {
            k: list(v) for k, v in parse_qs(environ["QUERY_STRING"], keep_blank_values=True).items()
        }
        for k, v in params.items():
            body_doc.setdefault(k, []).extend(v)
        if environ["REQUEST_METHOD"].upper() in ("POST", "PUT", "PATCH"):
            for k, v in _body_arguments(environ).items():
                body_doc.setdefault(k, []).extend(v)
        ctx.in_body_doc = body_doc


def _body_arguments(environ: dict[str, Any]) -> dict[str, list[Any]]:
    """Arguments carried in an HTTP-RPC request body (form or flat JSON object)."""
    data = environ["wsgi.input"].getvalue()
    if not data.strip():
        return {}
    media, params = parse_content_type(environ.get("CONTENT_TYPE"))
    charset = params.get("charset", "utf-8")
    try:
        if media == "application/x-www-form-urlencoded":
            text = data.decode(charset)
            return {k: [x if x != "" else None for x in v] for k, v in parse_qs(text, keep_blank_values=True).items()}
        if media == "application/json" or media.endswith("+json"):
            obj = json.loads(data.decode(charset))
        else:
            raise Fault("Client.UnsupportedMediaType", f"cannot read a {media or 'typeless'} request body")
    except (UnicodeDecodeError, LookupError, json.JSONDecodeError) as exc:
        raise Fault("Client.BadRequest", f"unreadable request body: {exc}") from None
    except RecursionError:  # "[[[[…": nested deeper than the decoder goes
        raise Fault("Client.BadRequest", "unreadable request body: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise Fault("Client.BadRequest", "a JSON request body must be an object of argument names to values")
    out: dict[str, list[Any]] = {}
    for key, value in obj.items():
        # HttpRpc deserialises from strings, like query parameters; nested values cannot be expressed.
        if isinstance(value, (dict, list)):
            raise Fault("Client.BadRequest", f"argument {key!r}: nested JSON values are not supported")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif value is not None:
            value = str(value)
        out[key] = [value]
    return out


def _element_qname(cls: Any) -> str:
    return f"{{{cls.get_namespace()}}}{cls.get_type_name()}"


class SpyneBytesApp:
    """A Spyne Application driven by raw bytes: ``handle()`` for calls, ``wsdl()`` for metadata.

    ``application`` must use one of the protocol pairs of :func:`build_application`. Thread-safe:
    ``handle`` can run on several threads at once (as Spyne under a threaded WSGI server does).
    """

    def __init__(
        self,
        application: Application,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        wsdl_cache_size: int = 32,
        soap_action_style: Literal["wcf", "spyne"] = "wcf",
        ws_addressing: bool = True,
        understood_headers: Iterable[str] = (),
    ) -> None:
        in_protocol = application.in_protocol
        if isinstance(in_protocol, Soap12):
            self.protocol: Protocol = "soap12"
        elif isinstance(in_protocol, Soap11):
            self.protocol = "soap11"
        elif isinstance(in_protocol, HttpRpc):
            self.protocol = "http"
        else:
            raise TypeError(f"unsupported Spyne in_protocol {type(in_protocol).__name__}")
        self.application = application
        self.max_request_size = max_request_size
        self.wsdl_cache_size = wsdl_cache_size
        self.soap_action_style = soap_action_style
        self.ws_addressing = ws_addressing
        self._server = _BytesServer(application)
        self._wsdl_cache: OrderedDict[str, bytes] = OrderedDict()
        self._wsdl_lock = threading.Lock()

        methods = [entry[0] for entry in application.interface.service_method_map.values()]
        #: Clark names (``{tns}Log``) of operations declared one-way (Spyne ``_is_async=True``)
        self.one_way_operations: frozenset[str] = frozenset(_element_qname(d.in_message) for d in methods if d.is_async)
        # Headers the services declare (``_in_header``) are understood, besides the relay layer's own.
        declared = {_element_qname(h) for d in methods for h in (d.in_header or ())}
        self.understood_headers: frozenset[str] = frozenset(declared | set(understood_headers))

    @property
    def soap_version(self) -> soap.SoapVersion | None:
        """The SOAP version this endpoint speaks; None for the HTTP-RPC/JSON style."""
        return {"soap11": soap.SoapVersion.SOAP11, "soap12": soap.SoapVersion.SOAP12}.get(self.protocol)

    def is_one_way(self, operation: str | etree.QName | None) -> bool:
        """True for a one-way operation (a host may answer 202 before running it)."""
        if operation is None:
            return False
        return (operation.text if isinstance(operation, etree.QName) else operation) in self.one_way_operations

    # -----------------------------------------------------------------------------------------------

    def handle(
        self,
        body: bytes,
        *,
        content_type: str = "",
        soap_action: str | None = None,
        http_method: str = "POST",
        query_string: str = "",
        path: str = "/",
        public_url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SoapResult:
        """Process one request.

        SOAP faults come back as 500 with the protocol's content type; one-way operations as 202 with an
        empty body (``one_way=True``). A ``GET`` with ``?wsdl`` / ``?singleWsdl`` returns the WSDL for
        ``public_url`` (required then). ``headers`` are extra request headers Spyne services may read.
        """
        method = http_method.upper()
        if self.protocol != "http" and method == "GET" and _is_wsdl_query(query_string, path):
            if public_url is None:
                raise BadRequest("public_url is required to serve the WSDL")
            return SoapResult(200, _XML_CONTENT_TYPE, self.wsdl(public_url))
        if len(body) > self.max_request_size:
            return self._error(
                PayloadTooLarge(f"the request is {len(body)} bytes; the limit is {self.max_request_size}")
            )

        envelope: soap.Envelope | None = None
        version = self.soap_version
        if version is not None and method == "POST":
            # What Spyne does not check, in SOAP's order: well-formed and safe, version, mustUnderstand.
            try:
                envelope = soap.parse_envelope(body, max_size=self.max_request_size)
            except RelayError as exc:
                return self._error(exc)
            refusal = (
                soap.check_version(envelope, version)
                or soap.check_must_understand(envelope, self.understood_headers)
                or self._check_operation(envelope)
            )
            if refusal is not None:
                return SoapResult(refusal.status, refusal.content_type, refusal.body)

        if envelope is not None and not content_type:
            # Spyne answers 405 to a SOAP POST without Content-Type; the envelope was checked already.
            content_type = envelope.version.content_type
        charset = parse_content_type(content_type)[1].get("charset")
        if charset and charset.lower().replace("-", "") == "utf8":
            charset = None  # lxml reads UTF-8 (and any XML declaration) natively; skips a decode/encode
        environ = self._environ(body, content_type, soap_action, method, query_string, path, public_url, headers)
        try:
            status, out_type, out, descriptor = self._server.run(environ, body, charset)
        except Exception:  # Spyne itself failed outside the method call: never leak a traceback
            logger.exception("Spyne failed on a request to %s", path)
            return self._error(RelayError("the service failed to process the request"))

        operation = _element_qname(descriptor.in_message) if descriptor is not None else None
        if descriptor is not None and descriptor.is_async:
            # One-way: the caller expects no reply (WCF IsOneWay / NetOneway-style), so any fault is only logged.
            if status >= 400:
                logger.warning("one-way operation %s failed (%d): %r", operation, status, out[:500])
            return SoapResult(202, "", b"", one_way=True, operation=operation)
        if envelope is not None and self.ws_addressing:
            addressing = envelope.addressing
            if addressing.message_id is not None or addressing.action is not None:
                try:
                    out = soap.add_response_addressing(
                        out,
                        addressing.message_id,
                        request_action=addressing.action or request_action(content_type, soap_action),
                        max_size=max(len(out) + 1, soap.DEFAULT_MAX_ENVELOPE_SIZE),
                    )
                except RelayError:
                    logger.exception("could not add WS-Addressing headers to the response of %s", operation)
        return SoapResult(status, out_type, out, operation=operation)

    def _check_operation(self, envelope: soap.Envelope) -> soap.FaultResponse | None:
        """A clear Client fault for an empty Body or an unknown operation.

        Spyne would answer an unknown element with a schema-validation message (or crash on an empty
        Body); callers deserve "no such operation", like WCF's ActionNotSupported.
        """
        qname = envelope.body_qname
        if qname is None:
            return soap.fault_response(
                envelope.version, soap.FaultCode.SENDER, "the SOAP Body is empty", subcode="EmptyBody"
            )
        if qname.text in self.application.interface.service_method_map:
            return None
        return soap.fault_response(
            envelope.version,
            soap.FaultCode.SENDER,
            f"this endpoint has no operation for body element {qname.text}",
            subcode="OperationNotFound",
        )

    def _error(self, error: RelayError) -> SoapResult:
        """An error found before Spyne ran, in this endpoint's wire format."""
        version = self.soap_version
        if version is None:
            body = json.dumps(
                {
                    "faultcode": ("Client." if error.http_status < 500 else "Server.") + error.code,
                    "faultstring": error.reason,
                    "detail": None,
                }
            ).encode()
            return SoapResult(error.http_status, _JSON_CONTENT_TYPE, body)
        fault = soap.relay_error_fault(version, error)
        return SoapResult(fault.status, fault.content_type, fault.body)

    def _environ(
        self,
        body: bytes,
        content_type: str,
        soap_action: str | None,
        method: str,
        query_string: str,
        path: str,
        public_url: str | None,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """A WSGI environ with just what Spyne's protocols and transport context read."""
        url = urlsplit(public_url or "http://localhost/")
        scheme = url.scheme or "http"
        try:
            port = str(url.port or (443 if scheme == "https" else 80))
        except ValueError:
            raise BadRequest(f"public_url has an invalid port: {public_url!r}") from None
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path or "/",
            "QUERY_STRING": query_string.lstrip("?"),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": url.hostname or "localhost",
            "SERVER_PORT": port,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": url.netloc or "localhost",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": BytesIO(body),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if content_type:
            environ["CONTENT_TYPE"] = content_type
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        if soap_action is not None:
            environ["HTTP_SOAPACTION"] = soap_action
        return environ

    # -----------------------------------------------------------------------------------------------

    def wsdl(self, public_url: str) -> bytes:
        """The WSDL with ``public_url`` (the gateway's public address of this endpoint) in soap:address.

        Built once per URL and kept in a bounded LRU cache, so a spoofed Host header cannot grow memory.
        """
        if self.protocol == "http":
            raise EndpointNotFound("an HTTP-RPC (WebHttp-style) endpoint has no WSDL")
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadRequest(f"public_url must be an absolute http(s) URL, not {public_url!r}")
        key = f"{parts.scheme}://{parts.netloc}{parts.path}"
        with self._wsdl_lock:
            cached = self._wsdl_cache.get(key)
            if cached is not None:
                self._wsdl_cache.move_to_end(key)
                return cached
            # Spyne keeps the built document on the docs object; build under the lock, one at a time.
            docs = InterfaceDocuments(self.application.interface)
            docs.wsdl11.build_interface_document(key)
            document = self._fix_wsdl(docs.wsdl11.get_interface_document())
            self._wsdl_cache[key] = document
            while len(self._wsdl_cache) > self.wsdl_cache_size:
                self._wsdl_cache.popitem(last=False)
            return document

    def _fix_wsdl(self, document: bytes) -> bytes:
        """Repair and adjust Spyne's WSDL for zeep, suds and WCF tooling.

        * Spyne adds ``soap:header`` parts referring to ``ReplyToHeader``/``MessageIDHeader`` messages to
          one-way operations but only defines those messages for callback services; zeep then refuses
          the whole WSDL. Such dangling headers are dropped.
        * With ``soap_action_style="wcf"`` the soapAction becomes ``{tns}/{PortType}/{Operation}``, what
          a WCF service would publish (Spyne writes the bare operation name and ignores it on input).
        """
        root = etree.fromstring(document)
        tns = root.get("targetNamespace") or ""
        defined = {f"{{{tns}}}{m.get('name')}" for m in root.iterfind(f"{{{_WSDL_NS}}}message")}
        for soap_ns in _WSDL_SOAP_NS:
            for header in list(root.iter(f"{{{soap_ns}}}header")):
                if _resolve_qname(header, header.get("message", "")) not in defined:
                    header.getparent().remove(header)
        if self.soap_action_style == "wcf":
            base = tns if tns.endswith("/") else tns + "/"
            for binding in root.iterfind(f"{{{_WSDL_NS}}}binding"):
                port_type = (binding.get("type") or "").rpartition(":")[2]
                for operation in binding.iterfind(f"{{{_WSDL_NS}}}operation"):
                    for soap_ns in _WSDL_SOAP_NS:
                        soap_op = operation.find(f"{{{soap_ns}}}operation")
                        if soap_op is not None:
                            soap_op.set("soapAction", f"{base}{port_type}/{operation.get('name')}")
        return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _resolve_qname(element: etree._Element, value: str) -> str:
    prefix, sep, local = value.rpartition(":")
    namespace = element.nsmap.get(prefix if sep else None)
    return f"{{{namespace}}}{local}" if namespace else local


def _is_wsdl_query(query_string: str, path: str) -> bool:
    """``?wsdl``, ``?WSDL``, ``?singleWsdl``, ``?wsdl=wsdl0`` or a path ending in ``.wsdl``."""
    first = query_string.lstrip("?").split("&")[0].split("=")[0].lower()
    return first in ("wsdl", "singlewsdl") or path.endswith(".wsdl")
