"""SOAP envelopes as WebSocket messages over a hybrid connection: the wire rules both ends share. Pure: no I/O.

The sender opens one hybrid WebSocket (``ws(s)://gateway/$hc/{path}``) and every WebSocket message is one complete
SOAP envelope (a text message in UTF-8; binary messages are read the same way and answered in kind):

* **calls** carry a WS-Addressing 1.0 ``MessageID`` (the caller's transport adds one when the envelope lacks it);
  the service's answer carries ``RelatesTo`` = that id and an ``Action`` (request action + ``Response``, or the
  WS-Addressing fault action), so any number of calls can be in flight on one socket and answered in any order;
* a **one-way** operation is acknowledged, when it carried a ``MessageID``, with an envelope whose Body is empty,
  ``Action`` = :data:`ACK_ACTION` and ``RelatesTo`` = the id (a transport maps it to HTTP 202);
* **callbacks** (duplex contracts) are one-way envelopes from the service with their own ``MessageID``, an
  ``Action``, and no ``RelatesTo``; the caller dispatches them to its callback handler;
* a message the service cannot read (not XML, not SOAP, too large) is answered with a SOAP fault; the socket stays
  open. The fault carries ``RelatesTo`` whenever the ``MessageID`` could still be read from the message's header.

Envelopes are parsed with :mod:`wcfrelay.soap`'s hardened parser (no DTD, no entities, no network, size bound).
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass

from lxml import etree

from hybrid.errors import RelayError
from wcfrelay import soap

__all__ = [
    "ACK_ACTION",
    "Correlation",
    "build_ack",
    "build_message",
    "correlation",
    "ensure_addressing",
    "error_fault",
    "is_ack",
    "new_message_id",
    "peek_message_id",
]

#: ``wsa:Action`` of the acknowledgement of a one-way operation
ACK_ACTION = "urn:wcfrelay:soap-websocket:ack"
_WSA = soap.WSA_NS
#: how much of an unreadable message is scanned for its MessageID (the header comes first)
_PEEK_LIMIT = 64 * 1024
_PEEK_CHUNK = 8 * 1024


def new_message_id() -> str:
    """``urn:uuid:…``, the form WCF and zeep's WsAddressingPlugin use."""
    return f"urn:uuid:{uuid.uuid4()}"


@dataclass(frozen=True)
class Correlation:
    """The WS-Addressing headers that route a message on the socket."""

    message_id: str | None
    relates_to: str | None
    action: str | None


def correlation(envelope: soap.Envelope) -> Correlation:
    """``MessageID``, ``RelatesTo`` (reply relationship only) and ``Action`` of a parsed envelope."""
    values: dict[str, str] = {}
    for block in envelope.headers:
        qname = etree.QName(block)
        if qname.namespace != _WSA or qname.localname not in ("MessageID", "RelatesTo", "Action"):
            continue
        if qname.localname == "RelatesTo":
            kind = (block.get("RelationshipType") or "").strip()
            if kind and kind != f"{_WSA}/reply":
                continue
        values.setdefault(qname.localname, (block.text or "").strip())
    return Correlation(values.get("MessageID") or None, values.get("RelatesTo") or None, values.get("Action") or None)


def peek_message_id(data: bytes) -> str | None:
    """The ``wsa:MessageID`` of a message that will not be processed (too large, or broken after its header).

    Reads at most the first 64 KiB incrementally, with the hardened parser settings, and stops at the end of the
    SOAP Header; None when there is none or the start of the message is not readable XML.
    """
    head = data[:_PEEK_LIMIT]
    if soap._prolog_has_doctype(head):
        return None
    # A pull parser keeps the events it produced before a syntax error (lxml's iterparse may raise first and
    # drop them), so a header followed by garbage still yields its MessageID.
    parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True,
                                 load_dtd=False, huge_tree=False)
    for offset in range(0, len(head), _PEEK_CHUNK):
        failed = False
        try:
            parser.feed(head[offset:offset + _PEEK_CHUNK])
        except etree.XMLSyntaxError:
            failed = True
        try:
            for event, element in parser.read_events():
                qname = etree.QName(element)
                if event == "start" and qname.localname == "Body":
                    return None
                if event == "end" and qname.namespace == _WSA and qname.localname == "MessageID":
                    return (element.text or "").strip() or None
                if event == "end" and qname.localname == "Header":
                    return None
        except etree.XMLSyntaxError:
            return None
        if failed:
            return None
    return None


