"""Hybrid Connections across three gateway nodes on a real Redis: every pairing of sender and listener node."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
import websockets

from tests.support.gateway_process import TIMEOUT_FACTOR
from tests.support.raw_listener import RawListener

PAIRS = [(s, l) for s in range(3) for l in range(3)]


async def wait_until(predicate, timeout=15.0):
    deadline = asyncio.get_running_loop().time() + timeout * TIMEOUT_FACTOR
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def health(node) -> dict:
    async with aiohttp.ClientSession() as s, s.get(f"{node.http_base}/$health") as r:
        return await r.json()


async def sees_listener(node, entity) -> bool:
    """True once `node` routes to a listener of `entity` (its own or another node's)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{node.http_base}/{entity}", headers={"ServiceBusAuthorization": node.token(entity)}) as r:
            return r.status == 200


@pytest.mark.parametrize("sender,listener", PAIRS)
async def test_websocket_echo_for_every_node_pairing(cluster, sender, listener):
    ln, sn = cluster.nodes[listener], cluster.nodes[sender]
    entity = f"ws-{sender}-{listener}"
    async with RawListener(ln.listen_url(entity), ln.token(entity)) as raw:
        await wait_until(lambda: sees_listener(sn, entity))
        async with websockets.connect(sn.connect_url(entity, "/sfx", "a=1"), compression=None, max_size=None,
                                      additional_headers={"ServiceBusAuthorization": sn.token(entity)}) as ws:
            await ws.send("hello across nodes")
            assert await ws.recv() == "hello across nodes"
            blob = bytes(range(256)) * 1024
            await ws.send(blob)
            assert await ws.recv() == blob
        # The rendezvous went to the sender's node, so the payload never crossed nodes.
        accept = next(a for a in raw.accepts if "/sfx" in a["address"])
        assert f":{sn.port}/" in accept["address"]


@pytest.mark.parametrize("sender,listener", PAIRS)
async def test_http_small_and_large_both_ways_for_every_node_pairing(cluster, sender, listener):
    ln, sn = cluster.nodes[listener], cluster.nodes[sender]
    entity = f"http-{sender}-{listener}"
    big = hashlib.sha256(b"x").digest() * 3000  # 96,000 bytes

    async def handler(head, body):
        if head["requestTarget"].endswith("/big"):
            return 200, {"X-Len": str(len(body))}, big
        return 200, {"X-Len": str(len(body))}, b"echo:" + body

    async with RawListener(ln.listen_url(entity), ln.token(entity), http=handler):
        await wait_until(lambda: sees_listener(sn, entity))
        headers = {"ServiceBusAuthorization": sn.token(entity)}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{sn.http_base}/{entity}/small", data=b"tiny", headers=headers) as r:
                assert r.status == 200 and await r.read() == b"echo:tiny"
            async with s.post(f"{sn.http_base}/{entity}/big", data=big, headers=headers) as r:
                assert r.status == 200 and r.headers["X-Len"] == str(len(big)) and await r.read() == big


async def test_listener_limit_holds_across_the_cluster(cluster, tmp_path):
    entity = "limited"
    sockets = []
    try:
        for i in range(25):
            node = cluster.nodes[i % 3]
            sockets.append(await websockets.connect(node.listen_url(entity),
                                                    additional_headers={"ServiceBusAuthorization": node.token(entity)}))
        for node in cluster.nodes:
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(node.listen_url(entity),
                                         additional_headers={"ServiceBusAuthorization": node.token(entity)})
            assert info.value.response.status_code == 403
            assert "cluster" in info.value.response.reason_phrase
    finally:
        for ws in sockets:
            await ws.close()


async def test_health_reports_node_redis_and_listeners(cluster):
    node = cluster.nodes[1]
    async with RawListener(node.listen_url("h"), node.token("h")):
        await wait_until(lambda: _has_listener(node, "h"))
        await wait_until(lambda: _alive_is(node, {"node0", "node1", "node2"}))  # heartbeats every 2 s
        report = await health(node)
    assert report["node"] == "node1" and report["redis"] == "up" and report["directory"] == "redis"
    assert report["listeners"] == {"h": 1}


async def _has_listener(node, entity) -> bool:
    return (await health(node))["listeners"].get(entity) == 1


async def test_killed_node_gives_senders_a_prompt_error_and_leaves_the_directory(cluster):
    victim, survivor = cluster.nodes[2], cluster.nodes[0]
    entity = "doomed"
    control = await websockets.connect(victim.listen_url(entity),
                                       additional_headers={"ServiceBusAuthorization": victim.token(entity)})
    await wait_until(lambda: _alive_is(survivor, {"node0", "node1", "node2"}))
    victim.proc.kill()
    victim.proc.wait()
    # No hang: the sender learns at once that the listener's node is gone (pub/sub has no subscriber for it).
    started = asyncio.get_running_loop().time()
    with pytest.raises(websockets.InvalidStatus) as info:
        await asyncio.wait_for(websockets.connect(survivor.connect_url(entity), additional_headers={
            "ServiceBusAuthorization": survivor.token(entity)}), 10 * TIMEOUT_FACTOR)
    assert info.value.response.status_code in (404, 502)
    assert asyncio.get_running_loop().time() - started < 10 * TIMEOUT_FACTOR
    # Within the heartbeat expiry the dead node leaves the directory everywhere.
    await wait_until(lambda: _alive_is(survivor, {"node0", "node1"}), timeout=20)
    await control.close()


async def _alive_is(node, expected) -> bool:
    return set((await health(node))["nodes_alive"]) == expected


async def test_redis_down_keeps_local_service_and_recovers(cluster):
    a, b = cluster.nodes[0], cluster.nodes[1]
    async with RawListener(a.listen_url("local"), a.token("local")):
        cluster.redis.stop()
        await wait_until(lambda: _redis_is(a, "down"), timeout=20)
        # Local listeners keep working on their own node.
        async with websockets.connect(a.connect_url("local"), compression=None,
                                      additional_headers={"ServiceBusAuthorization": a.token("local")}) as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"
        cluster.redis.start()
        await wait_until(lambda: _redis_is(a, "up"), timeout=20)
        await wait_until(lambda: _redis_is(b, "up"), timeout=20)
        # State was registered again: another node routes to the listener.
        await wait_until(lambda: sees_listener(b, "local"), timeout=20)
    # The outage and the recovery are warnings; the ordinary first connection of each node is not.
    assert any("WARNING" in line and "unreachable" in line for line in a.output)
    assert any("WARNING" in line and "reachable again" in line for line in a.output)
    assert any(" INFO " in line and "redis" in line and "connected: node" in line for line in a.output)
    assert not any("WARNING" in line and "connected: node" in line for line in b.output)


async def _redis_is(node, state) -> bool:
    return (await health(node))["redis"] == state
