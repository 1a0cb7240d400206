"""HTTP relaying through a real gateway process (spec §2.3, §2.4, §2.7), raw listener, aiohttp client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct

import aiohttp
import pytest

from tests.support.gateway_process import TIMEOUT_FACTOR
from tests.support.raw_listener import RawListener
from tests.wcfrelay.test_e2e_support import async_wait_for


def hdr(gw, entity, **extra):
    return {"ServiceBusAuthorization": gw.token(entity), **extra}


async def test_small_post_travels_inline_with_every_required_field(gateway):
    async with RawListener(gateway.listen_url("web"), gateway.token("web")) as listener:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{gateway.http_base}/web/sub/path?x=1&sb-hc-id=9&y=2", data=b"a" * 1024,
                              headers=hdr(gateway, "web", **{"Content-Type": "text/plain"})) as r:
                assert r.status == 200
                assert await r.read() == b"echo:" + b"a" * 1024
                assert r.headers["X-Target"] == "/web/sub/path?x=1&y=2"  # name included, sb-hc-* filtered (§1.3)
                assert "1.1 " in r.headers["Via"]
        req = listener.requests[0]
        assert req["method"] == "POST" and req["body"] is True
        assert req["address"].startswith("ws://") and "sb-hc-action=request" in req["address"]
        assert req["id"] and req["remoteEndpoint"]["address"] == "127.0.0.1"
        names = {k.lower() for k in req["requestHeaders"]}
        assert "servicebusauthorization" not in names
        assert not names & {"connection", "content-length", "transfer-encoding", "host"}
        assert req["requestHeaders"]["Via"].startswith("1.1 ")


async def test_get_without_body_says_body_false(gateway):
    async with RawListener(gateway.listen_url("g"), gateway.token("g")) as listener:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gateway.http_base}/g", headers=hdr(gateway, "g")) as r:
                assert r.status == 200 and await r.read() == b"echo:"
        assert listener.requests[0]["body"] is False  # present and false: .NET keys on it (§2.3)


async def test_repeated_headers_are_joined(gateway):
    async with RawListener(gateway.listen_url("rh"), gateway.token("rh")) as listener:
        async with aiohttp.ClientSession() as s:
            headers = [("ServiceBusAuthorization", gateway.token("rh")), ("X-Multi", "requestValue1"),
                       ("X-Multi", "requestValue2")]
            async with s.get(f"{gateway.http_base}/rh", headers=headers) as r:
                assert r.status == 200
        assert listener.requests[0]["requestHeaders"]["X-Multi"] == "requestValue1, requestValue2"


async def test_large_request_goes_over_gateway_rendezvous(gateway):
    body = bytes(range(256)) * 400  # 100 KiB > 64 KiB
    async with RawListener(gateway.listen_url("up"), gateway.token("up")) as listener:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{gateway.http_base}/up", data=body, headers=hdr(gateway, "up")) as r:
                assert r.status == 200 and await r.read() == b"echo:" + body
        first, second = listener.requests[0], listener.requests[1]
        assert "method" not in first and "body" not in first  # rendezvous-only shape (b)
        assert second["id"] == first["id"] and second["method"] == "POST" and second["body"] is True


async def test_chunked_request_without_length_goes_over_rendezvous(gateway):
    async def gen():
        for _ in range(4):
            yield b"z" * 1000

    async with RawListener(gateway.listen_url("ch"), gateway.token("ch")) as listener:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{gateway.http_base}/ch", data=gen(), headers=hdr(gateway, "ch")) as r:
                assert await r.read() == b"echo:" + b"z" * 4000
        assert "method" not in listener.requests[0]


async def test_large_response_over_listener_rendezvous(gateway):
    big = hashlib.sha256(b"seed").digest() * 3200  # 100 KiB

    async def handler(head, body):
        return 200, {"Content-Type": "application/octet-stream", "Content-Length": "999"}, big

    async with RawListener(gateway.listen_url("down"), gateway.token("down"), http=handler):
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gateway.http_base}/down", headers=hdr(gateway, "down")) as r:
                data = await r.read()
                assert r.status == 200 and data == big
                # The listener's Content-Length is never trusted: the gateway streams and frames the body itself (§2.4).
                assert r.headers.get("Content-Length") in (None, str(len(big)))


async def test_head_gets_no_body_even_if_listener_sends_one(gateway):
    async with RawListener(gateway.listen_url("hd"), gateway.token("hd")), aiohttp.ClientSession() as s:
        async with s.head(f"{gateway.http_base}/hd", headers=hdr(gateway, "hd")) as r:
            assert r.status == 200
            assert r.headers["X-Method"] == "HEAD"
            assert await r.read() == b""


async def test_status_description_becomes_reason_phrase_without_crlf(gateway):
    async def handler(head, body):
        return 418, {"X-Ok": "1", "X-Bad": "a\r\nInjected: yes"}, b""

    async with RawListener(gateway.listen_url("st"), gateway.token("st"), http=handler) as listener:
        listener_answer = listener._answer

        async def answer_with_desc(ws, head, body, address, on_rendezvous=False):
            await ws.send(json.dumps({"response": {"requestId": head["id"], "statusCode": "418",
                                                   "statusDescription": "Teapot\r\nX-Evil: 1",
                                                   "responseHeaders": {"X-Ok": "1", "X-Bad": "a\r\nInjected: yes"},
                                                   "body": False}}))
            await ws.send(b"")  # hyco-https sends a stray empty binary after body:false (§2.4)

        listener._answer = answer_with_desc
        async with aiohttp.ClientSession() as s:
            for _ in range(2):  # the stray message must not confuse the next request
                async with s.get(f"{gateway.http_base}/st", headers=hdr(gateway, "st")) as r:
                    assert r.status == 418
                    assert r.reason == "Teapot  X-Evil: 1"
                    assert r.headers["X-Ok"] == "1"
                    assert "X-Bad" not in r.headers and "Injected" not in r.headers and "X-Evil" not in r.headers
        listener._answer = listener_answer


async def test_expect_100_continue(gateway):
    async with RawListener(gateway.listen_url("ex"), gateway.token("ex")), aiohttp.ClientSession() as s:
        async with s.post(f"{gateway.http_base}/ex", data=b"hello", expect100=True,
                          headers=hdr(gateway, "ex")) as r:
            assert r.status == 200 and await r.read() == b"echo:hello"


async def test_no_listener_gives_502(gateway):
    async with RawListener(gateway.listen_url("nol"), gateway.token("nol")):
        pass
    async with aiohttp.ClientSession() as s, s.get(f"{gateway.http_base}/nol", headers=hdr(gateway, "nol")) as r:
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "ListenerUnavailable"


async def test_listener_that_never_answers_gives_504(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\nrequest_timeout = 1\n")
    gw = gateway_factory("--config", str(cfg))

    async def silent(head, body):
        await asyncio.sleep(3600)

    async with RawListener(gw.listen_url("sl"), gw.token("sl"), http=silent), aiohttp.ClientSession() as s:
        async with s.get(f"{gw.http_base}/sl", headers=hdr(gw, "sl")) as r:
            assert r.status == 504
            assert (await r.json())["error"]["code"] == "GatewayTimeout"


async def test_listener_vanishing_mid_request_gives_502_promptly(gateway):
    entered = asyncio.Event()

    async def hang(head, body):
        entered.set()
        await asyncio.sleep(3600)

    listener = RawListener(gateway.listen_url("van"), gateway.token("van"), http=hang)
    await listener.__aenter__()
    async with aiohttp.ClientSession() as s:
        task = asyncio.create_task(s.get(f"{gateway.http_base}/van", headers=hdr(gateway, "van")))
        await asyncio.wait_for(entered.wait(), 10 * TIMEOUT_FACTOR)
        await listener.__aexit__(None, None, None)  # the listener goes away with the request in flight
        r = await asyncio.wait_for(task, 10 * TIMEOUT_FACTOR)
        assert r.status == 502
        r.release()


async def test_authorization_header_passes_through_when_relay_token_is_elsewhere(gateway):
    async with RawListener(gateway.listen_url("au"), gateway.token("au")) as listener:
        async with aiohttp.ClientSession() as s:
            headers = hdr(gateway, "au", Authorization="Bearer app-level")
            async with s.get(f"{gateway.http_base}/au", headers=headers) as r:
                assert r.status == 200
        assert listener.requests[0]["requestHeaders"]["Authorization"] == "Bearer app-level"


async def test_authorization_header_used_as_relay_token_is_stripped(gateway):
    async with RawListener(gateway.listen_url("au2"), gateway.token("au2")) as listener:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gateway.http_base}/au2", headers={"Authorization": gateway.token("au2")}) as r:
                assert r.status == 200
        assert "Authorization" not in listener.requests[0]["requestHeaders"]


async def test_names_with_slashes_are_found_by_longest_match(gateway):
    async with RawListener(gateway.listen_url("a"), gateway.token("a")) as short, \
            RawListener(gateway.listen_url("a/b"), gateway.token("a/b")) as long_:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gateway.http_base}/a/b/c", headers=hdr(gateway, "a/b")) as r:
                assert r.status == 200 and r.headers["X-Target"] == "/a/b/c"
            async with s.get(f"{gateway.http_base}/a/x", headers=hdr(gateway, "a")) as r:
                assert r.status == 200 and r.headers["X-Target"] == "/a/x"
        assert len(long_.requests) == 1 and len(short.requests) == 1


async def test_concurrent_requests_are_all_answered(gateway):
    async with RawListener(gateway.listen_url("cc"), gateway.token("cc")):
        async with aiohttp.ClientSession() as s:
            async def one(i):
                async with s.post(f"{gateway.http_base}/cc/{i}", data=str(i).encode(),
                                  headers=hdr(gateway, "cc")) as r:
                    return r.headers["X-Target"], await r.read()

            results = await asyncio.gather(*(one(i) for i in range(50)))
        assert results == [(f"/cc/{i}", b"echo:" + str(i).encode()) for i in range(50)]


async def test_upgrade_and_connect_are_not_relayed_over_http(gateway):
    async with RawListener(gateway.listen_url("up2"), gateway.token("up2")):
        with socket.create_connection((gateway.host, gateway.port)) as sock:
            sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 4")


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (linger 0): the abrupt way a sender's process or network goes away."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _pending_requests(session: aiohttp.ClientSession, gw) -> int:
    async with session.get(f"{gw.http_base}/$health") as r:
        return (await r.json())["pending"]["requests"]


def _raw_request(gw, entity: str, body_size: int) -> socket.socket:
    """A request on a plain socket: a GET (the front end relays it), or a POST whose body is too large to travel
    inline (the rendezvous path, served by aiohttp)."""
    sock = socket.create_connection((gw.host, gw.port))
    method = "POST" if body_size else "GET"
    sock.sendall(f"{method} /{entity} HTTP/1.1\r\nHost: {gw.host}:{gw.port}\r\nContent-Length: {body_size}\r\n"
                 f"ServiceBusAuthorization: {gw.token(entity)}\r\n\r\n".encode() + b"b" * body_size)
    return sock


# Both ways a request reaches a listener: through the front end (small) and through aiohttp (a 100 KiB body).
SENDER_PATHS = pytest.mark.parametrize("body_size", [0, 100 * 1024], ids=["front-end", "rendezvous"])


@SENDER_PATHS
async def test_sender_gone_before_a_streamed_response_is_quietly_dropped(gateway, body_size):
    """The sender resets its connection while the listener prepares a large (streamed) response: the gateway
    cannot write even the status line. It forgets the request, says so in one line (no traceback from the HTTP
    server), takes the listener's body without holding it, and keeps relaying."""
    entered, release = asyncio.Event(), asyncio.Event()
    big = hashlib.sha256(b"gone").digest() * 32768  # 1 MiB: the listener's rendezvous, streamed to the sender

    async def slow_big(head, body):
        entered.set()
        await release.wait()
        return 200, {"Content-Type": "application/octet-stream"}, big

    async with RawListener(gateway.listen_url("gone1"), gateway.token("gone1"), http=slow_big) as listener:
        sock = _raw_request(gateway, "gone1", body_size)
        await asyncio.wait_for(entered.wait(), 10 * TIMEOUT_FACTOR)
        _reset(sock)
        async with aiohttp.ClientSession() as s:
            # A round trip on another connection: the gateway has read the reset by the time it answers this.
            assert await _pending_requests(s, gateway) == 1
            release.set()
            await async_wait_for(lambda: listener.answered, what="the listener to finish its answer")
            await _wait_until_async(lambda: _pending_requests(s, gateway), 0, "the request to be forgotten")
            async with s.get(f"{gateway.http_base}/gone1", headers=hdr(gateway, "gone1")) as r:
                assert r.status == 200 and await r.read() == big
    log = gateway.stop_and_read()
    assert "Error handling request" not in log and "Traceback" not in log, log[-3000:]
    assert "went away before its response" in log


