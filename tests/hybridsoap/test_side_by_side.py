"""One service, two layers, one gateway: the same Spyne application on a legacy binding and on a hybrid connection
at the same time, so callers of either keep working while the service moves; and the hybrid endpoint's status
following its listener through a gateway restart."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest
import requests
import zeep

from hybrid.errors import EndpointNotFound
from samples.calculator import service as calculator
from tests.hybridsoap.support import wait_routable
from tests.support.gateway_process import GatewayProcess
from tests.wcfrelay.test_e2e_support import HostThread, wait_for
from wcfrelay.bindings import BasicHttpRelayBinding, HybridConnectionRelayBinding, ServiceRegistrySettings
from wcfrelay.client import relay_zeep_client
from wcfrelay.client.websocket_transport import hybrid_websocket_zeep_client
from wcfrelay.service.host import ConnectionStatus, HybridEndpoint, RelayEndpoint, RelayServiceHost

LEGACY, HYBRID = "side/calculator", "side-calculator"
CALLS = 60


def test_one_service_on_a_legacy_binding_and_a_hybrid_connection_at_once(gateway: GatewayProcess) -> None:
    application = calculator.make_application("soap11")  # one service object behind both endpoints
    host = RelayServiceHost(gateway.connection_string(), tls=False)
    legacy = host.add_endpoint(application, LEGACY, BasicHttpRelayBinding(),
                               ServiceRegistrySettings("public", "Calculator"))
    hybrid = host.add_endpoint(application, HYBRID, HybridConnectionRelayBinding())
    assert isinstance(legacy, RelayEndpoint) and isinstance(hybrid, HybridEndpoint)
    with HostThread(host):
        assert host.status is ConnectionStatus.ONLINE
        for path in (LEGACY, HYBRID):
            wait_routable(gateway, path)

        # Same WSDL on both, but for its own address: moving is a change of URL for callers, nothing else.
        wsdl = {path: requests.get(f"{gateway.http_base}/{path}?wsdl", timeout=10,
                                   headers={"ServiceBusAuthorization": gateway.token(path)}).content
                for path in (LEGACY, HYBRID)}
        assert wsdl[LEGACY].replace(f"{gateway.http_base}/{LEGACY}".encode(), b"@") == \
            wsdl[HYBRID].replace(f"{gateway.http_base}/{HYBRID}".encode(), b"@")

        legacy_client = relay_zeep_client(f"{gateway.http_base}/{LEGACY}?wsdl",
                                          connection_string=gateway.connection_string())
        hybrid_client = relay_zeep_client(f"{gateway.http_base}/{HYBRID}?wsdl",
                                          connection_string=gateway.connection_string())
        start = threading.Barrier(3)

        def http_calls(client: zeep.Client, offset: int) -> list[int]:
            start.wait()
            return [client.service.Add(i, offset) for i in range(CALLS)]

        async def websocket_calls() -> list[int]:
            client = hybrid_websocket_zeep_client(f"{gateway.http_base}/{HYBRID}?wsdl",
                                                  connection_string=gateway.connection_string())
            async with client:
                await client.transport.connect()
                await asyncio.get_running_loop().run_in_executor(None, start.wait)
                return await asyncio.gather(*(client.service.Add(i, 2000) for i in range(CALLS)))

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            old = pool.submit(http_calls, legacy_client, 1000)
            new = pool.submit(http_calls, hybrid_client, 3000)
            socket_results = pool.submit(asyncio.run, websocket_calls())
            assert old.result(60) == [i + 1000 for i in range(CALLS)]
            assert new.result(60) == [i + 3000 for i in range(CALLS)]
            assert socket_results.result(60) == [i + 2000 for i in range(CALLS)]

        with pytest.raises(zeep.exceptions.Fault) as old_fault:
            legacy_client.service.Fail("same fault")
        with pytest.raises(zeep.exceptions.Fault) as new_fault:
            hybrid_client.service.Fail("same fault")
        assert (old_fault.value.code, old_fault.value.message) == (new_fault.value.code, new_fault.value.message)

        # Discovery lists the legacy endpoint only (hybrid connections are never in the feed).
        feed = requests.get(f"{gateway.http_base}/", timeout=10).text
        assert "Calculator" in feed and HYBRID not in feed
        assert legacy.status is hybrid.status is ConnectionStatus.ONLINE
        assert hybrid.http_requests >= CALLS and hybrid.websocket_connections == 1


def test_hybrid_endpoint_status_follows_its_listener(gateway_factory, tmp_path) -> None:
    first = gateway_factory(state_dir=tmp_path / "gw")
    events: list[str] = []
    host = RelayServiceHost(first.connection_string(), tls=False, backoff_initial=0.05, backoff_max=0.2)
    endpoint = host.add_endpoint(calculator.make_application("soap12"), "status-hc", HybridConnectionRelayBinding())
    endpoint.on_online = lambda: events.append("Online")
    endpoint.on_connecting = lambda: events.append("Connecting")
    endpoint.on_offline = lambda: events.append("Offline")
    with HostThread(host):
        assert endpoint.status is ConnectionStatus.ONLINE and events == ["Connecting", "Online"]
        first.stop()
        wait_for(lambda: endpoint.status is ConnectionStatus.CONNECTING, what="Connecting after the gateway left")
        assert host.status is ConnectionStatus.CONNECTING and endpoint.last_error is not None
        again = gateway_factory("--port", str(first.port), state_dir=tmp_path / "gw")  # same port, same key
        wait_for(lambda: endpoint.status is ConnectionStatus.ONLINE, timeout=20, what="Online again")
        wait_routable(again, "status-hc")
        client = relay_zeep_client(f"{again.http_base}/status-hc?wsdl", connection_string=again.connection_string())
        assert client.service.Add(1, 2) == 3
    assert events[:4] == ["Connecting", "Online", "Connecting", "Online"] and events[-1] == "Offline"


def test_an_undeclared_hybrid_connection_fails_open(gateway_factory, tmp_path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[namespace]\ndynamic = false\n\n[[hybrid_connections]]\nname = "declared-hc"\n'
                      "requires_client_authorization = false\n")
    gw = gateway_factory("--config", str(config))
    host = RelayServiceHost(gw.connection_string(), tls=False)
    host.add_endpoint(calculator.make_application("soap12"), "undeclared-hc", HybridConnectionRelayBinding())
    with pytest.raises(EndpointNotFound):
        asyncio.run(host.open())
    assert host.status is ConnectionStatus.OFFLINE

    # a declared hybrid connection that does not require client authorization takes anonymous callers
    open_host = RelayServiceHost(gw.connection_string(), tls=False)
    open_host.add_endpoint(calculator.make_application("soap12"), "declared-hc",
                           HybridConnectionRelayBinding(client_authentication="none"))
    with HostThread(open_host):
        wait_routable(gw, "declared-hc")
        anonymous = zeep.Client(f"{gw.http_base}/declared-hc?wsdl")
        assert anonymous.service.Add(20, 22) == 42

        async def over_websocket() -> int:
            async with hybrid_websocket_zeep_client(f"{gw.http_base}/declared-hc?wsdl") as client:
                return await client.service.Add(1, 1)

        assert asyncio.run(over_websocket()) == 2
