"""SOAP calls carried by the gateway's front end (no aiohttp on the call path): pipelined calls on one connection,
a caller that leaves mid-call, a host that never answers, and the hand-over of a call too large for it."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from lxml import etree

from samples.calculator.service import make_application
from tests.gateway.test_front_end import read_response
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_inflight import SlowService, release, started
from tests.wcfrelay.test_e2e_support import CT11, TNS, HostThread, add_body, env11, soap_fault
from wcfrelay.bindings import BasicHttpRelayBinding
from wcfrelay.service.host import RelayServiceHost
from wcfrelay.service.spyne_app import build_application


def soap_post(gw: GatewayProcess, path: str, body: bytes) -> bytes:
    lines = [f"POST /{path} HTTP/1.1", f"Host: {gw.host}:{gw.port}", f"Content-Type: {CT11}",
             f"ServiceBusAuthorization: {gw.token(path)}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def front_stats(gw: GatewayProcess) -> dict[str, int]:
    with urllib.request.urlopen(f"{gw.http_base}/$health", timeout=10 * TIMEOUT_FACTOR) as r:
        return json.loads(r.read())["front_end"]


def result_of(body: bytes) -> str:
    root = etree.fromstring(body)
    return "".join(root.itertext()).strip()


def host_for(gw: GatewayProcess, path: str, *, slow: bool = False) -> HostThread:
    """A host for ``path``: the Calculator, or the service whose Block operation waits for ``release``."""
    host = RelayServiceHost(gw.connection_string(), tls=False, max_workers=4)
    app = build_application([SlowService], tns=TNS, name="Slow") if slow else make_application("soap11")
    host.add_endpoint(app, path, BasicHttpRelayBinding())
    return HostThread(host)


def test_pipelined_soap_calls_are_answered_in_order(gateway: GatewayProcess) -> None:
    async def run() -> None:
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(b"".join(soap_post(gateway, "front/pipe", env11(add_body(i, 1000))) for i in range(25)))
        for i in range(25):
            status, headers, body = await read_response(reader)
            assert status == 200 and headers["content-type"].startswith("text/xml")
            assert result_of(body) == str(i + 1000)
        writer.close()

    with host_for(gateway, "front/pipe"):
        before = front_stats(gateway)
        asyncio.run(run())
        assert front_stats(gateway)["carried"] - before["carried"] == 25  # none of them went through aiohttp


def test_a_caller_that_leaves_mid_call_harms_nobody(gateway: GatewayProcess) -> None:
    started.clear()
    release.clear()

    async def run() -> None:
        _, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(soap_post(gateway, "front/gone", env11(f'<Block xmlns="{TNS}"/>')))
        await writer.drain()
        assert await asyncio.to_thread(started.wait, 10 * TIMEOUT_FACTOR)
        writer.transport.abort()  # the caller is gone while the host works
        await asyncio.sleep(0.1)
        release.set()  # its reply arrives for nobody: dropped
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(soap_post(gateway, "front/gone", env11(add_body(2, 3))))
        status, _, body = await read_response(reader)
        assert status == 200 and result_of(body) == "5"
        writer.close()

    with host_for(gateway, "front/gone", slow=True):
        asyncio.run(run())
    assert gateway.alive()


def test_a_host_that_never_answers_gives_a_timeout_fault(gateway_factory, tmp_path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\nrequest_timeout = 1\n")
    gw = gateway_factory("--config", str(cfg))
    started.clear()
    release.clear()

    async def run() -> None:
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        writer.write(soap_post(gw, "front/mute", env11(f'<Block xmlns="{TNS}"/>')))
        status, headers, body = await read_response(reader)
        assert status == 504 and headers["content-type"].startswith("text/xml")
        assert "did not respond" in (soap_fault(body)["reason"] or "")
        writer.close()

    try:
        with host_for(gw, "front/mute", slow=True):
            asyncio.run(run())
    finally:
        release.set()


def test_a_call_larger_than_the_front_end_takes_is_handed_over_on_the_same_connection(
        gateway: GatewayProcess) -> None:
    text = "x" * (200 * 1024)

    async def run() -> None:
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        big = env11(f'<Echo xmlns="{TNS}"><text>{text}</text></Echo>')
        writer.write(soap_post(gateway, "front/big", env11(add_body(1, 1))) + soap_post(gateway, "front/big", big))
        assert result_of((await read_response(reader))[2]) == "2"
        assert result_of((await read_response(reader))[2]) == text
        writer.close()

    with host_for(gateway, "front/big"):
        before = front_stats(gateway)
        asyncio.run(run())
        after = front_stats(gateway)
        assert after["carried"] - before["carried"] == 1
        assert after["handed_over"] - before["handed_over"] >= 2  # the big call's connection, the /$health probe