@SENDER_PATHS
async def test_sender_gone_in_the_middle_of_a_streamed_response_is_quietly_dropped(gateway, body_size):
    """The sender reads the status line of a 16 MiB response, then resets: the rest of the body is dropped, the
    listener's rendezvous is closed, nothing is logged as a server error, and the gateway keeps relaying."""
    big = hashlib.sha256(b"mid").digest() * (16 * 32768)  # 16 MiB: more than every socket buffer on the way

    async def huge(head, body):
        return 200, {"Content-Type": "application/octet-stream"}, big

    async with RawListener(gateway.listen_url("gone2"), gateway.token("gone2"), http=huge) as listener:
        sock = _raw_request(gateway, "gone2", body_size)
        sock.settimeout(10 * TIMEOUT_FACTOR)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = await asyncio.to_thread(sock.recv, 65536)
            assert chunk, "the gateway closed before the response head"
            got += chunk
        assert got.startswith(b"HTTP/1.1 200")
        _reset(sock)
        await async_wait_for(lambda: listener.answered, what="the listener to finish its answer")
        async with aiohttp.ClientSession() as s:
            await _wait_until_async(lambda: _pending_requests(s, gateway), 0, "the request to be forgotten")
            async with s.get(f"{gateway.http_base}/gone2", headers=hdr(gateway, "gone2")) as r:
                assert r.status == 200 and len(await r.read()) == len(big)
    log = gateway.stop_and_read()
    assert "Error handling request" not in log and "Traceback" not in log, log[-3000:]
    assert "went away before its response" in log


async def _wait_until_async(read, expected, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout * TIMEOUT_FACTOR
    while (value := await read()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what} (last: {value!r})"
        await asyncio.sleep(0.02)
