"""SOAP envelope handling for the WCF-style relay bindings (pure lxml, sans-I/O: bytes in, bytes out).

What lives here:

* :func:`parse_envelope` -- hardened parse of an untrusted request (no DTD, no entities, no network,
  size and depth limits) plus SOAP 1.1 / 1.2 detection.
* :func:`build_fault`, :func:`relay_error_fault` -- SOAP faults, including gateway errors
  (:class:`hybrid.errors.RelayError`) carried to SOAP callers.
* :func:`check_version`, :func:`check_must_understand` -- the two checks Spyne does not do.
* :func:`extract_relay_token` -- read and strip the ``RelayAccessToken`` SOAP header that
  non-.NET callers of WCF Relay use instead of the ``ServiceBusAuthorization`` HTTP header.
* WS-Addressing 1.0: :attr:`Envelope.addressing`, :func:`add_response_addressing` (Spyne emits none).
"""

from __future__ import annotations

import base64
import binascii
import copy
import enum
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from lxml import etree

from hybrid.errors import AuthenticationError, BadRequest, PayloadTooLarge, RelayError

__all__ = [
    "ALWAYS_UNDERSTOOD",
    "ALWAYS_UNDERSTOOD_NAMESPACES",
    "DEFAULT_MAX_ENVELOPE_SIZE",
    "RELAY_ACCESS_TOKEN",
    "RELAY_CONNECT_NS",
    "RELAY_ERROR_NS",
    "SOAP11_ENV_NS",
    "SOAP12_ENV_NS",
    "WSA_ANONYMOUS",
    "WSA_FAULT_ACTION",
    "WSA_NS",
    "WSSE_NS",
    "WSU_NS",
    "Addressing",
    "Envelope",
    "EnvelopeError",
    "FaultCode",
    "FaultResponse",
    "SoapVersion",
    "UnknownEnvelopeVersion",
    "add_response_addressing",
    "build_fault",
    "check_must_understand",
    "check_version",
    "extract_relay_token",
    "fault_response",
    "not_understood_headers",
    "parse_envelope",
    "relay_error_fault",
    "relay_token_header",
]

SOAP11_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV_NS = "http://www.w3.org/2003/05/soap-envelope"
WSA_NS = "http://www.w3.org/2005/08/addressing"
RELAY_CONNECT_NS = "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
SWT_VALUE_TYPE = "http://schemas.xmlsoap.org/ws/2009/11/swt-token-profile-1.0"
BASE64_ENCODING_TYPE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
#: namespace of the subcodes and detail this project puts into faults that carry a RelayError
RELAY_ERROR_NS = "urn:wcfrelay:relay-error"
RELAY_ACCESS_TOKEN = f"{{{RELAY_CONNECT_NS}}}RelayAccessToken"
#: WS-Addressing 1.0 SOAP binding: the default action of a fault message
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

#: HttpRelay bindings have no documented size limit; this is our own guard against memory abuse
DEFAULT_MAX_ENVELOPE_SIZE = 8 * 1024 * 1024

_SOAP11_NEXT = "http://schemas.xmlsoap.org/soap/actor/next"
_SOAP12_NEXT = SOAP12_ENV_NS + "/role/next"
_SOAP12_NONE = SOAP12_ENV_NS + "/role/none"
_SOAP12_ULTIMATE = SOAP12_ENV_NS + "/role/ultimateReceiver"

#: headers in these namespaces are processed by the relay layer itself
ALWAYS_UNDERSTOOD_NAMESPACES = frozenset({WSA_NS})
#: individual header QNames (Clark notation) the relay layer processes
ALWAYS_UNDERSTOOD = frozenset({RELAY_ACCESS_TOKEN})


class SoapVersion(enum.Enum):
    """A SOAP envelope version, with its namespace and HTTP content type."""

    SOAP11 = "1.1"
    SOAP12 = "1.2"

    @property
    def namespace(self) -> str:
        return SOAP11_ENV_NS if self is SoapVersion.SOAP11 else SOAP12_ENV_NS

    @property
    def content_type(self) -> str:
        return "text/xml; charset=utf-8" if self is SoapVersion.SOAP11 else "application/soap+xml; charset=utf-8"

    @classmethod
    def from_namespace(cls, namespace: str | None) -> SoapVersion | None:
        """The version whose Envelope lives in ``namespace``, or None."""
        if namespace == SOAP11_ENV_NS:
            return cls.SOAP11
        if namespace == SOAP12_ENV_NS:
            return cls.SOAP12
        return None


