"""HTTP through a real gateway to a Python listener (spec §1.3, §2.3, §2.4, §2.7), called by plain aiohttp."""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
import pytest

from hybrid.client import HybridConnectionClient, HybridConnectionListener, RelayedHttpRequest, RelayedHttpResponse
from tests.client import within

ENTITY = "web"
BIG = bytes(range(256)) * 400  # 102,400 bytes: over the 64 KiB inline limit


class Recorder:
    """A request handler that records what it saw and answers by path."""

    def __init__(self) -> None:
        self.seen: list[tuple[RelayedHttpRequest, bytes]] = []
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def __call__(self, request: RelayedHttpRequest) -> RelayedHttpResponse:
        body = await request.read()
        self.seen.append((request, body))
        if request.suffix == "/big":
            return RelayedHttpResponse(200, headers={"Content-Type": "application/octet-stream"}, body=BIG)
        if request.suffix == "/stream":
            return RelayedHttpResponse(200, headers={"Content-Type": "text/plain"}, body=self._slow_stream())
        if request.suffix == "/wait":
            self.waiting.set()
            await self.release.wait()
            return RelayedHttpResponse(200, body=b"released")
        if request.suffix == "/release":
            self.release.set()
            return RelayedHttpResponse(202, "Accepted by test", body=b"")
        if request.suffix == "/fail":
            raise RuntimeError("handler bug")
        summary = {
            "method": request.method,
            "target": request.target,
            "suffix": request.suffix,
            "query": request.query,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "rendezvous": request.rendezvous,
            "x-custom": request.headers.get("X-Custom"),
            "relay-auth-seen": "ServiceBusAuthorization" in request.headers,
        }
        return RelayedHttpResponse(
            200, "Fine Thanks", headers={"Content-Type": "application/json", "X-Listener": "py"},
            body=json.dumps(summary),
        )

    async def _slow_stream(self):
        yield b"part1,"
        await asyncio.sleep(0)  # let the response go out in pieces
        yield b"part2,"
        yield b"part3"


@pytest.fixture
async def web_listener(gateway):
    recorder = Recorder()
    listener = HybridConnectionListener(gateway.connection_string(ENTITY), tls=False, request_handler=recorder)
    await within(listener.open())
    yield recorder
    await listener.close()


@pytest.fixture
async def http(gateway):
    async with aiohttp.ClientSession(headers={"ServiceBusAuthorization": gateway.token(ENTITY)}) as session:
        yield session


async def test_get_with_suffix_and_query_reaches_the_handler(gateway, web_listener, http):
    url = f"{gateway.http_base}/{ENTITY}/a/b?x=1&sb-hc-id=zz&y"
    async with http.get(url, headers={"X-Custom": "v1"}) as response:
        assert response.status == 200
        assert response.reason == "Fine Thanks"
        assert response.headers["X-Listener"] == "py"
        assert response.headers.get("Via")  # the gateway marks relayed replies (§2.4)
        summary = await response.json()
    assert summary["method"] == "GET"
    assert summary["target"] == f"/{ENTITY}/a/b?x=1&y"  # requestTarget includes the name (§1.3)
    assert summary["suffix"] == "/a/b"
    assert summary["query"] == "x=1&y"
    assert summary["length"] == 0
    assert summary["x-custom"] == "v1"
    assert summary["relay-auth-seen"] is False
    assert summary["rendezvous"] is False


async def test_small_post_travels_inline(gateway, web_listener, http):
    body = b"k" * 1024
    async with http.post(f"{gateway.http_base}/{ENTITY}/small", data=body) as response:
        assert response.status == 200
        summary = await response.json()
    assert summary["length"] == 1024
    assert summary["sha256"] == hashlib.sha256(body).hexdigest()
    assert summary["rendezvous"] is False


async def test_large_post_arrives_over_a_gateway_rendezvous(gateway, web_listener, http):
    async with http.post(f"{gateway.http_base}/{ENTITY}/upload", data=BIG) as response:
        assert response.status == 200
        summary = await response.json()
    assert summary["length"] == len(BIG)
    assert summary["sha256"] == hashlib.sha256(BIG).hexdigest()
    assert summary["rendezvous"] is True  # > 64 KiB must not go inline (§2.7)


async def test_large_response_goes_back_over_a_listener_rendezvous(gateway, web_listener, http):
    async with http.get(f"{gateway.http_base}/{ENTITY}/big") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await response.read() == BIG


async def test_streamed_response_body_arrives_whole(gateway, web_listener, http):
    async with http.get(f"{gateway.http_base}/{ENTITY}/stream") as response:
        assert response.status == 200
        assert await response.read() == b"part1,part2,part3"


async def test_head_has_headers_and_no_body(gateway, web_listener, http):
    async with http.head(f"{gateway.http_base}/{ENTITY}/big") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await response.read() == b""
    (request, _), = web_listener.seen
    assert request.method == "HEAD"


async def test_requests_are_handled_concurrently(gateway, web_listener, http):
    waiting = asyncio.ensure_future(http.get(f"{gateway.http_base}/{ENTITY}/wait"))
    await within(web_listener.waiting.wait())  # the first request is now blocked in its handler
    async with http.post(f"{gateway.http_base}/{ENTITY}/release") as released:
        assert released.status == 202
        assert released.reason == "Accepted by test"
    async with await within(waiting) as response:
        assert response.status == 200
        assert await response.read() == b"released"


async def test_handler_failure_is_a_500(gateway, web_listener, http):
    async with http.get(f"{gateway.http_base}/{ENTITY}/fail") as response:
        assert response.status == 500


async def test_sdk_request_adds_the_token_and_reads_the_response(gateway, web_listener):
    async with HybridConnectionClient(gateway.connection_string(ENTITY), tls=False) as client:
        response = await within(client.request("PUT", "/sdk", "q=2", headers={"X-Custom": "c"}, body=b"hello"))
        assert response.status == 200
        summary = response.json()
        assert (summary["method"], summary["suffix"], summary["query"], summary["length"]) == ("PUT", "/sdk", "q=2", 5)
        assert summary["x-custom"] == "c"
        big = await within(client.request("GET", "/big"))
        assert big.body == BIG


async def test_sdk_request_sees_gateway_errors_as_responses(gateway):
    async with HybridConnectionListener(gateway.connection_string("gone"), tls=False):
        pass  # the hybrid connection now exists but nobody listens
    async with HybridConnectionClient(gateway.connection_string("gone"), tls=False) as client:
        response = await within(client.request("GET"))
        assert response.status == 502  # spec §2.8: no listener


async def test_listener_without_a_request_handler_answers_501(gateway):
    async with (
        HybridConnectionListener(gateway.connection_string("nohandler"), tls=False),
        HybridConnectionClient(gateway.connection_string("nohandler"), tls=False) as client,
    ):
        response = await within(client.request("GET"))
    assert response.status == 501


async def test_response_of_exactly_64_kib_travels_inline_and_arrives_intact(gateway):
    exact = bytes(range(256)) * 256  # 65,536 bytes: the largest inline body (§2.7)

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        return RelayedHttpResponse(200, body=exact)

    async with (
        HybridConnectionListener(gateway.connection_string("exact"), tls=False, request_handler=handler),
        HybridConnectionClient(gateway.connection_string("exact"), tls=False) as client,
    ):
        response = await within(client.request("GET"))
    assert response.status == 200 and response.body == exact