def _header(root: etree._Element, version: soap.SoapVersion) -> etree._Element:
    env = version.namespace
    header = root.find(f"{{{env}}}Header")
    if header is None:
        header = etree.Element(f"{{{env}}}Header")
        root.insert(0, header)
    return header


def ensure_addressing(envelope: etree._Element, *, action: str | None = None, to: str | None = None) -> str:
    """Give a SOAP envelope element a ``wsa:MessageID`` (and ``Action``/``To`` when given and missing).

    Modifies ``envelope`` in place and returns its MessageID (the existing one if it had one).
    """
    version = soap.SoapVersion.from_namespace(etree.QName(envelope).namespace)
    if version is None or etree.QName(envelope).localname != "Envelope":
        raise soap.EnvelopeError("not a SOAP envelope")
    header = _header(envelope, version)
    existing = header.find(f"{{{_WSA}}}MessageID")
    if existing is not None and (existing.text or "").strip():
        message_id = existing.text.strip()
    else:
        if existing is not None:
            header.remove(existing)
        message_id = new_message_id()
        etree.SubElement(header, f"{{{_WSA}}}MessageID", nsmap={"wsa": _WSA}).text = message_id
    if action and header.find(f"{{{_WSA}}}Action") is None:
        element = etree.Element(f"{{{_WSA}}}Action", nsmap={"wsa": _WSA})
        element.text = action
        header.insert(0, element)
    if to and header.find(f"{{{_WSA}}}To") is None:
        etree.SubElement(header, f"{{{_WSA}}}To", nsmap={"wsa": _WSA}).text = to
    return message_id


def _body_element(body: etree._Element | str | bytes | None, max_size: int) -> etree._Element | None:
    if body is None or isinstance(body, etree._Element):
        return body
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return soap._parse_xml(data, max_size=max_size)


def build_message(
    version: soap.SoapVersion,
    action: str | None,
    body: etree._Element | str | bytes | None = None,
    *,
    message_id: str | None = None,
    relates_to: str | None = None,
    headers: tuple[etree._Element, ...] = (),
    max_size: int = soap.DEFAULT_MAX_ENVELOPE_SIZE,
) -> bytes:
    """A SOAP envelope with WS-Addressing ``Action``, ``MessageID``, optional ``RelatesTo`` and one Body element.

    ``body`` is an lxml element (copied) or its XML text (parsed with the hardened parser), or None for an empty
    Body. ``headers`` are extra header blocks (copied).
    """
    env = version.namespace
    root = etree.Element(f"{{{env}}}Envelope", nsmap={"s": env, "a": _WSA})
    header = etree.SubElement(root, f"{{{env}}}Header")
    if action:
        element = etree.SubElement(header, f"{{{_WSA}}}Action")
        element.set(f"{{{env}}}mustUnderstand", "1")
        element.text = action
    if relates_to:
        etree.SubElement(header, f"{{{_WSA}}}RelatesTo").text = relates_to
    if message_id:
        etree.SubElement(header, f"{{{_WSA}}}MessageID").text = message_id
    for block in headers:
        header.append(_copy(block))
    body_el = etree.SubElement(root, f"{{{env}}}Body")
    child = _body_element(body, max_size)
    if child is not None:
        body_el.append(_copy(child))
    return etree.tostring(root, encoding="utf-8", xml_declaration=True)


def _copy(element: etree._Element) -> etree._Element:
    return copy.deepcopy(element)  # append() would move the caller's element


def build_ack(version: soap.SoapVersion, relates_to: str) -> bytes:
    """The acknowledgement of a one-way operation (empty Body, :data:`ACK_ACTION`)."""
    return build_message(version, ACK_ACTION, None, relates_to=relates_to)


def is_ack(envelope: soap.Envelope) -> bool:
    """True for the acknowledgement of a one-way operation."""
    return correlation(envelope).action == ACK_ACTION and envelope.body_element is None


def error_fault(version: soap.SoapVersion, error: RelayError, relates_to: str | None) -> bytes:
    """A fault for a message that could not be processed, correlated when its MessageID is known."""
    fault = soap.relay_error_fault(version, error)
    if not relates_to:
        return fault.body
    return soap.add_response_addressing(fault.body, relates_to)
