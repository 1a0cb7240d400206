"""``wcfrelay forward``: an unchanged WCF-style SOAP service in a process of its own, called through the relay by zeep
from the rewritten WSDL, over the legacy binding and over Hybrid Connections; its faults reach callers intact;
bodies stream; an unreachable service and bad command lines get clear errors."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest
import requests
import zeep
from lxml import etree

from tests.hybridsoap.support import REPO, ServiceProcess, env, read_until, stop_process, wait_routable
from tests.hybridsoap.wcf_style_service import CONTRACT_NS
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_support import module_gateway, soap_fault
from wcfrelay.client import RelayToken, RelayTokenAuth, audience_for
from wcfrelay.client.websocket_transport import hybrid_websocket_zeep_client
from wcfrelay.service.forward import map_address, rewrite_metadata

WSDL = "http://schemas.xmlsoap.org/wsdl/"
XSD = "http://www.w3.org/2001/XMLSchema"


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> GatewayProcess:
    yield from module_gateway(tmp_path_factory)


@pytest.fixture(scope="module")
def service():
    svc = ServiceProcess()
    yield svc
    svc.stop()


def _forward(gw: GatewayProcess, to: str, path: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wcfrelay.forward", "--to", to, "--path", path, "--plaintext",
                             "--log-level", "WARNING", *extra],
                            cwd=REPO, env=env(WCFRELAY_CONNECTION_STRING=gw.connection_string()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module", params=["legacy", "hybrid"])
def forwarded(request, gw: GatewayProcess, service: ServiceProcess):
    """``wcfrelay forward`` (as ``python -m wcfrelay.forward``) in front of the service, on one layer."""
    layer = request.param
    path = f"calc-{layer}"
    proc = _forward(gw, service.url, path, "--layer", layer)
    try:
        lines = read_until(proc, lambda line: line == "status: Online", 30)
        assert any(line.startswith(f"forwarding {gw.http_base}/{path} (") and line.endswith(service.url)
                   for line in lines), lines
        wait_routable(gw, path)
        yield layer, path
    finally:
        assert stop_process(proc) == 0


class RecordingTransport(zeep.Transport):
    """zeep's transport with the relay token, remembering every document it loads."""

    def __init__(self, gw: GatewayProcess, path: str) -> None:
        session = requests.Session()
        session.auth = RelayTokenAuth(RelayToken.from_credentials(audience_for(f"{gw.http_base}/{path}"),
                                                                  connection_string=gw.connection_string()))
        super().__init__(session=session)
        self.loaded: list[str] = []

    def load(self, url: str) -> bytes:
        self.loaded.append(url)
        return super().load(url)


def test_zeep_calls_the_unchanged_service_from_the_rewritten_wsdl(gw: GatewayProcess, service: ServiceProcess,
                                                                  forwarded) -> None:
    _layer, path = forwarded
    public = f"{gw.http_base}/{path}"
    transport = RecordingTransport(gw, path)
    client = zeep.Client(f"{public}?wsdl", transport=transport)
    # zeep fetched the WSDL, the imported WSDL and both schemas, all from the relay
    assert sorted(transport.loaded) == sorted([f"{public}?wsdl", f"{public}?wsdl=wsdl0", f"{public}?xsd=xsd0",
                                               f"{public}?xsd=xsd1"])
    port = next(iter(next(iter(client.wsdl.services.values())).ports.values()))
    assert port.binding_options["address"] == public

    result = client.service.Add(2, 40)
    assert result.AddResult == 42 and result.Trace == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert client.service.Echo("héllo <&> wörld") == "héllo <&> wörld"
    with pytest.raises(zeep.exceptions.Fault) as failed:
        client.service.Fail("the service's own fault")
    fault = failed.value
    assert fault.code == "a:CalcFailure" and fault.message == "the service's own fault"
    assert fault.detail.findtext(f".//{{{CONTRACT_NS}}}Code") == "4711"
    assert fault.detail.findtext(f".//{{{CONTRACT_NS}}}Reason") == "the service's own fault"


