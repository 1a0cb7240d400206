"""SpyneBytesApp: the Calculator sample driven by raw bytes, by zeep and by suds, with no sockets."""

from __future__ import annotations

import io
import json
from urllib.parse import urlsplit

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport
from zeep.wsa import WsAddressingPlugin

from hybrid.errors import BadRequest, EndpointNotFound
from samples.calculator import service as calculator
from wcfrelay import soap
from wcfrelay.service.spyne_app import SoapResult, SpyneBytesApp, parse_content_type, request_action

S11 = soap.SOAP11_ENV_NS
S12 = soap.SOAP12_ENV_NS
TNS = "http://tempuri.org/"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
PUBLIC_URL = "https://relay.example.net/calc"
CT11 = "text/xml; charset=utf-8"


@pytest.fixture(scope="module")
def app11() -> SpyneBytesApp:
    return SpyneBytesApp(calculator.make_application("soap11"))


@pytest.fixture(scope="module")
def app12() -> SpyneBytesApp:
    return SpyneBytesApp(calculator.make_application("soap12"))


@pytest.fixture(scope="module")
def app_http() -> SpyneBytesApp:
    return SpyneBytesApp(calculator.make_application("http"))


@pytest.fixture(autouse=True)
def _fresh_record() -> None:
    calculator.clear_received()


def env11(body: str, header: str = "") -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return f'<s:Envelope xmlns:s="{S11}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode()


def env12(body: str, header: str = "") -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return f'<s:Envelope xmlns:s="{S12}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode()


def add(a: int, b: int) -> str:
    return f'<Add xmlns="{TNS}"><a>{a}</a><b>{b}</b></Add>'


def result_text(result: SoapResult, name: str) -> str | None:
    return etree.fromstring(result.body).findtext(f".//{{{TNS}}}{name}")


def fault11(result: SoapResult) -> tuple[str, str]:
    fault = etree.fromstring(result.body).find(f"{{{S11}}}Body/{{{S11}}}Fault")
    assert fault is not None, result.body
    return fault.findtext("faultcode"), fault.findtext("faultstring")


# --------------------------------------------------------------------------------------------- SOAP 1.1


def test_soap11_add(app11: SpyneBytesApp) -> None:
    result = app11.handle(env11(add(2, 40)), content_type=CT11, soap_action='"Add"')
    assert (result.status, result.content_type, result.one_way) == (200, CT11, False)
    assert result_text(result, "AddResult") == "42"
    assert result.operation == f"{{{TNS}}}Add"


def test_wcf_style_envelope_with_wcf_soap_action(app11: SpyneBytesApp) -> None:
    # What a WCF BasicHttpBinding client writes: s: prefix, default-namespace body, quoted action.
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        b'<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        b'<Add xmlns="http://tempuri.org/"><a>-5</a><b>3</b></Add></s:Body></s:Envelope>'
    )
    result = app11.handle(body, content_type=CT11, soap_action='"http://tempuri.org/ICalculator/Add"')
    assert result.status == 200
    assert result_text(result, "AddResult") == "-2"


def test_soap11_echo_keeps_unicode_and_markup(app11: SpyneBytesApp) -> None:
    text = "h\u00e9llo \u2603 &lt;b&gt;&amp;&lt;/b&gt;"
    result = app11.handle(env11(f'<Echo xmlns="{TNS}"><text>{text}</text></Echo>'), content_type=CT11)
    assert result.status == 200
    assert result_text(result, "EchoResult") == "h\u00e9llo \u2603 <b>&</b>"


def test_soap11_latin1_request_charset(app11: SpyneBytesApp) -> None:
    echo = env11(f'<Echo xmlns="{TNS}"><text>caf\u00e9</text></Echo>').decode()
    body = '<?xml version="1.0" encoding="iso-8859-1"?>' + echo
    result = app11.handle(body.encode("latin-1"), content_type="text/xml; charset=iso-8859-1")
    assert result_text(result, "EchoResult") == "caf\u00e9"


