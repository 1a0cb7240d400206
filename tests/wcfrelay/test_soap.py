"""wcfrelay.soap: hardened parsing, faults, RelayAccessToken, WS-Addressing, mustUnderstand."""

from __future__ import annotations

import base64
import time
from xml.sax.saxutils import escape

import pytest
from lxml import etree

from hybrid.errors import (
    AuthenticationError,
    ListenerUnavailable,
    PayloadTooLarge,
    RelayError,
    RelayTimeout,
)
from wcfrelay import soap
from wcfrelay.soap import (
    RELAY_CONNECT_NS,
    RELAY_ERROR_NS,
    SOAP11_ENV_NS,
    SOAP12_ENV_NS,
    WSA_NS,
    WSSE_NS,
    EnvelopeError,
    FaultCode,
    SoapVersion,
    UnknownEnvelopeVersion,
)

S11 = SOAP11_ENV_NS
S12 = SOAP12_ENV_NS
TOKEN = "SharedAccessSignature sr=http%3a%2f%2fgw%2fcalc&sig=abc%2B%3D&se=1999999999&skn=RootManageSharedAccessKey"


def envelope11(
    body: str = '<Add xmlns="http://tempuri.org/"><a>1</a><b>2</b></Add>', header: str | None = None
) -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header is not None else ""
    return f'<s:Envelope xmlns:s="{S11}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode()


def envelope12(
    body: str = '<Add xmlns="http://tempuri.org/"><a>1</a><b>2</b></Add>', header: str | None = None
) -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header is not None else ""
    return f'<s:Envelope xmlns:s="{S12}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode()


def token_header(token: str = TOKEN, *, encoded: str | None = None) -> str:
    value = encoded if encoded is not None else base64.b64encode(token.encode()).decode()
    return (
        f'<RelayAccessToken xmlns="{RELAY_CONNECT_NS}">'
        f'<wsse:BinarySecurityToken xmlns:wsse="{WSSE_NS}" '
        'xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd" '
        'wsu:Id="uuid:5e1b6f6c-0000-4000-8000-000000000001" '
        'ValueType="http://schemas.xmlsoap.org/ws/2009/11/swt-token-profile-1.0" '
        'EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">'
        f"{value}</wsse:BinarySecurityToken></RelayAccessToken>"
    )


def fault_of(body: bytes) -> etree._Element:
    root = etree.fromstring(body)
    ns = etree.QName(root).namespace
    fault = root.find(f"{{{ns}}}Body/{{{ns}}}Fault")
    assert fault is not None, body
    return fault


# --------------------------------------------------------------------------------------------- parsing


def test_parse_soap11_envelope_exposes_version_headers_and_body_qname() -> None:
    data = envelope11(header='<x:Trace xmlns:x="urn:trace">1</x:Trace><x:Other xmlns:x="urn:trace"/>')
    env = soap.parse_envelope(data)
    assert env.version is SoapVersion.SOAP11
    assert [etree.QName(h).text for h in env.headers] == ["{urn:trace}Trace", "{urn:trace}Other"]
    assert env.body_qname == etree.QName("http://tempuri.org/", "Add")
    assert env.raw is data
    assert not env.is_fault


def test_parse_soap12_envelope_without_header() -> None:
    env = soap.parse_envelope(envelope12('<Echo xmlns="http://tempuri.org/"><text>hi</text></Echo>'))
    assert env.version is SoapVersion.SOAP12
    assert env.headers == ()
    assert env.body_qname.text == "{http://tempuri.org/}Echo"


def test_empty_body_has_no_qname() -> None:
    env = soap.parse_envelope(envelope11(body=""))
    assert env.body_qname is None


def test_xml_declaration_and_utf16_are_accepted() -> None:
    text = envelope11('<Echo xmlns="http://tempuri.org/"><text>h\u00e9llo \u2603</text></Echo>').decode()
    env = soap.parse_envelope(("<?xml version='1.0' encoding='utf-16'?>" + text).encode("utf-16"))
    assert env.body_element[0].text == "h\u00e9llo \u2603"