class FaultCode(enum.Enum):
    """The SOAP fault codes used here; SOAP 1.1 names are accepted as aliases (``FaultCode("Client")``)."""

    SENDER = "Sender"
    RECEIVER = "Receiver"
    VERSION_MISMATCH = "VersionMismatch"
    MUST_UNDERSTAND = "MustUnderstand"

    @classmethod
    def _missing_(cls, value: object) -> FaultCode | None:
        if value == "Client":
            return cls.SENDER
        if value == "Server":
            return cls.RECEIVER
        return None

    def local_name(self, version: SoapVersion) -> str:
        """The code's local name in ``version`` (Client/Server in 1.1, Sender/Receiver in 1.2)."""
        if version is SoapVersion.SOAP11:
            return {FaultCode.SENDER: "Client", FaultCode.RECEIVER: "Server"}.get(self, self.value)
        return self.value


class FaultResponse(NamedTuple):
    """A ready HTTP answer carrying a SOAP fault."""

    status: int
    content_type: str
    body: bytes


class EnvelopeError(BadRequest):
    """The request is not an acceptable SOAP envelope."""

    code = "InvalidEnvelope"


class UnknownEnvelopeVersion(EnvelopeError):
    """The Envelope element is in neither the SOAP 1.1 nor the SOAP 1.2 namespace."""

    code = "VersionMismatch"

    def __init__(self, message: str = "", *, namespace: str | None = None) -> None:
        super().__init__(message)
        self.namespace = namespace


# ---------------------------------------------------------------------------------------------------
# Parsing


_local = threading.local()