def test_soap11_fail_is_a_client_fault_with_500(app11: SpyneBytesApp) -> None:
    result = app11.handle(env11(f'<Fail xmlns="{TNS}"><message>out of paper</message></Fail>'), content_type=CT11)
    assert (result.status, result.content_type) == (500, CT11)
    code, reason = fault11(result)
    assert code.endswith(":Client") and reason == "out of paper"


def test_add_overflow_is_a_fault_not_a_wrong_answer(app11: SpyneBytesApp) -> None:
    result = app11.handle(env11(add(2**31 - 1, 1)), content_type=CT11)
    assert result.status == 500
    assert fault11(result)[0].endswith("Client.Overflow")


def test_bad_argument_type_is_a_client_fault(app11: SpyneBytesApp) -> None:
    result = app11.handle(env11(f'<Add xmlns="{TNS}"><a>two</a><b>3</b></Add>'), content_type=CT11)
    assert result.status == 500
    assert ":Client" in fault11(result)[0]


@pytest.mark.parametrize(("op", "arg"), [("Log", "message"), ("Notify", "event")])
def test_one_way_operations_answer_202_and_deliver(app11: SpyneBytesApp, op: str, arg: str) -> None:
    assert app11.is_one_way(f"{{{TNS}}}{op}")
    result = app11.handle(env11(f'<{op} xmlns="{TNS}"><{arg}>disk full</{arg}></{op}>'), content_type=CT11)
    assert result == SoapResult(202, "", b"", one_way=True, operation=f"{{{TNS}}}{op}")
    assert list(calculator.received) == [(op, "disk full")]


def test_one_way_detection_from_envelope(app11: SpyneBytesApp) -> None:
    env = soap.parse_envelope(env11(f'<Log xmlns="{TNS}"><message>x</message></Log>'))
    assert app11.is_one_way(env.body_qname)
    assert not app11.is_one_way(soap.parse_envelope(env11(add(1, 2))).body_qname)
    assert app11.one_way_operations == {f"{{{TNS}}}Log", f"{{{TNS}}}Notify"}


def test_unknown_operation_is_a_clear_client_fault(app11: SpyneBytesApp) -> None:
    result = app11.handle(env11(f'<Multiply xmlns="{TNS}"><a>1</a></Multiply>'), content_type=CT11)
    assert result.status == 500
    code, reason = fault11(result)
    assert code == "s:Client.OperationNotFound"
    assert "{http://tempuri.org/}Multiply" in reason


def test_empty_body_is_a_client_fault(app11: SpyneBytesApp) -> None:
    code, _ = fault11(app11.handle(env11(""), content_type=CT11))
    assert code == "s:Client.EmptyBody"


# --------------------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "body",
    [
        b'<!DOCTYPE s:Envelope [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
        + env11(f'<Echo xmlns="{TNS}"><text>&amp;d;</text></Echo>').replace(b"&amp;d;", b"&d;"),
        b'<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        + env11(f'<Echo xmlns="{TNS}"><text>&amp;xxe;</text></Echo>').replace(b"&amp;xxe;", b"&xxe;"),
        b"<!DOCTYPE s:Envelope>" + env11(add(1, 2)),
    ],
    ids=["billion-laughs", "xxe-etc-passwd", "doctype"],
)
def test_doctype_attacks_get_a_client_fault_and_never_reach_the_service(app11: SpyneBytesApp, body: bytes) -> None:
    result = app11.handle(body, content_type=CT11)
    assert (result.status, result.content_type) == (500, CT11)
    code, reason = fault11(result)
    assert code == "s:Client.InvalidEnvelope"
    assert "DOCTYPE" in reason
    assert b"root:" not in result.body and b"aaaaaaaaaa" not in result.body


@pytest.mark.parametrize("body", [b"not xml at all", b"", b"<s:Envelope xmlns:s='x'"])
def test_non_xml_gets_a_client_fault(app11: SpyneBytesApp, body: bytes) -> None:
    result = app11.handle(body, content_type=CT11)
    assert result.status == 500
    assert fault11(result)[0] == "s:Client.InvalidEnvelope"


