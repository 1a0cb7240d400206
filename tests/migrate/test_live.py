"""The migrated sample runs: a real gateway started from the generated gateway.toml, the Calculator host serving the
generated host.toml on both layers (samples/migration/run_host.py), and callers using the keys carried over."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from hybrid.auth import build_token
from hybrid.client import HybridConnectionClient, HybridConnectionListener
from hybrid.errors import AuthorizationError
from tests.support.gateway_process import TIMEOUT_FACTOR
from wcfrelay.migrate import load_host_config, plan_migration, write_outputs

from . import SAMPLE, keys_in

run_host = pytest.importorskip("samples.migration.run_host")
call_hybrid = pytest.importorskip("samples.migration.call_hybrid")

SOAP11_ADD = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
              '<Add xmlns="http://tempuri.org/"><a>2</a><b>40</b></Add></soap:Body></soap:Envelope>')
SOAP12_NOTIFY = ('<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
                 '<Notify xmlns="http://tempuri.org/"><event>migrated</event></Notify></s:Body></s:Envelope>')


async def until_routable(http: aiohttp.ClientSession, url: str) -> None:
    """Wait until the gateway routes ``url`` to a host. A host reports Online when its link's WebSocket handshake
    completes, and the gateway registers the endpoint just after that, so the first call can briefly see 404."""
    deadline = time.monotonic() + 10 * TIMEOUT_FACTOR
    while True:
        async with http.get(url + "?wsdl") as resp:
            if resp.status != 404 or time.monotonic() > deadline:
                return
        await asyncio.sleep(0.05)


@pytest.fixture
def migrated(tmp_path, gateway_factory):
    outputs = write_outputs(plan_migration(SAMPLE), tmp_path / "out")
    gw = gateway_factory("--config", str(outputs.gateway))
    listen_key, _, send_key, _ = keys_in(SAMPLE)
    assert gw.rules == {"calculator-listen": listen_key, "calculator-send": send_key,
                        "RootManageSharedAccessKey": keys_in(SAMPLE)[3]}
    return gw, outputs


async def test_migrated_calculator_runs_on_both_layers(migrated):
    gw, outputs = migrated
    listen_cs = gw.connection_string(key_name="calculator-listen")
    send_cs = gw.connection_string(key_name="calculator-send")
    host = load_host_config(outputs.host)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_host.serve(host.endpoints, listen_cs, tls=False, stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30 * TIMEOUT_FACTOR)

        def send_token(entity: str, key_name: str = "calculator-send") -> str:
            return build_token(f"http://{gw.host}:{gw.port}/{entity}", key_name, gw.rules[key_name],
                               int(time.time()) + 600)

        async with aiohttp.ClientSession() as http:
            for plan in host.legacy:
                await until_routable(http, f"{gw.http_base}/{plan.path}")
            # Legacy layer, basicHttp: the callers' key sends; the host's key cannot; no token at all is refused.
            headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"http://tempuri.org/ICalculator/Add"'}
            async with http.post(f"{gw.http_base}/calculator", data=SOAP11_ADD,
                                 headers={**headers, "ServiceBusAuthorization": send_token("calculator")}) as resp:
                body = await resp.text()
                assert resp.status == 200, body
                assert "42</" in body
            async with http.post(f"{gw.http_base}/calculator", data=SOAP11_ADD,
                                 headers={**headers,
                                          "ServiceBusAuthorization": send_token("calculator", "calculator-listen")}
                                 ) as resp:
                assert resp.status == 403
            async with http.post(f"{gw.http_base}/calculator", data=SOAP11_ADD, headers=headers) as resp:
                assert resp.status == 401
            # netEvent with relayClientAuthenticationType None: anyone may publish.
            async with http.post(f"{gw.http_base}/calculator/events", data=SOAP12_NOTIFY,
                                 headers={"Content-Type": "application/soap+xml; charset=utf-8"}) as resp:
                assert resp.status == 202, await resp.text()
            # discoveryMode Public with its displayName: in the gateway's feed.
            async with http.get(f"{gw.http_base}/") as resp:
                feed = await resp.text()
                assert "Calculator (BasicHttp)" in feed and "calculator/ws" not in feed

        # Hybrid Connections (what NetTcpRelayBinding became): SOAP 1.2 over a hybrid WebSocket, and over HTTP.
        async with HybridConnectionClient(send_cs, entity_path="calculator-tcp", tls=False) as client:
            assert await call_hybrid.call_over_websocket(client, 2, 40) == 42
            assert await call_hybrid.call_over_http(client, 20, 22) == 42

        # The callers' key cannot listen on the hybrid connection.
        intruder = HybridConnectionListener(send_cs, entity_path="calculator-tcp", tls=False, reconnect_delays=[0.1])
        with pytest.raises(AuthorizationError):
            await intruder.open()
        await intruder.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30 * TIMEOUT_FACTOR)