def _parser() -> etree.XMLParser:
    """One hardened parser per thread: lxml parsers must not be shared between threads."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            dtd_validation=False,
        )
    return parser


_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_PROLOG_SCAN_LIMIT = 4096


def _prolog_text(data: bytes) -> str:
    """The start of the document as text, good enough to look at markup in the prolog."""
    head = data[:_PROLOG_SCAN_LIMIT]
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return head[len(bom) :].decode(encoding, errors="ignore")
    if head.startswith(b"<\x00"):
        return head.decode("utf-16-le", errors="ignore")
    if head.startswith(b"\x00<"):
        return head.decode("utf-16-be", errors="ignore")
    # Every other encoding libxml2 autodetects is ASCII-compatible for '<', '!', '?', '-' and letters.
    return head.decode("latin-1")


def _prolog_has_doctype(data: bytes) -> bool:
    """True when a DOCTYPE appears before the root element (checked before libxml2 sees the DTD)."""
    text = _prolog_text(data)
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t\r\n":
            i += 1
        elif text.startswith("<?", i):
            end = text.find("?>", i + 2)
            if end < 0:
                return False  # prolog longer than the scan window: the post-parse check decides
            i = end + 2
        elif text.startswith("<!--", i):
            end = text.find("-->", i + 4)
            if end < 0:
                return False
            i = end + 3
        else:
            return text[i : i + 9].upper() == "<!DOCTYPE"
    return False


def _parse_xml(data: bytes, *, max_size: int) -> etree._Element:
    """Parse untrusted XML: size cap, DOCTYPE refused, no entity expansion, no network."""
    if len(data) > max_size:
        raise PayloadTooLarge(f"the SOAP message is {len(data)} bytes; the limit is {max_size}")
    if not data.strip():
        raise EnvelopeError("the request body is empty; a SOAP envelope was expected")
    if _prolog_has_doctype(data):
        # Refused before parsing: entity declarations (billion laughs, external entities) are never read.
        raise EnvelopeError("DOCTYPE declarations are not allowed in SOAP messages")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise EnvelopeError(f"the request body is not well-formed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    # Belt and braces for encodings the prolog scan cannot read.
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise EnvelopeError("DOCTYPE declarations are not allowed in SOAP messages")
    return root


@dataclass(frozen=True)
class Addressing:
    """The WS-Addressing 1.0 request headers this layer reads (None when absent)."""

    message_id: str | None = None
    action: str | None = None
    to: str | None = None
    reply_to: str | None = None

    @property
    def present(self) -> bool:
        """True when the message carries any WS-Addressing 1.0 header."""
        return any(v is not None for v in (self.message_id, self.action, self.to, self.reply_to))

    @property
    def reply_to_anonymous(self) -> bool:
        """True when the reply goes back on the same HTTP exchange (no ReplyTo, or the anonymous URI)."""
        return self.reply_to is None or self.reply_to == WSA_ANONYMOUS


@dataclass(frozen=True, eq=False)
class Envelope:
    """A parsed SOAP envelope: version, headers and the Body's first child."""

    raw: bytes
    root: etree._Element
    version: SoapVersion
    header: etree._Element | None
    body: etree._Element | None

    @property
    def headers(self) -> tuple[etree._Element, ...]:
        """The header blocks (element children of Header), in document order."""
        if self.header is None:
            return ()
        return tuple(child for child in self.header if isinstance(child.tag, str))

    @property
    def body_element(self) -> etree._Element | None:
        """The first element inside Body (the operation wrapper in document/literal), or None."""
        if self.body is None:
            return None
        for child in self.body:
            if isinstance(child.tag, str):
                return child
        return None

    @property
    def body_qname(self) -> etree.QName | None:
        """The QName of the Body's first child; Spyne dispatches on it."""
        element = self.body_element
        return None if element is None else etree.QName(element)

    @property
    def is_fault(self) -> bool:
        qname = self.body_qname
        return qname is not None and qname.text == f"{{{self.version.namespace}}}Fault"

    @property
    def addressing(self) -> Addressing:
        """WS-Addressing 1.0 MessageID, Action, To and ReplyTo/Address from the headers."""
        values: dict[str, str | None] = {}
        for block in self.headers:
            qname = etree.QName(block)
            if qname.namespace != WSA_NS:
                continue
            if qname.localname in ("MessageID", "Action", "To"):
                values.setdefault(qname.localname, (block.text or "").strip())
            elif qname.localname == "ReplyTo":
                address = block.find(f"{{{WSA_NS}}}Address")
                if address is not None:
                    values.setdefault("ReplyTo", (address.text or "").strip())
        return Addressing(
            message_id=values.get("MessageID"),
            action=values.get("Action"),
            to=values.get("To"),
            reply_to=values.get("ReplyTo"),
        )


def parse_envelope(data: bytes, *, max_size: int = DEFAULT_MAX_ENVELOPE_SIZE) -> Envelope:
    """Parse an untrusted SOAP request.

    Raises :class:`~hybrid.errors.PayloadTooLarge` over ``max_size``, :class:`UnknownEnvelopeVersion` for an
    Envelope in an unknown namespace, and :class:`EnvelopeError` for anything else that is not SOAP
    (non-XML, DOCTYPE, wrong root, no Body).
    """
    root = _parse_xml(data, max_size=max_size)
    qname = etree.QName(root)
    if qname.localname != "Envelope":
        raise EnvelopeError(f"the root element is {qname.localname!r}, not a SOAP Envelope")
    version = SoapVersion.from_namespace(qname.namespace)
    if version is None:
        raise UnknownEnvelopeVersion(f"unknown SOAP envelope namespace {qname.namespace!r}", namespace=qname.namespace)
    header = root.find(f"{{{version.namespace}}}Header")
    body = root.find(f"{{{version.namespace}}}Body")
    if body is None:
        raise EnvelopeError("the SOAP envelope has no Body")
    return Envelope(raw=data, root=root, version=version, header=header, body=body)


def _serialize(root: etree._Element, like: bytes) -> bytes:
    """Serialize ``root`` in the encoding of the original document, keeping its XML declaration habit."""
    docinfo = root.getroottree().docinfo
    encoding = (docinfo.encoding or "UTF-8").upper()
    had_declaration = _prolog_text(like).lstrip().startswith("<?xml")
    # Non-UTF-8 output must say what it is; otherwise mirror the original so byte-compares stay sane.
    declaration = had_declaration or encoding not in ("UTF-8", "ASCII", "US-ASCII")
    return etree.tostring(root, encoding=encoding, xml_declaration=declaration)