def test_metadata_names_only_the_relay(gw: GatewayProcess, service: ServiceProcess, forwarded) -> None:
    _layer, path = forwarded
    public = f"{gw.http_base}/{path}"
    headers = {"ServiceBusAuthorization": gw.token(path)}
    documents = {}
    for query in ("wsdl", "wsdl=wsdl0", "xsd=xsd0", "xsd=xsd1"):
        response = requests.get(f"{public}?{query}", headers=headers, timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/xml")
        documents[query] = response.content
        assert f":{service.port}".encode() not in response.content, query  # no local address left anywhere
    root = etree.fromstring(documents["wsdl"])
    assert root.find(f"{{{WSDL}}}import").get("location") == f"{public}?wsdl=wsdl0"
    assert root.find(f".//{{{WSDL}}}port/{{http://schemas.xmlsoap.org/wsdl/soap/}}address").get("location") == public
    # the EndpointReference named the machine as "localhost" (as WCF writes machine names): rewritten too
    assert root.findtext(f".//{{{WSDL}}}port/{{http://www.w3.org/2005/08/addressing}}EndpointReference/"
                         "{http://www.w3.org/2005/08/addressing}Address") == public
    contract = etree.fromstring(documents["wsdl=wsdl0"])
    assert [i.get("schemaLocation") for i in contract.iter(f"{{{XSD}}}import")] == [f"{public}?xsd=xsd0",
                                                                                 f"{public}?xsd=xsd1"]
    xsd0 = etree.fromstring(documents["xsd=xsd0"])
    assert xsd0.find(f"{{{XSD}}}import").get("schemaLocation") == f"{public}?xsd=xsd1"
    # a page that is not metadata passes through untouched
    page = requests.get(public, headers=headers, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")


def test_bodies_stream_through_unchanged(gw: GatewayProcess, forwarded) -> None:
    _layer, path = forwarded
    headers = {"ServiceBusAuthorization": gw.token(path)}
    size = 300_000  # past the 64 KiB a hybrid connection carries inline: a rendezvous, streamed
    response = requests.get(f"{gw.http_base}/{path}/blob?size={size}", headers=headers, timeout=30)
    assert response.status_code == 200 and response.headers["X-Blob-Size"] == str(size)
    assert response.content == bytes(i % 251 for i in range(size))
    # the rest of the path goes along (percent-encoded as it came), and the service's own 404 comes back
    missing = requests.get(f"{gw.http_base}/{path}/no%20such/th%C3%AFng?x=1", headers=headers, timeout=30)
    assert missing.status_code == 404
    echoed = requests.get(f"{gw.http_base}/{path}/echo-path/a%20b/%C3%AF?x=1&y=%2F", headers=headers, timeout=30)
    assert echoed.status_code == 200 and echoed.text == "/CalcService.svc/echo-path/a%20b/%C3%AF?x=1&y=%2F"
    client = zeep.Client(f"{gw.http_base}/{path}?wsdl", transport=RecordingTransport(gw, path))
    text = "0123456789abcdef" * 12_500  # 200 KB each way
    assert client.service.Echo(text) == text


def test_soap_over_a_hybrid_websocket_to_the_forwarded_service(gw: GatewayProcess, forwarded) -> None:
    layer, path = forwarded
    if layer != "hybrid":
        pytest.skip("WebSocket senders reach hybrid connections only")

    async def main() -> None:
        client = hybrid_websocket_zeep_client(f"{gw.http_base}/{path}?wsdl", connection_string=gw.connection_string())
        async with client:
            results = await asyncio.gather(*(client.service.Add(i, i) for i in range(30)))
            assert [r.AddResult for r in results] == [2 * i for i in range(30)]
            with pytest.raises(zeep.exceptions.Fault) as failed:
                await client.service.Fail("over the socket")
            assert failed.value.code == "a:CalcFailure" and failed.value.message == "over the socket"
            assert client.transport.connections_opened == 1

    asyncio.run(main())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("layer", ["legacy", "hybrid"])
def test_an_unreachable_service_gets_the_caller_a_clear_fault(gw: GatewayProcess, layer: str) -> None:
    port = _closed_port()
    path = f"down-{layer}"
    proc = _forward(gw, f"http://127.0.0.1:{port}/Gone.svc", path, "--layer", layer, "--timeout", "5")
    try:
        lines = read_until(proc, lambda line: line == "status: Online", 30)
        assert any("cannot be reached now" in line for line in lines), lines  # warned at start
        token = gw.token(path)
        body = (f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Add xmlns="{CONTRACT_NS}">'
                "<a>1</a><b>2</b></Add></s:Body></s:Envelope>")
        import time

        deadline = time.monotonic() + 15 * TIMEOUT_FACTOR
        while True:
            response = requests.post(f"{gw.http_base}/{path}", data=body, timeout=30,
                                     headers={"ServiceBusAuthorization": token,
                                              "Content-Type": "text/xml; charset=utf-8",
                                              "SOAPAction": f'"{CONTRACT_NS}/ICalcService/Add"'})
            if response.status_code not in (404,) and b"ServiceUnreachable" in response.content \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert response.status_code == 502
        fault = soap_fault(response.content)
        assert fault["version"] == "1.1" and fault["code"].endswith("Server.ServiceUnreachable")
        assert "cannot be reached" in fault["reason"] and str(port) not in fault["reason"]
        wsdl = requests.get(f"{gw.http_base}/{path}?wsdl", headers={"ServiceBusAuthorization": token}, timeout=30)
        assert wsdl.status_code == 502 and b"cannot be reached" in wsdl.content
        # zeep cannot load the WSDL, and says 502
        with pytest.raises(requests.HTTPError, match="502"):
            zeep.Client(f"{gw.http_base}/{path}?wsdl", transport=RecordingTransport(gw, path))
    finally:
        assert stop_process(proc) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "ftp://files.example/Service.svc"], "absolute http:// or https:// URL"),
        (["--to", "not a url"], "absolute http:// or https:// URL"),
        (["--to", "http://localhost:8080/Service.svc?wsdl"], "must not have a query"),
        (["--to", "http://localhost:99999/Service.svc"], "invalid port"),
        (["--to", "http://user:pw@localhost/Service.svc"], "credentials"),
        (["--to", "http://localhost/S.svc", "--path", "$hc/x"], "reserved"),
        (["--to", "http://localhost/S.svc", "--layer", "hybrid", "--discovery", "public"], "never listed"),
        (["--to", "http://localhost/S.svc", "--max-message", "99999999999"], "max_received_message_size"),
    ],
)
def test_bad_command_lines_are_refused_clearly(args: list[str], message: str) -> None:
    argv = [sys.executable, "-m", "wcfrelay.forward", "--path", "calc", *args] if "--path" not in args else \
        [sys.executable, "-m", "wcfrelay.forward", *args]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
                            env=env(WCFRELAY_CONNECTION_STRING="Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=r;"
                                                               "SharedAccessKey=0123456789abcdef0123"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("wcfrelay forward: error: ") and message in result.stderr, result.stderr


def test_missing_arguments_are_refused() -> None:
    no_cs = {k: v for k, v in env().items() if k != "WCFRELAY_CONNECTION_STRING"}
    result = subprocess.run([sys.executable, "-m", "wcfrelay.forward", "--to", "http://localhost/S.svc", "--path",
                             "calc"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False, env=no_cs)
    assert result.returncode == 2 and "WCFRELAY_CONNECTION_STRING" in result.stderr
    for argv in (["--path", "calc"], ["--to", "http://localhost/S.svc"],
                 ["--to", "http://localhost/S.svc", "--path", "calc", "--timeout", "0"],
                 ["--to", "http://localhost/S.svc", "--path", "calc", "--layer", "tcp"]):
        result = subprocess.run([sys.executable, "-m", "wcfrelay.forward", *argv], cwd=REPO, capture_output=True,
                                text=True, timeout=60, check=False, env=no_cs)
        assert result.returncode == 2 and "error:" in result.stderr, (argv, result.stderr)


def test_a_refused_listen_credential_ends_the_command(gw: GatewayProcess, service: ServiceProcess) -> None:
    bad = gw.connection_string().replace(gw.key, "0123456789abcdef0123456789abcdef")
    result = subprocess.run([sys.executable, "-m", "wcfrelay.forward", "--to", service.url, "--path", "calc-bad",
                             "--plaintext", "--log-level", "ERROR"], cwd=REPO, capture_output=True, text=True,
                            timeout=60 * TIMEOUT_FACTOR, check=False, env=env(WCFRELAY_CONNECTION_STRING=bad))
    assert result.returncode == 1
    assert "wcfrelay forward: error:" in result.stderr and "401" in result.stderr


# ------------------------------------------------------------------------------------------------- rewriting rules


def test_address_mapping_rules() -> None:
    target, public = "http://localhost:8080/Calc/Service.svc", "https://relay.example.com/calc"
    assert map_address("http://localhost:8080/Calc/Service.svc", target, public) == public
    assert map_address("http://localhost:8080/Calc/Service.svc?xsd=xsd0", target, public) == f"{public}?xsd=xsd0"
    assert map_address("http://MACHINE:8080/calc/service.svc/mex", target, public) == f"{public}/mex"
    assert map_address("http://www.w3.org/2001/xml.xsd", target, public) is None  # elsewhere
    assert map_address("http://other.example:9999/Calc/Service.svc", target, public) is None  # another server
    assert map_address("http://localhost:8080/Calc/Service.svcx", target, public) is None  # not under the path
    assert map_address("?xsd=xsd0", target, public) is None  # relative: resolves against the public URL anyway
    assert map_address("urn:x", target, public) is None


def test_rewrite_refuses_dtds_and_leaves_other_documents() -> None:
    target, public = "http://localhost:8080/S.svc", "http://gw/s"
    evil = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/">&x;</wsdl:definitions>')
    assert rewrite_metadata(evil, target, public) is None
    assert rewrite_metadata(b"<html><body>http://localhost:8080/S.svc</body></html>", target, public) is None
    document, count = rewrite_metadata(
        f'<xs:schema xmlns:xs="{XSD}"><xs:include schemaLocation="http://localhost:8080/S.svc?xsd=xsd2"/>'
        f'<xs:redefine schemaLocation="http://localhost:8080/S.svc?xsd=xsd3"/></xs:schema>'.encode(), target, public)
    assert count == 2 and b"http://gw/s?xsd=xsd2" in document and b"http://gw/s?xsd=xsd3" in document
