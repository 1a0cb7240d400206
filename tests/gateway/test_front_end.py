"""The gateway's front end (hybrid/gateway/front.py) over raw sockets: keep-alive, pipelining, hand-over to the full
HTTP implementation in the middle of a connection, half-close, clients that leave, and clients that never read."""

from __future__ import annotations

import asyncio
import json

from tests.support.gateway_process import TIMEOUT_FACTOR
from tests.support.raw_listener import RawListener

MiB = 1024 * 1024


def request(gw, entity: str, path: str = "", *, method: str = "GET", body: bytes = b"", extra: str = "",
            length: bool = True) -> bytes:
    lines = [f"{method} /{entity}{path} HTTP/1.1", f"Host: {gw.host}:{gw.port}",
             f"ServiceBusAuthorization: {gw.token(entity)}"]
    if body and length:
        lines.append(f"Content-Length: {len(body)}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length or chunked body."""
    status_line = await asyncio.wait_for(reader.readline(), 10 * TIMEOUT_FACTOR)
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode()
        if line == "\r\n":
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = b""
    return int(status_line.split()[1]), headers, body


async def front_stats(gw) -> dict[str, int]:
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(f"GET /$health HTTP/1.1\r\nHost: {gw.host}\r\nConnection: close\r\n\r\n".encode())
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 200
    return json.loads(body)["front_end"]


async def test_pipelined_requests_are_answered_in_order_on_one_connection(gateway):
    async with RawListener(gateway.listen_url("pipe"), gateway.token("pipe")) as listener:
        before = await front_stats(gateway)
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(b"".join(request(gateway, "pipe", f"/{i}", method="POST", body=f"n{i}".encode())
                             for i in range(20)))
        for i in range(20):
            status, headers, body = await read_response(reader)
            assert (status, body) == (200, f"echo:n{i}".encode())
            assert headers["x-target"] == f"/pipe/{i}"
            assert "date" in headers and headers["via"].startswith("1.1 ")
        writer.close()
        assert len(listener.requests) == 20
        assert (await front_stats(gateway))["carried"] - before["carried"] == 20  # all by the front end itself


async def test_a_head_split_into_single_bytes_still_relays(gateway):
    async with RawListener(gateway.listen_url("drip"), gateway.token("drip")):
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        for byte in request(gateway, "drip", method="POST", body=b"xyz"):
            writer.write(bytes([byte]))
            await writer.drain()
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"echo:xyz")
        writer.close()


async def test_a_connection_is_handed_over_mid_stream_and_keeps_working(gateway):
    """Simple, then chunked (aiohttp's to relay), then a WebSocket-only address: all on one connection."""
    async with RawListener(gateway.listen_url("mix"), gateway.token("mix")) as listener:
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(request(gateway, "mix", "/one", method="POST", body=b"first"))
        assert (await read_response(reader))[::2] == (200, b"echo:first")
        chunked = request(gateway, "mix", "/two", method="POST", body=b"5\r\nsecon\r\n1\r\nd\r\n0\r\n\r\n",
                          extra="Transfer-Encoding: chunked", length=False)
        writer.write(chunked + request(gateway, "mix", "/three", method="POST", body=b"third"))
        assert (await read_response(reader))[::2] == (200, b"echo:second")
        assert (await read_response(reader))[::2] == (200, b"echo:third")  # pipelined behind the hand-over
        writer.close()
        assert "method" not in listener.requests[1]  # the chunked one went over a rendezvous


async def test_connection_close_is_honoured(gateway):
    async with RawListener(gateway.listen_url("bye"), gateway.token("bye")):
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(request(gateway, "bye", extra="Connection: close"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10 * TIMEOUT_FACTOR) == b""  # and the gateway closed it


async def test_a_half_closed_client_still_gets_its_response(gateway):
    async with RawListener(gateway.listen_url("half"), gateway.token("half")):
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(request(gateway, "half", method="POST", body=b"done"))
        writer.write_eof()
        assert (await read_response(reader))[::2] == (200, b"echo:done")
        assert await asyncio.wait_for(reader.read(), 10 * TIMEOUT_FACTOR) == b""


async def test_errors_from_the_front_end_are_azure_json_and_keep_the_connection(gateway):
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    writer.write(request(gateway, "nobody-listens"))
    status, headers, body = await read_response(reader)
    assert status == 404 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["message"]
    bad_token = (f"GET /nobody-listens HTTP/1.1\r\nHost: {gateway.host}\r\n"
                 "ServiceBusAuthorization: SharedAccessSignature sr=x&sig=y&se=1&skn=z\r\n\r\n").encode()
    writer.write(bad_token)
    status, _, body = await read_response(reader)
    assert status in (401, 404) and json.loads(body)["error"]["code"]
    writer.close()


async def test_a_client_that_leaves_before_the_response_harms_nobody(gateway):
    released = asyncio.Event()

    async def slow(head, body):
        await released.wait()
        return 200, {}, b"late"

    async with RawListener(gateway.listen_url("gone"), gateway.token("gone"), http=slow):
        _, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(request(gateway, "gone"))
        await writer.drain()
        writer.transport.abort()
        await asyncio.sleep(0.2)
        released.set()  # the response arrives for a client that is gone: dropped
        reader2, writer2 = await asyncio.open_connection(gateway.host, gateway.port)
        writer2.write(request(gateway, "gone", method="POST", body=b"again"))
        assert (await read_response(reader2))[::2] == (200, b"late")
        writer2.close()
    assert gateway.alive()


async def test_a_listener_that_never_answers_gets_a_504_after_the_request_timeout(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\nrequest_timeout = 1\n")
    gw = gateway_factory("--config", str(cfg))
    never = asyncio.Event()

    async def silent(head, body):
        await never.wait()
        return 200, {}, b""

    async with RawListener(gw.listen_url("mute"), gw.token("mute"), http=silent):
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        writer.write(request(gw, "mute"))
        status, _, body = await read_response(reader)
        assert status == 504 and "did not respond" in json.loads(body)["error"]["message"]
        writer.close()


async def test_a_pipelining_client_that_never_reads_cannot_grow_gateway_memory(gateway):
    """20,000 pipelined requests each answered with 64 KiB would be 1.2 GiB if the gateway kept answering a client
    that does not read: it stops reading requests while the client's responses are not being taken."""
    big = b"r" * (60 * 1024)

    async def answer(head, body):
        return 200, {}, big

    async with RawListener(gateway.listen_url("flood"), gateway.token("flood"), http=answer) as listener:
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port, limit=2 * MiB)
        writer.transport.set_write_buffer_limits(high=64 * MiB)
        one = request(gateway, "flood")
        before = peak_rss(gateway)
        writer.write(one * 20_000)
        # Wait until the gateway stops taking requests (it would go on to all 20,000 if it never stopped).
        answered, still = -1, 0
        while still < 5 and answered < 20_000:
            await asyncio.sleep(0.2)
            still = still + 1 if len(listener.requests) == answered else 0
            answered = len(listener.requests)
        grown = peak_rss(gateway) - before
        assert answered < 2000, f"the gateway relayed {answered} requests for a client that reads nothing"
        assert grown < 64 * MiB, f"gateway peak RSS grew by {grown / MiB:.1f} MiB"
        # Reading resumes the flow: the first responses are intact.
        for _ in range(3):
            status, _, body = await read_response(reader)
            assert status == 200 and body == big
        writer.transport.abort()
    assert gateway.alive()


def peak_rss(gw) -> int:
    with open(f"/proc/{gw.proc.pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")