# ---------------------------------------------------------------------------------------------------
# Faults


def _clark(name: str | etree.QName, default_ns: str | None = None) -> str:
    """Normalise a QName given as Clark text, lxml QName, or a bare local name (then in ``default_ns``)."""
    if isinstance(name, etree.QName):
        return name.text
    if name.startswith("{") or default_ns is None:
        return name
    return f"{{{default_ns}}}{name}"


def _prefixed(element: etree._Element, clark: str) -> str:
    """The ``prefix:local`` text of a QName value, using a prefix in scope on ``element``.

    QNames inside attribute values and text need a declared prefix; lxml cannot add a declaration to an
    existing element, so callers create the element with the right ``nsmap`` and this only looks it up.
    """
    qname = etree.QName(clark)
    if qname.namespace is None:
        return qname.localname
    for pfx, uri in element.nsmap.items():
        if uri == qname.namespace and pfx:
            return f"{pfx}:{qname.localname}"
    raise ValueError(f"namespace {qname.namespace!r} has no prefix in scope on <{element.tag}>")


#: characters XML 1.0 cannot carry; error messages may contain them, lxml would refuse the whole fault
_NOT_XML_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def build_fault(
    version: SoapVersion,
    code: FaultCode | str,
    reason: str,
    detail: etree._Element | str | None = None,
    *,
    subcode: str | etree.QName | None = None,
    lang: str = "en",
    not_understood: Iterable[str | etree.QName] = (),
    supported_envelopes: Iterable[SoapVersion] = (),
) -> bytes:
    """A complete SOAP fault envelope.

    SOAP 1.1: ``faultcode`` (a subcode becomes the dotted suffix, ``s:Client.Unauthorized``), ``faultstring``,
    ``detail``. SOAP 1.2: ``Code/Value`` (+ ``Subcode/Value``), ``Reason/Text xml:lang``, ``Detail``.
    A bare-name ``subcode`` is placed in :data:`RELAY_ERROR_NS`. ``not_understood`` adds SOAP 1.2
    ``NotUnderstood`` header blocks (MustUnderstand faults); ``supported_envelopes`` adds the SOAP 1.2
    ``Upgrade`` header block (VersionMismatch faults; the block is defined by SOAP 1.2 for both envelopes).
    """
    code = FaultCode(code)
    reason = _NOT_XML_CHARS.sub("\ufffd", reason)
    env = version.namespace
    sub = _clark(subcode, RELAY_ERROR_NS) if subcode is not None else None
    nsmap: dict[str | None, str] = {"s": env}
    if sub is not None and etree.QName(sub).namespace and version is SoapVersion.SOAP12:
        nsmap["r"] = etree.QName(sub).namespace  # type: ignore[assignment]
    root = etree.Element(f"{{{env}}}Envelope", nsmap=nsmap)

    not_understood = [_clark(q) for q in not_understood]
    supported = list(supported_envelopes)
    if supported or (not_understood and version is SoapVersion.SOAP12):
        header = etree.SubElement(root, f"{{{env}}}Header")
        for i, name in enumerate(not_understood if version is SoapVersion.SOAP12 else ()):
            target_ns = etree.QName(name).namespace
            block = etree.SubElement(
                header, f"{{{SOAP12_ENV_NS}}}NotUnderstood", nsmap={f"h{i}": target_ns} if target_ns else None
            )
            block.set("qname", _prefixed(block, name))
        if supported:
            upgrade = etree.SubElement(header, f"{{{SOAP12_ENV_NS}}}Upgrade", nsmap={"upg": SOAP12_ENV_NS})
            for i, supported_version in enumerate(supported):
                ns = supported_version.namespace
                element = etree.SubElement(
                    upgrade,
                    f"{{{SOAP12_ENV_NS}}}SupportedEnvelope",
                    nsmap=None if ns == SOAP12_ENV_NS else {f"v{i}": ns},
                )
                element.set("qname", _prefixed(element, f"{{{ns}}}Envelope"))

    body = etree.SubElement(root, f"{{{env}}}Body")
    fault = etree.SubElement(body, f"{{{env}}}Fault")
    if version is SoapVersion.SOAP11:
        value = f"s:{code.local_name(version)}"
        if sub is not None:
            value += "." + etree.QName(sub).localname
        etree.SubElement(fault, "faultcode").text = value
        faultstring = etree.SubElement(fault, "faultstring")
        faultstring.text = reason
        faultstring.set(XML_LANG, lang)
        detail_parent = etree.SubElement(fault, "detail") if detail is not None else None
    else:
        code_el = etree.SubElement(fault, f"{{{env}}}Code")
        etree.SubElement(code_el, f"{{{env}}}Value").text = f"s:{code.local_name(version)}"
        if sub is not None:
            subcode_el = etree.SubElement(code_el, f"{{{env}}}Subcode")
            value_el = etree.SubElement(subcode_el, f"{{{env}}}Value")
            value_el.text = _prefixed(value_el, sub)
        reason_el = etree.SubElement(fault, f"{{{env}}}Reason")
        text_el = etree.SubElement(reason_el, f"{{{env}}}Text")
        text_el.text = reason
        text_el.set(XML_LANG, lang)
        detail_parent = etree.SubElement(fault, f"{{{env}}}Detail") if detail is not None else None
    if detail_parent is not None:
        if isinstance(detail, str):
            detail_parent.text = _NOT_XML_CHARS.sub("\ufffd", detail)
        else:
            detail_parent.append(copy.deepcopy(detail))  # append() would move the caller's element
    return etree.tostring(root, encoding="utf-8", xml_declaration=True)


