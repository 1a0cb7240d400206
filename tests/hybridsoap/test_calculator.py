"""The Calculator sample three ways through one real gateway: zeep over the legacy BasicHttp binding, over Hybrid
Connections HTTP, and over SOAP on one hybrid WebSocket (100 calls in flight, every answer matched to its call),
plus a callback from the service while a call is in progress; and the sample host and callers as processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import requests
import zeep
from lxml import etree

from samples.calculator import host as calculator_host
from samples.calculator import service as calculator
from tests.hybridsoap.support import REPO, env, read_until, stop_process, wait_routable
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_support import HostThread, module_gateway
from wcfrelay.client import relay_zeep_client
from wcfrelay.client.websocket_transport import (
    CallbackMessage,
    HybridWebSocketTransport,
    hybrid_websocket_zeep_client,
)
from wcfrelay.service.host import ConnectionStatus, HybridEndpoint

HC = calculator_host.HYBRID_PATH


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> GatewayProcess:
    yield from module_gateway(tmp_path_factory)


@pytest.fixture(scope="module")
def sample(gw: GatewayProcess):
    """The Calculator sample's host (samples/calculator/host.py), with its hybrid endpoint, on a thread."""
    import logging

    logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)
    host = calculator_host.build_host(gw.connection_string(), plaintext=True)
    with HostThread(host) as thread:
        for path in ("calculator", HC):
            wait_routable(gw, path)
        yield thread


def _fault_local_code(fault: zeep.exceptions.Fault) -> str:
    return (fault.code or "").rpartition(":")[2]


def test_same_results_over_basic_http_hybrid_http_and_hybrid_websocket(gw: GatewayProcess, sample) -> None:
    results = {}

    def over_http(path: str) -> tuple:
        client = relay_zeep_client(f"{gw.http_base}/{path}?wsdl", connection_string=gw.connection_string())
        with pytest.raises(zeep.exceptions.Fault) as failed:
            client.service.Fail("on purpose")
        return (client.service.Add(2, 40), client.service.Echo("hello"), failed.value.message,
                _fault_local_code(failed.value))

    results["basicHttp"] = over_http("calculator")
    results["hybrid HTTP"] = over_http(HC)

    async def over_websocket() -> tuple:
        client = hybrid_websocket_zeep_client(f"{gw.http_base}/{HC}?wsdl", connection_string=gw.connection_string())
        async with client:
            assert isinstance(client.transport, HybridWebSocketTransport)
            with pytest.raises(zeep.exceptions.Fault) as failed:
                await client.service.Fail("on purpose")
            out = (await client.service.Add(2, 40), await client.service.Echo("hello"), failed.value.message,
                   _fault_local_code(failed.value))
            assert client.transport.connections_opened == 1
            return out

    results["hybrid WebSocket"] = asyncio.run(over_websocket())
    # SOAP 1.1 calls the sender's fault "Client", SOAP 1.2 "Sender": the same fault in each version's words.
    assert results["basicHttp"] == (42, "hello", "on purpose", "Client")
    assert results["hybrid HTTP"] == (42, "hello", "on purpose", "Sender")
    assert results["hybrid WebSocket"] == (42, "hello", "on purpose", "Sender")


def test_hybrid_wsdl_names_the_public_url(gw: GatewayProcess, sample) -> None:
    response = requests.get(f"{gw.http_base}/{HC}?wsdl", headers={"ServiceBusAuthorization": gw.token(HC)},
                            timeout=10)
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    address = root.find(".//{http://schemas.xmlsoap.org/wsdl/soap12/}address")
    assert address is not None and address.get("location") == f"{gw.http_base}/{HC}"
    # no token, no WSDL: the hybrid connection requires client authorization
    assert requests.get(f"{gw.http_base}/{HC}?wsdl", timeout=10).status_code == 401