def test_soap12_on_soap11_endpoint_is_version_mismatch(app11: SpyneBytesApp) -> None:
    result = app11.handle(env12(add(1, 2)), content_type="application/soap+xml; charset=utf-8")
    assert result.status == 500
    fault = etree.fromstring(result.body).find(f"{{{S12}}}Body/{{{S12}}}Fault")
    assert fault.findtext(f"{{{S12}}}Code/{{{S12}}}Value") == "s:VersionMismatch"


def test_soap11_on_soap12_endpoint_is_version_mismatch(app12: SpyneBytesApp) -> None:
    result = app12.handle(env11(add(1, 2)), content_type=CT11)
    assert result.content_type == CT11
    assert fault11(result)[0] == "s:VersionMismatch"


def test_unknown_must_understand_header_is_refused_before_the_service_runs(app11: SpyneBytesApp) -> None:
    header = '<t:Transaction xmlns:t="urn:example:tx" s:mustUnderstand="1">42</t:Transaction>'
    result = app11.handle(env11(f'<Log xmlns="{TNS}"><message>x</message></Log>', header), content_type=CT11)
    assert result.status == 500
    assert fault11(result)[0] == "s:MustUnderstand"
    assert list(calculator.received) == []  # the one-way op never ran


def test_optional_unknown_header_is_fine(app11: SpyneBytesApp) -> None:
    header = '<t:Transaction xmlns:t="urn:example:tx">42</t:Transaction>'
    assert app11.handle(env11(add(1, 1), header), content_type=CT11).status == 200


def test_request_size_limit() -> None:
    small = SpyneBytesApp(calculator.make_application("soap11"), max_request_size=200)
    result = small.handle(env11(f'<Echo xmlns="{TNS}"><text>{"x" * 500}</text></Echo>'), content_type=CT11)
    assert result.status == 500
    assert fault11(result)[0] == "s:Client.PayloadTooLarge"


def test_missing_content_type_is_tolerated_for_a_valid_envelope(app11: SpyneBytesApp) -> None:
    assert app11.handle(env11(add(1, 2)), content_type="").status == 200


def test_invalid_public_url_port_is_a_bad_request(app11: SpyneBytesApp) -> None:
    with pytest.raises(BadRequest):
        app11.handle(env11(add(1, 2)), content_type=CT11, public_url="http://gw:99999/calc")


def test_get_without_wsdl_query_is_refused(app11: SpyneBytesApp) -> None:
    result = app11.handle(b"", http_method="GET", path="/calc")
    assert result.status == 405
    assert ":Client" in fault11(result)[0]


# --------------------------------------------------------------------------------------------- SOAP 1.2


CT12 = 'application/soap+xml; charset=utf-8; action="http://tempuri.org/ICalculator/Add"'


def test_soap12_add(app12: SpyneBytesApp) -> None:
    result = app12.handle(env12(add(20, 22)), content_type=CT12)
    assert result.status == 200
    assert result.content_type == "application/soap+xml; charset=utf-8"
    assert etree.QName(etree.fromstring(result.body)).namespace == S12
    assert result_text(result, "AddResult") == "42"


def test_soap12_fail_is_a_sender_fault(app12: SpyneBytesApp) -> None:
    result = app12.handle(env12(f'<Fail xmlns="{TNS}"><message>nope</message></Fail>'), content_type=CT12)
    assert result.status == 500
    fault = etree.fromstring(result.body).find(f"{{{S12}}}Body/{{{S12}}}Fault")
    value = fault.find(f"{{{S12}}}Code/{{{S12}}}Value")
    prefix, _, local = value.text.partition(":")
    assert (value.nsmap[prefix], local) == (S12, "Sender")
    assert fault.findtext(f"{{{S12}}}Reason/{{{S12}}}Text") == "nope"