def fault_response(
    version: SoapVersion, code: FaultCode | str, reason: str, detail: etree._Element | str | None = None, **kwargs
) -> FaultResponse:
    """:func:`build_fault` wrapped as an HTTP answer (500, as WS-I BP R1126 and WCF do for every fault)."""
    return FaultResponse(500, version.content_type, build_fault(version, code, reason, detail, **kwargs))


def _relay_error_detail(error: RelayError) -> etree._Element:
    detail = etree.Element(f"{{{RELAY_ERROR_NS}}}RelayError", nsmap={"r": RELAY_ERROR_NS})
    etree.SubElement(detail, f"{{{RELAY_ERROR_NS}}}Code").text = error.code
    etree.SubElement(detail, f"{{{RELAY_ERROR_NS}}}HttpStatus").text = str(error.http_status)
    return detail


def relay_error_fault(version: SoapVersion, error: RelayError, *, keep_http_status: bool = False) -> FaultResponse:
    """Carry a gateway error (no listener, timeout, unauthorized, too large...) to a SOAP caller.

    4xx errors become Client/Sender faults, 5xx Server/Receiver, with ``error.code`` as subcode and a
    ``r:RelayError`` detail holding the code and the HTTP status. The status is 500 (what suds, WCF and
    WS-I BP expect for a fault) unless ``keep_http_status`` asks for ``error.http_status``.
    An :class:`UnknownEnvelopeVersion` becomes a SOAP 1.1 VersionMismatch fault whatever ``version`` is:
    the sender's version is unknown, and SOAP 1.2 Appendix A says to answer in SOAP 1.1.
    """
    if isinstance(error, UnknownEnvelopeVersion):
        body = build_fault(
            SoapVersion.SOAP11,
            FaultCode.VERSION_MISMATCH,
            error.reason,
            supported_envelopes=(version,),
        )
        return FaultResponse(500, SoapVersion.SOAP11.content_type, body)
    code = FaultCode.SENDER if error.http_status < 500 else FaultCode.RECEIVER
    body = build_fault(version, code, error.reason, _relay_error_detail(error), subcode=error.code)
    return FaultResponse(error.http_status if keep_http_status else 500, version.content_type, body)