def test_100_concurrent_calls_on_one_websocket(gw: GatewayProcess, sample) -> None:
    endpoint = next(e for e in sample.host.endpoints if isinstance(e, HybridEndpoint))
    before = endpoint.websocket_connections

    async def main() -> None:
        client = hybrid_websocket_zeep_client(f"{gw.http_base}/{HC}?wsdl", connection_string=gw.connection_string())
        async with client:
            calls = [client.service.Add(i, 1000 * i + 7) for i in range(100)]
            calls += [client.service.Echo(f"text-{i}") for i in range(20)]
            results = await asyncio.gather(*calls)
            for i in range(100):
                assert results[i] == 1001 * i + 7, (i, results[i])
            assert results[100:] == [f"text-{i}" for i in range(20)]
            assert client.transport.connections_opened == 1
            assert client.transport.calls == 120
            assert client.transport.in_flight == 0

    asyncio.run(main())
    assert endpoint.websocket_connections == before + 1


def test_duplex_callback_of_the_calculator_sample(gw: GatewayProcess, sample) -> None:
    received: list[CallbackMessage] = []

    async def main() -> int:
        client = hybrid_websocket_zeep_client(f"{gw.http_base}/{HC}?wsdl", connection_string=gw.connection_string(),
                                              callbacks={calculator.EQUATION_ACTION: received.append})
        async with client:
            total = await client.service.AddAndReport(20, 22)
            # The callback was sent before the answer, on the same socket, so it is in by now.
            assert [calculator.equation_of(m.body) for m in received] == ["20 + 22 = 42"]
            assert client.transport.callbacks_received == 1
            return total

    assert asyncio.run(main()) == 42
    assert received[0].action == calculator.EQUATION_ACTION and received[0].message_id


def test_the_sync_wrapper(gw: GatewayProcess, sample) -> None:
    client = hybrid_websocket_zeep_client(f"{gw.http_base}/{HC}?wsdl", connection_string=gw.connection_string(),
                                          sync=True)
    with client:
        assert client.service.Add(2, 40) == 42
        assert client.service.Echo("sync") == "sync"
        with pytest.raises(zeep.exceptions.Fault):
            client.service.Fail("x")
        assert client.transport.transport.connections_opened == 1


def test_hybrid_endpoint_status_is_online(sample) -> None:
    endpoint = next(e for e in sample.host.endpoints if isinstance(e, HybridEndpoint))
    assert endpoint.status is ConnectionStatus.ONLINE and sample.host.status is ConnectionStatus.ONLINE
    assert endpoint.listener is not None and endpoint.listener.is_online
    assert endpoint.url == f"ws://{endpoint.authority}/$hc/{HC}"


def test_sample_host_and_websocket_caller_as_processes(tmp_path) -> None:
    from tests.support.gateway_process import start_gateway

    gateway = start_gateway(tmp_path / "state")
    host = subprocess.Popen([sys.executable, "-m", "samples.calculator.host", "--plaintext", "--log-level", "ERROR"],
                            cwd=REPO, env=env(WCFRELAY_CONNECTION_STRING=gateway.connection_string()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = read_until(host, lambda line: line == "status: Online", 30)
        assert f"endpoint {gateway.http_base}/{HC} (HybridConnectionRelayBinding)" in lines
        wait_routable(gateway, HC)
        caller = subprocess.run([sys.executable, "-m", "samples.calculator.caller_websocket",
                                 gateway.connection_string(), "--plaintext", "--http"], cwd=REPO, env=env(),
                                capture_output=True, text=True, timeout=60 * TIMEOUT_FACTOR, check=False)
        assert caller.returncode == 0, caller.stderr
        out = caller.stdout.splitlines()
        assert "Add(2, 40) = 42" in out and "Echo('hello') = hello" in out
        assert any(line.startswith("Fail -> SOAP fault") and line.endswith("on purpose") for line in out)
        assert any(line.startswith("100 concurrent Add calls on one WebSocket: 100 correct") for line in out)
        assert "AddAndReport(20, 22) = 42; callback Equation: 20 + 22 = 42" in out
        assert "WebSockets opened: 1" in out
        assert "HTTP Add(2, 40) = 42" in out
        assert stop_process(host) == 0
    finally:
        stop_process(host)
        gateway.stop()