def test_soap12_ws_addressing_reply_headers(app12: SpyneBytesApp) -> None:
    wsa = soap.WSA_NS
    header = (
        f'<a:Action xmlns:a="{wsa}" s:mustUnderstand="1">http://tempuri.org/ICalculator/Add</a:Action>'
        f'<a:MessageID xmlns:a="{wsa}">urn:uuid:0b7c1c39-3b5e-4a51-9d4e-5c8f0f0e0a01</a:MessageID>'
        f'<a:ReplyTo xmlns:a="{wsa}"><a:Address>{soap.WSA_ANONYMOUS}</a:Address></a:ReplyTo>'
        f'<a:To xmlns:a="{wsa}" s:mustUnderstand="1">{PUBLIC_URL}</a:To>'
    )
    result = app12.handle(env12(add(1, 2), header), content_type=CT12)
    assert result.status == 200
    root = etree.fromstring(result.body)
    assert root.findtext(f"{{{S12}}}Header/{{{wsa}}}RelatesTo") == "urn:uuid:0b7c1c39-3b5e-4a51-9d4e-5c8f0f0e0a01"
    assert root.findtext(f"{{{S12}}}Header/{{{wsa}}}Action") == "http://tempuri.org/ICalculator/AddResponse"
    assert root.findtext(f".//{{{TNS}}}AddResult") == "3"


def test_no_addressing_headers_when_the_request_had_none(app12: SpyneBytesApp) -> None:
    result = app12.handle(env12(add(1, 2)), content_type=CT12)
    assert etree.fromstring(result.body).find(f"{{{S12}}}Header") is None


# --------------------------------------------------------------------------------------------- HTTP-RPC + JSON


def test_http_get_add_returns_json(app_http: SpyneBytesApp) -> None:
    result = app_http.handle(b"", http_method="GET", path="/calc/Add", query_string="a=19&b=23")
    assert result.status == 200
    assert result.content_type.startswith("application/json")
    assert json.loads(result.body) == 42


def test_http_post_json_and_form(app_http: SpyneBytesApp) -> None:
    result = app_http.handle(b'{"a": 1, "b": 2}', content_type="application/json", path="/calc/Add")
    assert json.loads(result.body) == 3
    result = app_http.handle(b"text=caf%C3%A9+ok", content_type="application/x-www-form-urlencoded", path="/Echo")
    assert json.loads(result.body) == "caf\u00e9 ok"


def test_http_fault_and_unknown_operation(app_http: SpyneBytesApp) -> None:
    result = app_http.handle(b"", http_method="GET", path="/calc/Fail", query_string="message=no")
    assert result.status == 400
    assert json.loads(result.body)["faultstring"] == "no"
    result = app_http.handle(b"", http_method="GET", path="/calc/Multiply")
    assert result.status == 404


def test_http_unreadable_bodies(app_http: SpyneBytesApp) -> None:
    assert app_http.handle(b"<a/>", content_type="text/xml", path="/calc/Add").status == 400
    assert app_http.handle(b'{"a": {"nested": 1}}', content_type="application/json", path="/calc/Add").status == 400
    assert app_http.handle(b"[1, 2]", content_type="application/json", path="/calc/Add").status == 400
    # nested deeper than the JSON decoder goes: a client error, not the service failing
    deep = app_http.handle(b"[" * 100_000 + b"]" * 100_000, content_type="application/json", path="/calc/Add")
    assert deep.status == 400 and b"nested too deeply" in deep.body


def test_http_one_way(app_http: SpyneBytesApp) -> None:
    result = app_http.handle(b"", http_method="GET", path="/calc/Notify", query_string="event=started")
    assert (result.status, result.one_way) == (202, True)
    assert list(calculator.received) == [("Notify", "started")]


def test_http_endpoint_has_no_wsdl(app_http: SpyneBytesApp) -> None:
    with pytest.raises(EndpointNotFound):
        app_http.wsdl(PUBLIC_URL)


# --------------------------------------------------------------------------------------------- WSDL