def check_version(envelope: Envelope, expected: SoapVersion) -> FaultResponse | None:
    """None when ``envelope`` has the endpoint's version, else a VersionMismatch fault.

    The fault is written in the *sender's* envelope version, so the sender can read it, with a SOAP 1.2
    ``Upgrade`` header naming the envelope the endpoint supports (SOAP 1.2 part 1, 5.4.7 and Appendix A).
    """
    if envelope.version is expected:
        return None
    reason = (
        f"this endpoint accepts SOAP {expected.value} envelopes ({expected.namespace}), "
        f"not SOAP {envelope.version.value}"
    )
    return fault_response(envelope.version, FaultCode.VERSION_MISMATCH, reason, supported_envelopes=(expected,))


# ---------------------------------------------------------------------------------------------------
# RelayAccessToken header


def _remove_keeping_tail(element: etree._Element) -> None:
    """Remove ``element`` but keep the text that follows it (lxml drops the tail with the element)."""
    parent = element.getparent()
    if parent is None:
        return
    tail = element.tail
    previous = element.getprevious()
    parent.remove(element)
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail


def _decode_token(block: etree._Element) -> str:
    bst = block.find(f"{{{WSSE_NS}}}BinarySecurityToken")
    text = "".join((bst.text or "").split()) if bst is not None else ""
    if not text:
        raise AuthenticationError("the RelayAccessToken header has no BinarySecurityToken value")
    if text.startswith("SharedAccessSignature"):
        # Lenient: some hand-written callers put the SAS token in as-is instead of base64.
        return " ".join((bst.text or "").split())  # type: ignore[union-attr]
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("the RelayAccessToken BinarySecurityToken is not valid base64") from None


def extract_relay_token(
    data: bytes | Envelope, *, max_size: int = DEFAULT_MAX_ENVELOPE_SIZE
) -> tuple[str | None, bytes]:
    """Read the ``RelayAccessToken`` SOAP header and strip it from the message.

    Returns ``(token, message)``: the decoded token (or None) and the message without that header.
    The message is re-serialized (in its original encoding) only when the header was present; otherwise
    the original bytes are returned unchanged. Raises :class:`~hybrid.errors.AuthenticationError` for a
    header that is present but unreadable, or duplicated.
    """
    if isinstance(data, Envelope):
        raw, root = data.raw, data.root
    else:
        raw, root = data, None
        head = raw[:4]
        ascii_compatible = b"\x00" not in head and not head.startswith((b"\xff\xfe", b"\xfe\xff"))
        if ascii_compatible and RELAY_CONNECT_NS.encode() not in raw:
            return None, raw  # fast path: the namespace cannot occur, no parse needed
        root = parse_envelope(raw, max_size=max_size).root
    version = SoapVersion.from_namespace(etree.QName(root).namespace) or SoapVersion.SOAP11
    header = root.find(f"{{{version.namespace}}}Header")
    blocks = [] if header is None else header.findall(RELAY_ACCESS_TOKEN)
    if not blocks:
        return None, raw
    if len(blocks) > 1:
        raise AuthenticationError("more than one RelayAccessToken header")
    token = _decode_token(blocks[0])
    if isinstance(data, Envelope):
        # The caller's tree stays as it was; work on a copy.
        root = etree.fromstring(etree.tostring(root), _parser())
        header = root.find(f"{{{version.namespace}}}Header")
        blocks = header.findall(RELAY_ACCESS_TOKEN)  # type: ignore[union-attr]
    _remove_keeping_tail(blocks[0])
    return token, _serialize(root, raw)


def relay_token_header(token: str, *, token_id: str | None = None) -> etree._Element:
    """The ``RelayAccessToken`` header block a non-.NET caller sends (for zeep ``_soapheaders`` and tests)."""
    block = etree.Element(RELAY_ACCESS_TOKEN, nsmap={None: RELAY_CONNECT_NS})
    bst = etree.SubElement(block, f"{{{WSSE_NS}}}BinarySecurityToken", nsmap={"wsse": WSSE_NS, "wsu": WSU_NS})
    bst.set(f"{{{WSU_NS}}}Id", token_id or f"uuid:{uuid.uuid4()}")
    bst.set("ValueType", SWT_VALUE_TYPE)
    bst.set("EncodingType", BASE64_ENCODING_TYPE)
    bst.text = base64.b64encode(token.encode("utf-8")).decode("ascii")
    return block


