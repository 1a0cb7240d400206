"""The gateway never buffers without bound: large bodies stream, slow readers slow the writer.

Memory is the gateway process's *peak* resident set (VmHWM), read from /proc before and after, so a transient
spike counts too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
import websockets

MiB = 1024 * 1024


def peak_rss(gw) -> int:
    with open(f"/proc/{gw.proc.pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


async def streaming_http_listener(gw, entity, seen: dict):
    """A listener that reads rendezvous request bodies frame by frame and answers with their size and hash."""
    control = await websockets.connect(gw.listen_url(entity), compression=None,
                                       additional_headers={"ServiceBusAuthorization": gw.token(entity)})

    async def rendezvous(address):
        async with websockets.connect(address, compression=None, max_size=None) as ws:
            head = json.loads(await ws.recv())["request"]
            digest, size = hashlib.sha256(), 0
            async for fragment in ws.recv_streaming():
                digest.update(fragment)
                size += len(fragment)
            seen["size"], seen["sha"] = size, digest.hexdigest()
            await ws.send(json.dumps({"response": {"requestId": head["id"], "statusCode": 200, "body": True}}))
            await ws.send(f"{size}".encode())
            try:
                await ws.recv()
            except websockets.ConnectionClosed:
                pass

    async def run():
        async for raw in control:
            msg = json.loads(raw)
            if "request" in msg and "method" not in msg["request"]:
                asyncio.create_task(rendezvous(msg["request"]["address"]))

    return control, asyncio.create_task(run())


async def test_100_mb_request_body_streams_through_bounded_memory(gateway):
    seen: dict = {}
    control, task = await streaming_http_listener(gateway, "upload", seen)
    chunk = bytes(range(256)) * 256  # 64 KiB
    total = 100 * 1000 * 1000
    expected = hashlib.sha256()

    async def body():
        sent = 0
        while sent < total:
            piece = chunk[: min(len(chunk), total - sent)]
            expected.update(piece)
            sent += len(piece)
            yield piece

    headers = {"ServiceBusAuthorization": gateway.token("upload"), "Content-Length": str(total)}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gateway.http_base}/upload", data=b"warm-up" * 20000, headers=headers | {
                "Content-Length": str(7 * 20000)}) as r:
            assert r.status == 200
        before = peak_rss(gateway)
        async with s.post(f"{gateway.http_base}/upload", data=body(), headers=headers) as r:
            assert r.status == 200
            assert await r.read() == str(total).encode()
    grown = peak_rss(gateway) - before
    assert seen["size"] == total and seen["sha"] == expected.hexdigest()
    assert grown < 64 * MiB, f"gateway peak memory grew by {grown / MiB:.1f} MiB"
    task.cancel()
    await control.close()


async def test_256_mib_to_a_slow_reader_keeps_gateway_memory_flat(gateway):
    received = {"bytes": 0}
    done = asyncio.Event()
    total = 256 * MiB
    message = b"\xab" * (64 * 1024)

    async def slow_echo_listener():
        control = await websockets.connect(gateway.listen_url("slow"), compression=None,
                                           additional_headers={"ServiceBusAuthorization": gateway.token("slow")})
        accept = json.loads(await control.recv())["accept"]
        async with websockets.connect(accept["address"], compression=None, max_size=None, max_queue=4) as ws:
            async for data in ws:
                received["bytes"] += len(data)
                await asyncio.sleep(0.0005)  # a reader much slower than the sender
                if received["bytes"] >= total:
                    done.set()
                    break
        await control.close()

    listener = asyncio.create_task(slow_echo_listener())
    await asyncio.sleep(0)  # let the listener register before connecting
    for _ in range(200):
        await asyncio.sleep(0.01)
        if listener.done():
            break
    async with websockets.connect(gateway.connect_url("slow"), compression=None, max_size=None,
                                  additional_headers={"ServiceBusAuthorization": gateway.token("slow")}) as ws:
        await ws.send(message)  # warm-up
        before = peak_rss(gateway)
        sent = len(message)
        while sent < total:
            await ws.send(message)
            sent += len(message)
        await asyncio.wait_for(done.wait(), 300)
    grown = peak_rss(gateway) - before
    assert received["bytes"] >= total
    assert grown < 64 * MiB, f"gateway peak memory grew by {grown / MiB:.1f} MiB"
    await listener