def test_wsdl_carries_the_public_address_and_wcf_names(app11: SpyneBytesApp) -> None:
    root = etree.fromstring(app11.wsdl(PUBLIC_URL))
    assert root.get("targetNamespace") == TNS
    service = root.find(f"{{{WSDL_NS}}}service")
    assert service.get("name") == "CalculatorService"
    address = service.find(f"{{{WSDL_NS}}}port/{{http://schemas.xmlsoap.org/wsdl/soap/}}address")
    assert address.get("location") == PUBLIC_URL
    assert root.find(f"{{{WSDL_NS}}}portType").get("name") == "ICalculator"
    actions = {
        op.get("name"): op.find("{http://schemas.xmlsoap.org/wsdl/soap/}operation").get("soapAction")
        for op in root.find(f"{{{WSDL_NS}}}binding").iterfind(f"{{{WSDL_NS}}}operation")
    }
    assert actions["Add"] == "http://tempuri.org/ICalculator/Add"
    # xs:int like WCF, not xs:integer
    types = {e.get("name"): e.get("type") for e in root.iter("{http://www.w3.org/2001/XMLSchema}element")}
    assert types["a"] == "xs:int" and types["AddResult"] == "xs:int"


def test_wsdl_one_way_operations_have_no_output_and_no_dangling_headers(app11: SpyneBytesApp) -> None:
    root = etree.fromstring(app11.wsdl(PUBLIC_URL))
    port_ops = {op.get("name"): op for op in root.find(f"{{{WSDL_NS}}}portType")}
    assert port_ops["Log"].find(f"{{{WSDL_NS}}}output") is None
    assert port_ops["Add"].find(f"{{{WSDL_NS}}}output") is not None
    assert not list(root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}header"))


def test_wsdl_per_public_url_and_bounded_cache() -> None:
    app = SpyneBytesApp(calculator.make_application("soap11"), wsdl_cache_size=2)
    urls = [f"https://gw{i}.example/calc" for i in range(4)]
    docs = [app.wsdl(url) for url in urls]
    for url, doc in zip(urls, docs):
        assert f'location="{url}"'.encode() in doc
    assert len(app._wsdl_cache) == 2
    assert app.wsdl(urls[-1]) is docs[-1]  # cached
    assert app.wsdl(urls[-1] + "?wsdl") is docs[-1]  # query string is not part of the address


def test_wsdl_through_handle(app12: SpyneBytesApp) -> None:
    for query in ("wsdl", "WSDL", "singleWsdl"):
        result = app12.handle(b"", http_method="GET", query_string=query, path="/calc", public_url=PUBLIC_URL)
        assert result.status == 200
        assert b"http://schemas.xmlsoap.org/wsdl/soap12/" in result.body
    with pytest.raises(BadRequest):
        app12.handle(b"", http_method="GET", query_string="wsdl")
    with pytest.raises(BadRequest):
        app12.wsdl("relay.example.net/calc")


def test_content_type_helpers() -> None:
    assert parse_content_type(CT12) == (
        "application/soap+xml",
        {"charset": "utf-8", "action": "http://tempuri.org/ICalculator/Add"},
    )
    assert request_action(CT12, None) == "http://tempuri.org/ICalculator/Add"
    assert request_action(CT11, '"urn:x"') == "urn:x"
    assert request_action(CT11, '""') is None


# --------------------------------------------------------------------------------------------- zeep and suds


class InProcessTransport(Transport):
    """A zeep transport that serves WSDL and calls from a SpyneBytesApp: no network at all."""

    def __init__(self, app: SpyneBytesApp) -> None:
        super().__init__()
        self.app = app
        self.sent: list[tuple[dict, bytes]] = []

    def load(self, url: str) -> bytes:
        parts = urlsplit(url)
        result = self.app.handle(
            b"",
            http_method="GET",
            path=parts.path,
            query_string=parts.query,
            public_url=f"{parts.scheme}://{parts.netloc}{parts.path}",
        )
        assert result.status == 200, result
        return result.body

    def post(self, address: str, message: bytes, headers: dict) -> requests.Response:
        self.sent.append((dict(headers), message))
        result = self.app.handle(
            message,
            content_type=headers.get("Content-Type", ""),
            soap_action=headers.get("SOAPAction"),
            path=urlsplit(address).path,
            public_url=address,
        )
        response = requests.Response()
        response.status_code = result.status
        response._content = result.body
        response.headers["Content-Type"] = result.content_type
        response.url = address
        return response