def test_version_from_content_type_helpers() -> None:
    assert SoapVersion.SOAP11.content_type.startswith("text/xml")
    assert SoapVersion.SOAP12.content_type.startswith("application/soap+xml")
    assert SoapVersion.from_namespace(S12) is SoapVersion.SOAP12
    assert SoapVersion.from_namespace("urn:other") is None


# --------------------------------------------------------------------------------------------- hostile input

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE s:Envelope [\n<!ENTITY lol "lol">\n'
    + b"".join(
        b'<!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
    )
    + b"]>\n"
    + envelope11(body='<Echo xmlns="http://tempuri.org/"><text>&lol9;</text></Echo>')
)

XXE = b'<?xml version="1.0"?>\n<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n' + envelope11(
    body='<Echo xmlns="http://tempuri.org/"><text>&xxe;</text></Echo>'
)


def test_billion_laughs_is_refused_quickly_without_expansion() -> None:
    started = time.perf_counter()
    with pytest.raises(EnvelopeError, match="DOCTYPE"):
        soap.parse_envelope(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.5


def test_external_entity_is_refused_and_file_never_appears() -> None:
    with pytest.raises(EnvelopeError, match="DOCTYPE") as info:
        soap.parse_envelope(XXE)
    assert "root:" not in str(info.value)


@pytest.mark.parametrize(
    "doc",
    [
        b'<!DOCTYPE s:Envelope SYSTEM "http://example.invalid/soap.dtd">' + envelope11(),
        b"<!DOCTYPE s:Envelope>" + envelope11(),
        b"<?xml version='1.0'?>\n<!-- a comment -->\n<?pi data?>\n  <!DOCTYPE x []>" + envelope11(),
        ("<!DOCTYPE x [<!ENTITY a 'b'>]>" + envelope11().decode()).encode("utf-16"),
    ],
    ids=["external-dtd", "bare", "after-comment-and-pi", "utf16"],
)
def test_any_doctype_is_refused(doc: bytes) -> None:
    with pytest.raises(EnvelopeError, match="DOCTYPE"):
        soap.parse_envelope(doc)


def test_doctype_text_inside_cdata_is_not_a_doctype() -> None:
    env = soap.parse_envelope(
        envelope11('<Echo xmlns="http://tempuri.org/"><text><![CDATA[<!DOCTYPE html>]]></text></Echo>')
    )
    assert env.body_element[0].text == "<!DOCTYPE html>"


@pytest.mark.parametrize("data", [b"hello, world", b'{"a": 1}', b"<s:Envelope", b"\x00\xff\x10garbage", b"   "])
def test_non_xml_is_a_clear_bad_request(data: bytes) -> None:
    with pytest.raises(EnvelopeError) as info:
        soap.parse_envelope(data)
    assert info.value.http_status == 400
    assert "XML" in str(info.value) or "empty" in str(info.value)


def test_wrong_root_and_missing_body() -> None:
    with pytest.raises(EnvelopeError, match="not a SOAP Envelope"):
        soap.parse_envelope(b"<Add xmlns='http://tempuri.org/'/>")
    with pytest.raises(EnvelopeError, match="no Body"):
        soap.parse_envelope(f'<s:Envelope xmlns:s="{S11}"><s:Header/></s:Envelope>'.encode())


def test_unknown_envelope_namespace_is_a_version_error() -> None:
    with pytest.raises(UnknownEnvelopeVersion) as info:
        soap.parse_envelope(b'<e:Envelope xmlns:e="urn:soap-2.0"><e:Body/></e:Envelope>')
    assert info.value.namespace == "urn:soap-2.0"


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        soap.parse_envelope(envelope11(), max_size=50)


def test_deep_nesting_is_refused() -> None:
    deep = "<d>" * 5000 + "</d>" * 5000
    with pytest.raises(EnvelopeError):
        soap.parse_envelope(envelope11(body=deep))


# --------------------------------------------------------------------------------------------- faults


def test_soap11_fault_layout() -> None:
    body = soap.build_fault(SoapVersion.SOAP11, FaultCode.SENDER, "bad input", detail="more", subcode="Validation")
    fault = fault_of(body)
    assert fault.findtext("faultcode") == "s:Client.Validation"
    assert fault.findtext("faultstring") == "bad input"
    assert fault.find("faultstring").get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert fault.findtext("detail") == "more"
    # the prefix used in faultcode must resolve to the SOAP 1.1 namespace
    assert fault.find("faultcode").nsmap["s"] == S11


@pytest.mark.parametrize(
    ("code", "v11", "v12"),
    [
        ("Client", "Client", "Sender"),
        ("Sender", "Client", "Sender"),
        ("Server", "Server", "Receiver"),
        (FaultCode.RECEIVER, "Server", "Receiver"),
        (FaultCode.VERSION_MISMATCH, "VersionMismatch", "VersionMismatch"),
        (FaultCode.MUST_UNDERSTAND, "MustUnderstand", "MustUnderstand"),
    ],
)
def test_fault_codes_per_version(code, v11: str, v12: str) -> None:
    assert fault_of(soap.build_fault(SoapVersion.SOAP11, code, "x")).findtext("faultcode") == f"s:{v11}"
    fault = fault_of(soap.build_fault(SoapVersion.SOAP12, code, "x"))
    value = fault.find(f"{{{S12}}}Code/{{{S12}}}Value")
    prefix, _, local = value.text.partition(":")
    assert (value.nsmap[prefix], local) == (S12, v12)


def test_soap12_fault_layout_with_subcode_and_element_detail() -> None:
    detail = etree.Element("{urn:d}Info")
    detail.text = "ctx"
    fault = fault_of(soap.build_fault(SoapVersion.SOAP12, "Receiver", "it broke", detail, subcode="Busy", lang="en-US"))
    sub = fault.find(f"{{{S12}}}Code/{{{S12}}}Subcode/{{{S12}}}Value")
    prefix, _, local = sub.text.partition(":")
    assert (sub.nsmap[prefix], local) == (RELAY_ERROR_NS, "Busy")
    text = fault.find(f"{{{S12}}}Reason/{{{S12}}}Text")
    assert text.text == "it broke"
    assert text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en-US"
    assert fault.findtext(f"{{{S12}}}Detail/{{urn:d}}Info") == "ctx"


@pytest.mark.parametrize(
    ("error", "code11", "status"),
    [
        (ListenerUnavailable("no listener is connected for calc"), "s:Server.ListenerUnavailable", 502),
        (RelayTimeout("the listener did not answer within 60 s"), "s:Server.GatewayTimeout", 504),
        (AuthenticationError("token expired"), "s:Client.Unauthorized", 401),
        (PayloadTooLarge("too big"), "s:Client.PayloadTooLarge", 413),
    ],
)
def test_relay_errors_become_soap_faults(error: RelayError, code11: str, status: int) -> None:
    result = soap.relay_error_fault(SoapVersion.SOAP11, error)
    assert (result.status, result.content_type) == (500, "text/xml; charset=utf-8")
    fault = fault_of(result.body)
    assert fault.findtext("faultcode") == code11
    assert fault.findtext("faultstring") == str(error)
    assert fault.findtext(f"detail/{{{RELAY_ERROR_NS}}}RelayError/{{{RELAY_ERROR_NS}}}HttpStatus") == str(status)

    kept = soap.relay_error_fault(SoapVersion.SOAP12, error, keep_http_status=True)
    assert kept.status == status
    assert kept.content_type.startswith("application/soap+xml")
    value = fault_of(kept.body).findtext(f"{{{S12}}}Code/{{{S12}}}Value")
    assert value.endswith("Sender" if status < 500 else "Receiver")


def test_unknown_envelope_version_becomes_soap11_version_mismatch() -> None:
    with pytest.raises(UnknownEnvelopeVersion) as info:
        soap.parse_envelope(b'<e:Envelope xmlns:e="urn:soap-2.0"><e:Body/></e:Envelope>')
    result = soap.relay_error_fault(SoapVersion.SOAP12, info.value)
    assert result.content_type.startswith("text/xml")
    assert fault_of(result.body).findtext("faultcode") == "s:VersionMismatch"


def test_fault_reason_is_escaped() -> None:
    body = soap.build_fault(SoapVersion.SOAP11, "Client", "<b>&</b>]]>")
    assert fault_of(body).findtext("faultstring") == "<b>&</b>]]>"


def test_fault_reason_with_control_characters_still_builds() -> None:
    body = soap.build_fault(SoapVersion.SOAP12, "Receiver", "bad\x00byte\x1b", detail="\x07")
    assert fault_of(body).findtext(f"{{{S12}}}Reason/{{{S12}}}Text") == "bad\ufffdbyte\ufffd"


def test_detail_element_is_copied_not_moved() -> None:
    owner = etree.Element("owner")
    detail = etree.SubElement(owner, "{urn:d}Info")
    soap.build_fault(SoapVersion.SOAP11, "Client", "x", detail)
    assert detail.getparent() is owner


# --------------------------------------------------------------------------------------------- version check


def test_check_version_accepts_matching_envelope() -> None:
    assert soap.check_version(soap.parse_envelope(envelope11()), SoapVersion.SOAP11) is None
    assert soap.check_version(soap.parse_envelope(envelope12()), SoapVersion.SOAP12) is None


def test_soap12_envelope_at_soap11_endpoint_gets_version_mismatch() -> None:
    result = soap.check_version(soap.parse_envelope(envelope12()), SoapVersion.SOAP11)
    assert result is not None and result.status == 500
    root = etree.fromstring(result.body)
    # written in the sender's version so the sender can read it, naming what the endpoint supports
    assert etree.QName(root).namespace == S12
    assert fault_of(result.body).findtext(f"{{{S12}}}Code/{{{S12}}}Value") == "s:VersionMismatch"
    supported = root.find(f"{{{S12}}}Header/{{{S12}}}Upgrade/{{{S12}}}SupportedEnvelope")
    prefix, _, local = supported.get("qname").partition(":")
    assert (supported.nsmap[prefix], local) == (S11, "Envelope")


def test_soap11_envelope_at_soap12_endpoint_gets_soap11_version_mismatch_with_upgrade() -> None:
    result = soap.check_version(soap.parse_envelope(envelope11()), SoapVersion.SOAP12)
    assert result is not None
    assert result.content_type.startswith("text/xml")
    root = etree.fromstring(result.body)
    assert etree.QName(root).namespace == S11
    assert fault_of(result.body).findtext("faultcode") == "s:VersionMismatch"
    assert root.find(f"{{{S11}}}Header/{{{S12}}}Upgrade/{{{S12}}}SupportedEnvelope") is not None


# --------------------------------------------------------------------------------------------- RelayAccessToken


def test_relay_token_is_extracted_and_only_that_header_is_stripped() -> None:
    data = envelope11(header=f'{token_header()}<x:Trace xmlns:x="urn:trace">7</x:Trace>')
    token, stripped = soap.extract_relay_token(data)
    assert token == TOKEN
    assert RELAY_CONNECT_NS.encode() not in stripped
    env = soap.parse_envelope(stripped)
    assert [etree.QName(h).text for h in env.headers] == ["{urn:trace}Trace"]
    assert env.body_qname.text == "{http://tempuri.org/}Add"
    assert env.body_element.findtext("{http://tempuri.org/}b") == "2"


def test_message_without_token_is_returned_unchanged() -> None:
    data = envelope12(header='<x:Trace xmlns:x="urn:trace">7</x:Trace>')
    token, same = soap.extract_relay_token(data)
    assert token is None and same is data
    # also when the namespace appears but not as the header (so a parse happens)
    data2 = envelope11(body=f'<Echo xmlns="http://tempuri.org/"><text>{RELAY_CONNECT_NS}</text></Echo>')
    token, same2 = soap.extract_relay_token(data2)
    assert token is None and same2 is data2


def test_token_in_soap12_and_utf16_keeps_the_encoding() -> None:
    text = "<?xml version='1.0' encoding='utf-16'?>" + envelope12(header=token_header()).decode()
    token, stripped = soap.extract_relay_token(text.encode("utf-16"))
    assert token == TOKEN
    assert stripped.startswith((b"\xff\xfe", b"\xfe\xff"))  # still UTF-16, so Content-Type stays right
    assert soap.parse_envelope(stripped).headers == ()


def test_token_from_an_already_parsed_envelope_leaves_it_untouched() -> None:
    env = soap.parse_envelope(envelope11(header=token_header()))
    token, stripped = soap.extract_relay_token(env)
    assert token == TOKEN
    assert len(env.headers) == 1  # the caller's tree is not modified
    assert soap.parse_envelope(stripped).headers == ()


def test_relay_token_header_builder_round_trips() -> None:
    block = soap.relay_token_header(TOKEN)
    data = envelope11(header=etree.tostring(block).decode())
    assert soap.extract_relay_token(data)[0] == TOKEN


def test_raw_sas_token_without_base64_is_accepted() -> None:
    token, _ = soap.extract_relay_token(envelope11(header=token_header(encoded=escape(TOKEN))))
    assert token == TOKEN


@pytest.mark.parametrize("encoded", ["", "not base64!!", "////"])
def test_malformed_token_is_an_authentication_error(encoded: str) -> None:
    with pytest.raises(AuthenticationError):
        soap.extract_relay_token(envelope11(header=token_header(encoded=encoded)))


def test_duplicate_token_headers_are_refused() -> None:
    with pytest.raises(AuthenticationError, match="more than one"):
        soap.extract_relay_token(envelope11(header=token_header() + token_header()))


def test_hostile_input_is_refused_by_token_extraction_too() -> None:
    with pytest.raises(EnvelopeError):
        soap.extract_relay_token(
            XXE.replace(b"<s:Body>", b"<s:Header>" + token_header().encode() + b"</s:Header><s:Body>")
        )


# --------------------------------------------------------------------------------------------- WS-Addressing

WSA_HEADERS = (
    f'<a:Action xmlns:a="{WSA_NS}" s:mustUnderstand="1">http://tempuri.org/ICalculator/Add</a:Action>'
    f'<a:MessageID xmlns:a="{WSA_NS}">urn:uuid:6f1d0a8e-1111-4c3b-9a0e-2b7c5d9e0001</a:MessageID>'
    f'<a:ReplyTo xmlns:a="{WSA_NS}"><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>'
    f'<a:To xmlns:a="{WSA_NS}" s:mustUnderstand="1">https://relay.example/calc</a:To>'
)


def test_addressing_headers_are_read() -> None:
    addressing = soap.parse_envelope(envelope12(header=WSA_HEADERS)).addressing
    assert addressing.action == "http://tempuri.org/ICalculator/Add"
    assert addressing.message_id == "urn:uuid:6f1d0a8e-1111-4c3b-9a0e-2b7c5d9e0001"
    assert addressing.to == "https://relay.example/calc"
    assert addressing.reply_to == soap.WSA_ANONYMOUS
    assert addressing.present and addressing.reply_to_anonymous
    assert not soap.parse_envelope(envelope12()).addressing.present


RESPONSE12 = (
    f'<?xml version="1.0" encoding="UTF-8"?><e:Envelope xmlns:e="{S12}"><e:Body>'
    '<AddResponse xmlns="http://tempuri.org/"><AddResult>3</AddResult></AddResponse></e:Body></e:Envelope>'
).encode()


def test_relates_to_and_derived_action_are_added() -> None:
    out = soap.add_response_addressing(RESPONSE12, "urn:uuid:42", request_action="http://tempuri.org/ICalculator/Add")
    root = etree.fromstring(out)
    header = root.find(f"{{{S12}}}Header")
    assert root.index(header) == 0
    assert header.findtext(f"{{{WSA_NS}}}RelatesTo") == "urn:uuid:42"
    action = header.find(f"{{{WSA_NS}}}Action")
    assert action.text == "http://tempuri.org/ICalculator/AddResponse"
    assert action.get(f"{{{S12}}}mustUnderstand") == "1"
    assert root.findtext(".//{http://tempuri.org/}AddResult") == "3"
    assert out.startswith(b"<?xml")


def test_explicit_action_wins_and_existing_headers_are_replaced() -> None:
    once = soap.add_response_addressing(RESPONSE12, "urn:uuid:1", "urn:first")
    twice = soap.add_response_addressing(once, "urn:uuid:2", "urn:second", request_action="urn:ignored")
    header = etree.fromstring(twice).find(f"{{{S12}}}Header")
    assert [h.text for h in header] == ["urn:second", "urn:uuid:2"]


def test_fault_response_gets_the_wsa_fault_action() -> None:
    fault = soap.build_fault(SoapVersion.SOAP12, "Sender", "no")
    out = soap.add_response_addressing(fault, "urn:uuid:9", request_action="urn:op")
    header = etree.fromstring(out).find(f"{{{S12}}}Header")
    assert header.findtext(f"{{{WSA_NS}}}Action") == soap.WSA_FAULT_ACTION


def test_no_action_known_adds_only_relates_to() -> None:
    header = etree.fromstring(soap.add_response_addressing(RESPONSE12, "urn:uuid:5")).find(f"{{{S12}}}Header")
    assert [etree.QName(h).localname for h in header] == ["RelatesTo"]


# --------------------------------------------------------------------------------------------- mustUnderstand


def test_unknown_must_understand_header_gives_soap12_fault_with_not_understood() -> None:
    env = soap.parse_envelope(envelope12(header='<x:Tx xmlns:x="urn:tx" s:mustUnderstand="true">1</x:Tx>'))
    result = soap.check_must_understand(env)
    assert result is not None and result.status == 500
    root = etree.fromstring(result.body)
    assert fault_of(result.body).findtext(f"{{{S12}}}Code/{{{S12}}}Value") == "s:MustUnderstand"
    not_understood = root.find(f"{{{S12}}}Header/{{{S12}}}NotUnderstood")
    prefix, _, local = not_understood.get("qname").partition(":")
    assert (not_understood.nsmap[prefix], local) == ("urn:tx", "Tx")


def test_unknown_must_understand_header_gives_soap11_fault() -> None:
    env = soap.parse_envelope(envelope11(header='<x:Tx xmlns:x="urn:tx" s:mustUnderstand="1"/>'))
    result = soap.check_must_understand(env)
    assert result is not None
    fault = fault_of(result.body)
    assert fault.findtext("faultcode") == "s:MustUnderstand"
    assert "{urn:tx}Tx" in fault.findtext("faultstring")


def test_addressing_token_and_declared_headers_count_as_understood() -> None:
    header = WSA_HEADERS + token_header().replace("<RelayAccessToken ", '<RelayAccessToken s:mustUnderstand="1" ')
    assert soap.check_must_understand(soap.parse_envelope(envelope12(header=header))) is None
    custom = '<x:Tx xmlns:x="urn:tx" s:mustUnderstand="1"/>'
    env = soap.parse_envelope(envelope12(header=custom))
    assert soap.check_must_understand(env, {"{urn:tx}Tx"}) is None
    assert soap.check_must_understand(env, {etree.QName("urn:tx", "Tx")}) is None


@pytest.mark.parametrize(
    "header",
    [
        '<x:Tx xmlns:x="urn:tx" s:mustUnderstand="0"/>',
        '<x:Tx xmlns:x="urn:tx" s:mustUnderstand="false"/>',
        '<x:Tx xmlns:x="urn:tx"/>',
        f'<x:Tx xmlns:x="urn:tx" s:mustUnderstand="1" s:role="{S12}/role/none"/>',
        '<x:Tx xmlns:x="urn:tx" s:mustUnderstand="1" s:role="urn:some-intermediary"/>',
    ],
)
def test_optional_or_untargeted_headers_are_ignored(header: str) -> None:
    assert soap.check_must_understand(soap.parse_envelope(envelope12(header=header))) is None


def test_soap12_next_role_is_targeted() -> None:
    header = f'<x:Tx xmlns:x="urn:tx" s:mustUnderstand="1" s:role="{S12}/role/next"/>'
    assert soap.check_must_understand(soap.parse_envelope(envelope12(header=header))) is not None
