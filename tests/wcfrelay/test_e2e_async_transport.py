"""zeep.AsyncClient through the relay: the aiohttp transport against zeep's stock httpx AsyncTransport, 20 calls
in flight each. Both must be correct; the throughput of each is printed (``pytest -s``) for comparison, not
asserted, since it depends on the machine."""

from __future__ import annotations

import asyncio
import time

import pytest
import zeep

from samples.calculator import service as calculator
from tests.support.gateway_process import GatewayProcess
from tests.wcfrelay.test_e2e_support import HostThread, module_gateway
from wcfrelay.bindings import BasicHttpRelayBinding
from wcfrelay.client import AiohttpTransport, relay_async_zeep_client
from wcfrelay.service.host import RelayServiceHost

IN_FLIGHT = 20
CALLS = 400


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory) -> GatewayProcess:
    yield from module_gateway(tmp_path_factory)


@pytest.fixture(scope="module")
def calc(shared_gateway: GatewayProcess) -> GatewayProcess:
    host = RelayServiceHost(shared_gateway.connection_string(), tls=False)
    host.add_endpoint(calculator.make_application("soap11"), "bench/calc", BasicHttpRelayBinding())
    with HostThread(host):
        yield shared_gateway


async def _drive(client: zeep.AsyncClient, calls: int, in_flight: int) -> float:
    """Run ``calls`` Add calls with ``in_flight`` at a time; returns calls per second. Checks every result."""
    queue = iter(range(calls))

    async def worker() -> None:
        for i in queue:
            assert await client.service.Add(i, 1) == i + 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return calls / (time.perf_counter() - began)


def test_aiohttp_transport_20_in_flight(calc: GatewayProcess) -> None:
    async def main() -> float:
        client = relay_async_zeep_client(f"{calc.http_base}/bench/calc?wsdl",
                                         connection_string=calc.connection_string())
        assert isinstance(client.transport, AiohttpTransport)
        async with client:
            await _drive(client, IN_FLIGHT, IN_FLIGHT)  # warm the connection pool
            return await _drive(client, CALLS, IN_FLIGHT)

    rate = asyncio.run(main())
    print(f"\nzeep.AsyncClient + AiohttpTransport, {IN_FLIGHT} in flight: {rate:.0f} calls/s")
    assert rate > 0


def test_stock_httpx_transport_20_in_flight(calc: GatewayProcess) -> None:
    httpx = pytest.importorskip("httpx")
    from zeep.transports import AsyncTransport

    token = calc.token("bench/calc")

    class RelayAuth(httpx.Auth):
        def auth_flow(self, request):
            request.headers["ServiceBusAuthorization"] = token
            yield request

    async def main() -> float:
        # zeep replaces a passed-in client's headers (python-zeep#1210), so the token goes in through httpx auth;
        # the WSDL is loaded by a separate synchronous client that needs it too.
        transport = AsyncTransport(client=httpx.AsyncClient(auth=RelayAuth(), timeout=60),
                                   wsdl_client=httpx.Client(auth=RelayAuth(), timeout=60))
        client = zeep.AsyncClient(f"{calc.http_base}/bench/calc?wsdl", transport=transport)
        async with client:
            await _drive(client, IN_FLIGHT, IN_FLIGHT)
            return await _drive(client, CALLS, IN_FLIGHT)

    rate = asyncio.run(main())
    print(f"\nzeep.AsyncClient + stock httpx AsyncTransport, {IN_FLIGHT} in flight: {rate:.0f} calls/s")
    assert rate > 0