def zeep_client(app: SpyneBytesApp, **kwargs) -> tuple[zeep.Client, InProcessTransport]:
    transport = InProcessTransport(app)
    return zeep.Client(PUBLIC_URL + "?wsdl", transport=transport, **kwargs), transport


def test_zeep_parses_the_wsdl_and_its_add_request_is_accepted(app11: SpyneBytesApp) -> None:
    client, transport = zeep_client(app11)
    assert client.service._binding_options["address"] == PUBLIC_URL
    assert client.service.Add(a=7, b=35) == 42
    headers, message = transport.sent[-1]
    assert headers["SOAPAction"] == '"http://tempuri.org/ICalculator/Add"'
    assert soap.parse_envelope(message).body_qname.text == f"{{{TNS}}}Add"
    assert client.service.Echo(text="h\u00e9llo") == "h\u00e9llo"


def test_zeep_sees_faults_and_one_way(app11: SpyneBytesApp) -> None:
    client, _ = zeep_client(app11)
    with pytest.raises(zeep.exceptions.Fault) as info:
        client.service.Fail(message="broken")
    assert info.value.message == "broken"
    assert client.service.Log(message="via zeep") is None
    assert list(calculator.received) == [("Log", "via zeep")]


def test_zeep_soap12_with_ws_addressing(app12: SpyneBytesApp) -> None:
    client, transport = zeep_client(app12, plugins=[WsAddressingPlugin()])
    assert client.service.Add(a=1, b=2) == 3
    headers, message = transport.sent[-1]
    assert headers["Content-Type"].startswith("application/soap+xml")
    assert soap.parse_envelope(message).addressing.message_id is not None
    with pytest.raises(zeep.exceptions.Fault) as info:
        client.service.Fail(message="soap12 fault")
    assert info.value.message == "soap12 fault"


def test_zeep_relay_token_header_reaches_the_app_harmlessly(app11: SpyneBytesApp) -> None:
    # A gateway strips it; if one does not, the service still works (the header is understood).
    client, transport = zeep_client(app11)
    token = "SharedAccessSignature sr=x&sig=y&se=1&skn=z"
    header = soap.relay_token_header(token)
    header.set(f"{{{S11}}}mustUnderstand", "1")
    assert client.service.Add(a=1, b=1, _soapheaders=[header]) == 2
    got, stripped = soap.extract_relay_token(transport.sent[-1][1])
    assert got == token
    assert app11.handle(stripped, content_type=CT11).status == 200


def test_suds_calls_the_service(app11: SpyneBytesApp) -> None:
    from suds.client import Client
    from suds.transport import Reply
    from suds.transport import Transport as SudsTransport

    class SudsInProcess(SudsTransport):
        def open(self, request):
            parts = urlsplit(request.url)
            result = app11.handle(
                b"",
                http_method="GET",
                path=parts.path,
                query_string=parts.query,
                public_url=f"{parts.scheme}://{parts.netloc}{parts.path}",
            )
            return io.BytesIO(result.body)

        def send(self, request):
            headers = {k.lower(): v for k, v in request.headers.items()}
            result = app11.handle(
                request.message,
                content_type=headers.get("content-type", ""),
                soap_action=headers.get("soapaction"),
                public_url=request.url,
            )
            return Reply(result.status, {"content-type": result.content_type}, result.body)

    client = Client(PUBLIC_URL + "?wsdl", transport=SudsInProcess(), cache=None, faults=False)
    status, value = client.service.Add(2, 3)
    assert (status, value) == (200, 5)
    status, fault = client.service.Fail("suds fault")
    assert status == 500
    assert fault.faultstring == "suds fault"
