"""Real callers (zeep sync and async, suds, raw HTTP) reach the Calculator hosted by RelayServiceHost through a
real gateway process."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
import suds
import suds.client
import zeep
import zeep.exceptions
from lxml import etree
from zeep.plugins import HistoryPlugin
from zeep.wsa import WsAddressingPlugin

from samples.calculator import service as calculator
from tests.support.gateway_process import GatewayProcess
from tests.wcfrelay.test_e2e_support import (
    CT11,
    CT12,
    TNS,
    WSA,
    HostThread,
    add_body,
    env11,
    env12,
    module_gateway,
    soap_fault,
    wait_for,
)
from wcfrelay.bindings import (
    BasicHttpRelayBinding,
    NetOnewayRelayBinding,
    ServiceRegistrySettings,
    WebHttpRelayBinding,
    WS2007HttpRelayBinding,
)
from wcfrelay.client import relay_async_zeep_client, relay_zeep_client
from wcfrelay.service.host import RelayServiceHost

WSDL_SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12_NS = "http://schemas.xmlsoap.org/wsdl/soap12/"


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory) -> GatewayProcess:
    yield from module_gateway(tmp_path_factory)


@pytest.fixture(scope="module")
def calc(shared_gateway: GatewayProcess) -> GatewayProcess:
    host = RelayServiceHost(shared_gateway.connection_string(), tls=False)
    host.add_endpoint(calculator.make_application("soap11"), "calculator", BasicHttpRelayBinding(),
                      ServiceRegistrySettings("public", "Calculator"))
    host.add_endpoint(calculator.make_application("soap12"), "calculator/ws", WS2007HttpRelayBinding())
    host.add_endpoint(calculator.make_application("soap12"), "calculator/log", NetOnewayRelayBinding())
    host.add_endpoint(calculator.make_application("http"), "calculator/web", WebHttpRelayBinding())
    host.add_endpoint(calculator.make_application("soap11"), "calculator/anon",
                      BasicHttpRelayBinding(client_authentication="none"))
    with HostThread(host):
        yield shared_gateway


@pytest.fixture(autouse=True)
def _fresh_record() -> None:
    calculator.clear_received()


def test_wsdl_names_the_gateway_as_the_service_address(calc: GatewayProcess) -> None:
    for path, soap_ns in (("calculator", WSDL_SOAP_NS), ("calculator/ws", WSDL_SOAP12_NS)):
        response = requests.get(f"{calc.http_base}/{path}?wsdl",
                                headers={"ServiceBusAuthorization": calc.token(path)}, timeout=10)
        assert response.status_code == 200, response.text
        root = etree.fromstring(response.content)
        locations = [a.get("location") for a in root.iter(f"{{{soap_ns}}}address")]
        assert locations == [f"{calc.http_base}/{path}"]


def test_zeep_sync_add_echo_fail(calc: GatewayProcess) -> None:
    client = relay_zeep_client(f"{calc.http_base}/calculator?wsdl", connection_string=calc.connection_string())
    assert client.service.Add(2, 40) == 42
    assert client.service.Echo("grüße <&>") == "grüße <&>"
    with pytest.raises(zeep.exceptions.Fault) as info:
        client.service.Fail("on purpose")
    assert info.value.message == "on purpose"
    assert "Client" in info.value.code
    # Fault answers from the service are still faults after an Add overflow (a typed client fault).
    with pytest.raises(zeep.exceptions.Fault, match="does not fit"):
        client.service.Add(2**31 - 1, 1)


def test_zeep_one_way_operation_on_basic_http_returns_202_and_runs(calc: GatewayProcess) -> None:
    client = relay_zeep_client(f"{calc.http_base}/calculator?wsdl", connection_string=calc.connection_string())
    assert client.service.Log("from zeep") is None
    wait_for(lambda: ("Log", "from zeep") in calculator.received, what="Log to run")


@pytest.mark.parametrize("carrier", ["ServiceBusAuthorization", "Authorization", "soap"])
def test_zeep_token_carriers(calc: GatewayProcess, carrier: str) -> None:
    history = HistoryPlugin()
    client = relay_zeep_client(f"{calc.http_base}/calculator?wsdl", connection_string=calc.connection_string(),
                               token_carrier=carrier, plugins=[history])
    assert client.service.Add(1, 2) == 3
    sent = history.last_sent["envelope"]
    has_soap_token = sent.find(".//{http://schemas.microsoft.com/netservices/2009/05/servicebus/connect}"
                               "RelayAccessToken") is not None
    assert has_soap_token == (carrier == "soap")
    assert client.relay_token.fetches == 1  # one token, reused for the WSDL and the call


def test_zeep_async_add_echo_fail_and_20_in_flight(calc: GatewayProcess) -> None:
    async def main() -> None:
        client = relay_async_zeep_client(f"{calc.http_base}/calculator?wsdl",
                                         connection_string=calc.connection_string())
        async with client:
            assert await client.service.Add(20, 22) == 42
            assert await client.service.Echo("async") == "async"
            with pytest.raises(zeep.exceptions.Fault) as info:
                await client.service.Fail("async fault")
            assert info.value.message == "async fault"
            results = await asyncio.gather(*(client.service.Add(i, i) for i in range(20)))
            assert results == [2 * i for i in range(20)]

    asyncio.run(main())


def test_suds_add_echo_fail(calc: GatewayProcess) -> None:
    client = suds.client.Client(f"{calc.http_base}/calculator?wsdl", cache=None,
                                headers={"ServiceBusAuthorization": calc.token("calculator")})
    assert client.service.Add(5, 6) == 11
    assert client.service.Echo("suds") == "suds"
    with pytest.raises(suds.WebFault) as info:
        client.service.Fail("suds fault")
    assert info.value.fault.faultstring == "suds fault"


def test_raw_wcf_style_soap11_post(calc: GatewayProcess) -> None:
    response = requests.post(
        f"{calc.http_base}/calculator",
        data=env11(add_body(19, 23)),
        headers={"Content-Type": CT11, "SOAPAction": '"http://tempuri.org/ICalculator/Add"',
                 "ServiceBusAuthorization": calc.token("calculator")},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/xml")
    assert etree.fromstring(response.content).findtext(f".//{{{TNS}}}AddResult") == "42"


def test_ws2007_with_ws_addressing_relates_to_message_id(calc: GatewayProcess) -> None:
    history = HistoryPlugin()
    client = relay_zeep_client(f"{calc.http_base}/calculator/ws?wsdl", connection_string=calc.connection_string(),
                               plugins=[WsAddressingPlugin(), history])
    assert client.service.Add(3, 4) == 7
    message_id = history.last_sent["envelope"].findtext(f".//{{{WSA}}}MessageID")
    assert message_id
    assert history.last_received["envelope"].findtext(f".//{{{WSA}}}RelatesTo") == message_id
    assert history.last_received["envelope"].findtext(f".//{{{WSA}}}Action")


def test_one_megabyte_request_and_response_on_basic_http(calc: GatewayProcess) -> None:
    client = relay_zeep_client(f"{calc.http_base}/calculator?wsdl", connection_string=calc.connection_string())
    text = "".join(chr(ord("a") + i % 26) for i in range(1 << 20))
    assert client.service.Echo(text) == text


def test_net_oneway_delivers_and_answers_202(calc: GatewayProcess) -> None:
    response = requests.post(
        f"{calc.http_base}/calculator/log",
        data=env12(f'<Log xmlns="{TNS}"><message>oneway</message></Log>'),
        headers={"Content-Type": CT12,
                 "ServiceBusAuthorization": calc.token("calculator/log")},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    wait_for(lambda: ("Log", "oneway") in calculator.received, what="Log over NetOneway")


def test_net_oneway_refuses_a_message_for_the_wrong_soap_version_with_a_fault(calc: GatewayProcess) -> None:
    """The host checks a one-way message before acknowledging it, so a broken one is a fault, not a silent 202."""
    response = requests.post(
        f"{calc.http_base}/calculator/log",
        data=env11(f'<Log xmlns="{TNS}"><message>v11</message></Log>'),
        headers={"Content-Type": CT11, "ServiceBusAuthorization": calc.token("calculator/log")},
        timeout=10,
    )
    assert response.status_code == 500
    assert soap_fault(response.content)["code"].endswith("VersionMismatch")
    assert ("Log", "v11") not in calculator.received


def test_web_http_endpoint(calc: GatewayProcess) -> None:
    response = requests.get(f"{calc.http_base}/calculator/web/Add", params={"a": 40, "b": 2},
                            headers={"ServiceBusAuthorization": calc.token("calculator/web")}, timeout=10)
    assert response.status_code == 200, response.text
    assert json.loads(response.content) == 42


def test_client_authentication_none_needs_no_token(calc: GatewayProcess) -> None:
    client = relay_zeep_client(f"{calc.http_base}/calculator/anon?wsdl")
    assert client.service.Add(1, 1) == 2


def test_raw_wcf_style_ws2007_post_gets_ws_addressing_reply(calc: GatewayProcess) -> None:
    """What a WCF WS2007HttpBinding client (security None, Soap12WSAddressing10) puts on the wire."""
    message_id = "urn:uuid:6c7ae6a2-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
    action = "http://tempuri.org/ICalculator/Add"
    header = (f'<a:Action s:mustUnderstand="1" xmlns:a="{WSA}">{action}</a:Action>'
              f'<a:MessageID xmlns:a="{WSA}">{message_id}</a:MessageID>'
              f'<a:ReplyTo xmlns:a="{WSA}"><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address>'
              f'</a:ReplyTo><a:To s:mustUnderstand="1" xmlns:a="{WSA}">{calc.http_base}/calculator/ws</a:To>')
    response = requests.post(
        f"{calc.http_base}/calculator/ws",
        data=env12(add_body(40, 2), header),
        headers={"Content-Type": f'application/soap+xml; charset=utf-8; action="{action}"',
                 "ServiceBusAuthorization": calc.token("calculator/ws")},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/soap+xml")
    root = etree.fromstring(response.content)
    assert root.findtext(f".//{{{TNS}}}AddResult") == "42"
    assert root.findtext(f".//{{{WSA}}}RelatesTo") == message_id
    assert root.findtext(f".//{{{WSA}}}Action") == action + "Response"