# ---------------------------------------------------------------------------------------------------
# WS-Addressing and mustUnderstand


def add_response_addressing(
    response: bytes,
    request_message_id: str | None,
    response_action: str | None = None,
    *,
    request_action: str | None = None,
    max_size: int = DEFAULT_MAX_ENVELOPE_SIZE,
) -> bytes:
    """Add ``wsa:Action`` and ``wsa:RelatesTo`` to a response envelope (WCF Soap12WSAddressing10 callers need them).

    The action is ``response_action``; if None, the WS-Addressing fault action for a fault, else
    ``request_action + "Response"`` (the WCF convention); with neither known no Action is written.
    Existing Action/RelatesTo headers are replaced. Works on SOAP 1.1 and 1.2 envelopes.
    """
    root = _parse_xml(response, max_size=max_size)
    version = SoapVersion.from_namespace(etree.QName(root).namespace)
    if version is None or etree.QName(root).localname != "Envelope":
        raise EnvelopeError("the response is not a SOAP envelope")
    env = version.namespace
    body = root.find(f"{{{env}}}Body")
    is_fault = body is not None and body.find(f"{{{env}}}Fault") is not None
    if response_action is None:
        if is_fault:
            response_action = WSA_FAULT_ACTION
        elif request_action:
            response_action = request_action + "Response"

    header = root.find(f"{{{env}}}Header")
    if header is None:
        header = etree.Element(f"{{{env}}}Header")
        root.insert(0, header)
    for name in ("Action", "RelatesTo"):
        for old in header.findall(f"{{{WSA_NS}}}{name}"):
            _remove_keeping_tail(old)
    position = 0
    if response_action:
        action = etree.Element(f"{{{WSA_NS}}}Action", nsmap={"a": WSA_NS})
        action.set(f"{{{env}}}mustUnderstand", "1")  # as WCF writes it
        action.text = response_action
        header.insert(position, action)
        position += 1
    if request_message_id:
        relates_to = etree.Element(f"{{{WSA_NS}}}RelatesTo", nsmap={"a": WSA_NS})
        relates_to.text = request_message_id
        header.insert(position, relates_to)
    return _serialize(root, response)


def _targets_us(block: etree._Element, version: SoapVersion) -> bool:
    """True when a header block is addressed to the ultimate receiver (or to 'next')."""
    if version is SoapVersion.SOAP11:
        actor = block.get(f"{{{SOAP11_ENV_NS}}}actor")
        return actor in (None, "", _SOAP11_NEXT)
    role = block.get(f"{{{SOAP12_ENV_NS}}}role")
    return role in (None, "", _SOAP12_NEXT, _SOAP12_ULTIMATE)


def not_understood_headers(envelope: Envelope, understood: Iterable[str | etree.QName] = ()) -> list[str]:
    """Clark names of mustUnderstand header blocks aimed at us that neither ``understood`` nor this layer handle."""
    known = {_clark(q) for q in understood} | ALWAYS_UNDERSTOOD
    attribute = f"{{{envelope.version.namespace}}}mustUnderstand"
    missing = []
    for block in envelope.headers:
        flag = (block.get(attribute) or "").strip().lower()
        if flag not in ("1", "true") or not _targets_us(block, envelope.version):
            continue
        qname = etree.QName(block)
        if qname.text in known or qname.namespace in ALWAYS_UNDERSTOOD_NAMESPACES:
            continue
        missing.append(qname.text)
    return missing


def check_must_understand(envelope: Envelope, understood: Iterable[str | etree.QName] = ()) -> FaultResponse | None:
    """None, or a MustUnderstand fault naming the mandatory headers nobody understands.

    ``understood`` holds header QNames (Clark text or lxml QName) the service processes; WS-Addressing 1.0
    headers and RelayAccessToken always count as understood. SOAP 1.2 faults carry ``env:NotUnderstood``
    header blocks; SOAP 1.1 has none, so the names go into the faultstring.
    """
    missing = not_understood_headers(envelope, understood)
    if not missing:
        return None
    reason = "header(s) with mustUnderstand not understood: " + ", ".join(missing)
    return fault_response(envelope.version, FaultCode.MUST_UNDERSTAND, reason, not_understood=missing)
