"""WebSocket relaying through a real gateway process (spec §2.2, §2.6), with a protocol-level raw listener."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, urlsplit

import pytest
import websockets

from tests.support.gateway_process import TIMEOUT_FACTOR
from tests.support.raw_listener import RawListener


def hdr(gw, entity):
    return {"ServiceBusAuthorization": gw.token(entity)}


async def test_sender_and_listener_echo_text_and_binary(gateway):
    async with RawListener(gateway.listen_url("echo"), gateway.token("echo")):
        async with websockets.connect(gateway.connect_url("echo"), additional_headers=hdr(gateway, "echo"),
                                      compression=None) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\xffbinary")
            reply = await ws.recv()
            assert reply == b"\x00\xffbinary" and isinstance(reply, bytes)


async def test_accept_carries_suffix_app_query_and_sender_headers_but_no_token(gateway):
    async with RawListener(gateway.listen_url("hc1"), gateway.token("hc1")) as listener:
        url = gateway.connect_url("hc1", "/a/b", "app=1&x=%20y") + "&sb-hc-id=abc-123"
        headers = {**hdr(gateway, "hc1"), "X-App": "v"}
        async with websockets.connect(url, additional_headers=headers, compression=None) as ws:
            await ws.send("ping")
            await ws.recv()
        accept = listener.accepts[0]
        parts = urlsplit(accept["address"])
        assert parts.path == "/$hc/hc1/a/b"
        assert parts.query.startswith("app=1&x=%20y&")  # app query first, byte for byte (§1.3)
        query = dict(parse_qsl(parts.query))
        assert query["sb-hc-action"] == "accept" and query["sb-hc-id"] == accept["id"]
        assert accept["id"].startswith("abc-123_")
        names = {k.lower() for k in accept["connectHeaders"]}
        assert "sec-websocket-key" in names  # hyco-ws needs it (§2.2)
        assert "servicebusauthorization" not in names
        assert accept["connectHeaders"].get("X-App") == "v"
        assert accept["remoteEndpoint"]["address"] == "127.0.0.1"


async def test_token_in_query_is_stripped_from_the_accept_address(gateway):
    from urllib.parse import quote_plus
    async with RawListener(gateway.listen_url("hcq"), gateway.token("hcq")) as listener:
        url = gateway.connect_url("hcq", "", "keep=1") + "&sb-hc-token=" + quote_plus(gateway.token("hcq"))
        async with websockets.connect(url, compression=None) as ws:
            await ws.send("x")
            await ws.recv()
        assert "sb-hc-token" not in listener.accepts[0]["address"]
        assert "keep=1" in listener.accepts[0]["address"]


async def test_listener_subprotocol_is_echoed_to_sender(gateway):
    async with RawListener(gateway.listen_url("proto"), gateway.token("proto"), subprotocol="chat"):
        async with websockets.connect(gateway.connect_url("proto"), additional_headers=hdr(gateway, "proto"),
                                      subprotocols=["chat", "superchat"], compression=None) as ws:
            assert ws.subprotocol == "chat"
            await ws.send("m")
            assert await ws.recv() == "m"


async def test_no_permessage_deflate_is_negotiated(gateway):
    async with RawListener(gateway.listen_url("defl"), gateway.token("defl")):
        # websockets offers permessage-deflate by default; the gateway must not accept it (§2.6).
        async with websockets.connect(gateway.connect_url("defl"), additional_headers=hdr(gateway, "defl")) as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            await ws.send("z" * 10000)
            assert await ws.recv() == "z" * 10000


@pytest.mark.parametrize("spelling", ["sb-hc", "node"])
async def test_rejection_reaches_sender_and_listener_gets_410(gateway, spelling):
    async with RawListener(gateway.listen_url("rej"), gateway.token("rej"), ws_mode="reject",
                           reject_spelling=spelling) as listener:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(gateway.connect_url("rej"), additional_headers=hdr(gateway, "rej"),
                                          compression=None):
                pass
        assert info.value.response.status_code == 401
        assert info.value.response.reason_phrase == "Status Description from test"
        for _ in range(100):
            if listener.rendezvous_status:
                break
            await asyncio.sleep(0.05)
        assert listener.rendezvous_status == [410]


async def test_large_fragmented_messages_pass_intact(gateway):
    async with RawListener(gateway.listen_url("big"), gateway.token("big")):
        async with websockets.connect(gateway.connect_url("big"), additional_headers=hdr(gateway, "big"),
                                      compression=None, max_size=None) as ws:
            payload = bytes(range(256)) * 40_000  # ~10 MB
            await ws.send([payload[i:i + 1_000_000] for i in range(0, len(payload), 1_000_000)])
            assert await ws.recv() == payload


async def test_close_code_is_forwarded(gateway):
    async with RawListener(gateway.listen_url("cl"), gateway.token("cl")):
        ws = await websockets.connect(gateway.connect_url("cl"), additional_headers=hdr(gateway, "cl"),
                                      compression=None)
        await ws.send("x")
        await ws.recv()
        await ws.close(4001, "bye")
        # The raw listener's `async for` ends on the close; websockets then echoes the code back.
        assert ws.close_code == 4001


async def test_sender_without_listener_gets_404(gateway):
    async with RawListener(gateway.listen_url("gone"), gateway.token("gone")):
        pass  # the entity now exists, but nobody listens
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(gateway.connect_url("gone"), additional_headers=hdr(gateway, "gone"))
    assert info.value.response.status_code == 404


async def test_listener_that_never_accepts_times_out_the_sender(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\naccept_timeout = 1\n")
    gw = gateway_factory("--config", str(cfg))
    async with RawListener(gw.listen_url("slow"), gw.token("slow"), ws_mode="ignore"):
        with pytest.raises(websockets.InvalidStatus) as info:
            await asyncio.wait_for(
                websockets.connect(gw.connect_url("slow"), additional_headers=hdr(gw, "slow")), 20 * TIMEOUT_FACTOR)
        assert info.value.response.status_code == 504


async def test_listeners_share_connections(gateway):
    async with RawListener(gateway.listen_url("multi"), gateway.token("multi")) as a, \
            RawListener(gateway.listen_url("multi"), gateway.token("multi")) as b:
        for _ in range(40):
            async with websockets.connect(gateway.connect_url("multi"), additional_headers=hdr(gateway, "multi"),
                                          compression=None) as ws:
                await ws.send("x")
                await ws.recv()
        # Random choice: with 40 connects, each listener gets some (probability of failure 2 * 2**-40).
        assert a.accepts and b.accepts
        assert len(a.accepts) + len(b.accepts) == 40


async def test_anonymous_sender_allowed_when_entity_does_not_require_authorization(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[[hybrid_connections]]\nname = "open"\nrequires_client_authorization = false\n')
    gw = gateway_factory("--config", str(cfg))
    async with RawListener(gw.listen_url("open"), gw.token("open")):
        async with websockets.connect(gw.connect_url("open"), compression=None) as ws:
            await ws.send("anon")
            assert await ws.recv() == "anon"
    # Listeners always need a token, even there.
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(gw.listen_url("open"))
    assert info.value.response.status_code == 401


async def test_gateway_shutdown_closes_sockets_with_1001(gateway):
    listener = await websockets.connect(gateway.listen_url("bye"),
                                        additional_headers={"ServiceBusAuthorization": gateway.token("bye")})
    gateway.stop()
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(listener.recv(), 10 * TIMEOUT_FACTOR)
    assert listener.close_code == 1001
