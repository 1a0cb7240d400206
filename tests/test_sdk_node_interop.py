"""The project's Python SDK against the official Node clients, both ways, over ws and wss (issue acceptance:
"Python listener with hyco-ws sender, hyco-ws listener with Python sender: the same echo tests pass")."""

from __future__ import annotations

import asyncio

import pytest

from hybrid.client import HybridConnectionClient, HybridConnectionListener
from tests.support.gateway_process import TIMEOUT_FACTOR
from tests.support.node import pattern_bytes, run_script
from tests.test_node_clients import SENDER_TEXT, _echo_expectations, node, node_modules, relay  # noqa: F401


def _sdk_kwargs(relay):  # noqa: F811
    return {"tls": relay.tls, "ssl": relay.ssl_context} if relay.tls else {"tls": False}


async def test_sdk_listener_echoes_for_hyco_ws_sender(relay):  # noqa: F811
    gw, hc = relay.gw, relay.hc("sdk-listener-node-sender")
    seen = []

    async def echo(conn):
        seen.append((conn.context.suffix, conn.context.query))
        async for message in conn:
            await conn.send(message)

    listener = HybridConnectionListener(gw.connection_string(hc), connection_handler=echo, **_sdk_kwargs(relay))
    async with listener:
        result = await asyncio.to_thread(run_script, "ws_sender.js", gw.connect_url(hc, "/n/s", "k=v"),
                                         gw.token(hc), env=relay.node_env)
    assert result.returncode == 0, result.text
    _echo_expectations(result.events, pattern_bytes(1024))
    assert seen and seen[0][0] == "/n/s" and "k=v" in seen[0][1]


async def test_sdk_sender_echoes_through_hyco_ws_listener(relay, node):  # noqa: F811
    gw, hc = relay.gw, relay.hc("node-listener-sdk-sender")
    listener = node.start("ws_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    await asyncio.to_thread(listener.wait_ready)
    client = HybridConnectionClient(gw.connection_string(hc), **_sdk_kwargs(relay))
    conn = await client.connect(suffix="/from/sdk", query="a=1")
    try:
        await conn.send("sdk text")
        assert await asyncio.wait_for(conn.recv(), 10 * TIMEOUT_FACTOR) == "sdk text"
        payload = pattern_bytes(70_000)
        await conn.send(payload)
        echoed = await asyncio.wait_for(conn.recv(), 10 * TIMEOUT_FACTOR)
        assert isinstance(echoed, bytes) and echoed == payload
    finally:
        await conn.close()


@pytest.mark.parametrize("size", [0, 1024, 100_000])
async def test_sdk_http_client_against_hyco_https_listener(relay, node, size):  # noqa: F811
    gw, hc = relay.gw, relay.hc(f"node-https-sdk-{size}")
    listener = node.start("https_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    await asyncio.to_thread(listener.wait_ready)
    client = HybridConnectionClient(gw.connection_string(hc), **_sdk_kwargs(relay))
    body = pattern_bytes(size)
    response = await client.request("POST" if size else "GET", suffix="/echo" if size else "/hello", body=body)
    assert response.status == 200
    if size:
        assert response.body == body
