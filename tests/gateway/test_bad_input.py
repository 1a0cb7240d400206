"""Hostile and malformed input against a real gateway; after each, the gateway still serves (spec §2.8)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import quote_plus

import aiohttp
import pytest
import websockets

from hybrid.auth import build_token
from tests.support.gateway_process import TIMEOUT_FACTOR
from tests.support.raw_listener import RawListener


async def still_serves(gw, entity="health"):
    """Listener + sender echo works: the gateway survived whatever came before."""
    async with RawListener(gw.listen_url(entity), gw.token(entity)):
        async with websockets.connect(gw.connect_url(entity), compression=None,
                                      additional_headers={"ServiceBusAuthorization": gw.token(entity)}) as ws:
            await ws.send("alive?")
            assert await ws.recv() == "alive?"
    assert gw.alive()


def bad_tokens(gw, entity):
    now = int(time.time())
    return {
        "malformed": ("SharedAccessSignature garbage", 401),
        "not-sas": ("Bearer abc", 401),
        "expired": (gw.token(entity, expiry=now - 3600), 401),
        "wrong-key": (build_token(f"http://{gw.host}:{gw.port}/{entity}", gw.key_name, "x" * 44, now + 600), 401),
        "unknown-rule": (build_token(f"http://{gw.host}:{gw.port}/{entity}", "Nobody", gw.key, now + 600), 401),
        "wrong-scope": (gw.token("some-other-entity"), 403),
        "huge": ("SharedAccessSignature " + "a" * 10000, 401),
    }


@pytest.mark.parametrize("case", ["missing", "malformed", "not-sas", "expired", "wrong-key", "unknown-rule",
                                  "wrong-scope", "huge"])
async def test_listen_refuses_bad_tokens(gateway, case):
    token, status = (None, 401) if case == "missing" else bad_tokens(gateway, "tok")[case]
    headers = {"ServiceBusAuthorization": token} if token else {}
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(gateway.listen_url("tok"), additional_headers=headers)
    assert info.value.response.status_code == status
    assert info.value.response.reason_phrase  # a reason a person can read
    await still_serves(gateway)


@pytest.mark.parametrize("carrier", ["header", "query", "authorization"])
@pytest.mark.parametrize("case", ["missing", "malformed", "expired", "wrong-key", "wrong-scope"])
async def test_senders_refuse_bad_tokens_in_every_carrier(gateway, case, carrier):
    async with RawListener(gateway.listen_url("snd"), gateway.token("snd")):
        token, status = (None, 401) if case == "missing" else bad_tokens(gateway, "snd")[case]
        url_ws, url_http, headers = gateway.connect_url("snd"), f"{gateway.http_base}/snd", {}
        if token and carrier == "header":
            headers["ServiceBusAuthorization"] = token
        elif token and carrier == "authorization":
            headers["Authorization"] = token
        elif token:
            url_ws += "&sb-hc-token=" + quote_plus(token)
            url_http += "?sb-hc-token=" + quote_plus(token)
        if case == "malformed" and carrier == "authorization":
            status = 401  # not SAS-shaped: it is the app's header, and no relay token came
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(url_ws, additional_headers=headers)
        assert info.value.response.status_code == status
        async with aiohttp.ClientSession() as s, s.get(url_http, headers=headers) as r:
            assert r.status == status
            assert (await r.json())["error"]["message"]


async def test_send_only_rule_cannot_listen_and_listen_only_rule_cannot_send(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        '[[namespace.rules]]\nname = "root"\nprimary_key = "root-key-0123456789abcdef"\nrights = ["Manage"]\n'
        '[[namespace.rules]]\nname = "sender"\nprimary_key = "send-key-0123456789abcdef"\nrights = ["Send"]\n'
        '[[namespace.rules]]\nname = "listener"\nprimary_key = "listen-key-0123456789abcd"\nrights = ["Listen"]\n')
    gw = gateway_factory("--config", str(cfg))
    send_tok = gw.token("rights", key_name="sender", key="send-key-0123456789abcdef")
    listen_tok = gw.token("rights", key_name="listener", key="listen-key-0123456789abcd")
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(gw.listen_url("rights"), additional_headers={"ServiceBusAuthorization": send_tok})
    assert info.value.response.status_code == 403
    async with RawListener(gw.listen_url("rights"), listen_tok):
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(gw.connect_url("rights"),
                                     additional_headers={"ServiceBusAuthorization": listen_tok})
        assert info.value.response.status_code == 403
        async with websockets.connect(gw.connect_url("rights"), compression=None,
                                      additional_headers={"ServiceBusAuthorization": send_tok}) as ws:
            await ws.send("ok")
            assert await ws.recv() == "ok"


async def test_unknown_hybrid_connection_is_404(gateway):
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(gateway.connect_url("never-created"),
                                 additional_headers={"ServiceBusAuthorization": gateway.token("never-created")})
    assert info.value.response.status_code == 404
    async with aiohttp.ClientSession() as s, s.get(f"{gateway.http_base}/never-created",
                     headers={"ServiceBusAuthorization": gateway.token("never-created")}) as r:
        assert r.status == 404


async def test_declared_only_namespace_refuses_unknown_listen_with_404(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[namespace]\ndynamic = false\n[[hybrid_connections]]\nname = "declared"\n')
    gw = gateway_factory("--config", str(cfg))
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(gw.listen_url("undeclared"),
                                 additional_headers={"ServiceBusAuthorization": gw.token("undeclared")})
    assert info.value.response.status_code == 404
    await still_serves(gw, "declared")


async def test_unknown_action_is_400(gateway):
    async with RawListener(gateway.listen_url("act"), gateway.token("act")):
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(f"{gateway.ws_base}/$hc/act?sb-hc-action=dance",
                                     additional_headers={"ServiceBusAuthorization": gateway.token("act")})
        assert info.value.response.status_code == 400
        assert "action" in info.value.response.reason_phrase


async def test_missing_action_means_connect(gateway):
    async with RawListener(gateway.listen_url("noact"), gateway.token("noact")):
        async with websockets.connect(f"{gateway.ws_base}/$hc/noact", compression=None,
                                      additional_headers={"ServiceBusAuthorization": gateway.token("noact")}) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"


@pytest.mark.parametrize("payload,code", [
    ("{not json", 1008),
    (json.dumps(["an", "array"]), 1008),
    (json.dumps({"response": {"requestId": "x", "statusCode": "abc"}}), 1008),
    (json.dumps({"response": {"requestId": "x", "statusCode": 200}, "extra": {}}), 1008),
    ("x" * (64 * 1024 + 1), 1009),
])
async def test_malformed_or_oversize_control_message_closes_the_channel(gateway, payload, code):
    ws = await websockets.connect(gateway.listen_url("bad"), max_size=None, compression=None,
                                  additional_headers={"ServiceBusAuthorization": gateway.token("bad")})
    await ws.send(payload)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10 * TIMEOUT_FACTOR)
    assert ws.close_code == code
    await still_serves(gateway)


async def test_unknown_control_message_is_ignored(gateway):
    ws = await websockets.connect(gateway.listen_url("unk"), compression=None,
                                  additional_headers={"ServiceBusAuthorization": gateway.token("unk")})
    await ws.send(json.dumps({"injectFault": {"delay": 1}}))
    await ws.ping()
    await ws.send(b"stray binary")
    pong = await ws.ping()
    await asyncio.wait_for(pong, 10 * TIMEOUT_FACTOR)  # still open and answering
    await ws.close()


async def test_raw_garbage_after_upgrade_closes_with_protocol_error(gateway):
    ws = await websockets.connect(gateway.listen_url("garb"), compression=None,
                                  additional_headers={"ServiceBusAuthorization": gateway.token("garb")})
    ws.transport.write(b"\x8f\x80\x00\x00\x00\x00")  # unmasked... opcode 0xF: unknown, with RSV unset
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10 * TIMEOUT_FACTOR)
    await still_serves(gateway)


@pytest.mark.parametrize("case", ["unknown", "reused", "expired"])
async def test_accept_with_bad_id_is_403(gateway_factory, tmp_path, case):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\naccept_timeout = 2\n")
    gw = gateway_factory("--config", str(cfg))
    if case == "unknown":
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(f"{gw.ws_base}/$hc/x?sb-hc-action=accept&sb-hc-id=made-up")
        assert info.value.response.status_code in (403, 404)
        # for an existing entity it must be 403 exactly
        async with RawListener(gw.listen_url("x"), gw.token("x")):
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(f"{gw.ws_base}/$hc/x?sb-hc-action=accept&sb-hc-id=made-up")
            assert info.value.response.status_code == 403
        return
    async with RawListener(gw.listen_url("acc"), gw.token("acc"), ws_mode="accept" if case == "reused" else "ignore") \
            as listener:
        async def connect():
            return await websockets.connect(gw.connect_url("acc"),
                                            additional_headers={"ServiceBusAuthorization": gw.token("acc")})

        sender = asyncio.create_task(connect())
        if case == "reused":
            ws = await sender
            await ws.send("x")
            await ws.recv()
            address = listener.accepts[0]["address"]
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(address)
            assert info.value.response.status_code == 403
            await ws.close()
        else:
            with pytest.raises(websockets.InvalidStatus):
                await sender  # 504 after accept_timeout
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(listener.accepts[0]["address"])
            assert info.value.response.status_code == 403


async def test_26th_listener_is_refused_with_a_reason(gateway):
    listeners = []
    try:
        for _ in range(25):
            listeners.append(await websockets.connect(
                gateway.listen_url("full"), additional_headers={"ServiceBusAuthorization": gateway.token("full")}))
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(gateway.listen_url("full"),
                                     additional_headers={"ServiceBusAuthorization": gateway.token("full")})
        assert info.value.response.status_code == 403
        assert "25 listeners" in info.value.response.reason_phrase
    finally:
        for ws in listeners:
            await ws.close()
    await still_serves(gateway)


async def test_reconnect_storm_with_bad_key_is_rate_limited(gateway):
    """hyco-ws retries a failed listen at once, forever (§2.8). The gateway slows such a client down."""
    bad = bad_tokens(gateway, "storm")["wrong-key"][0]
    statuses = []
    for _ in range(40):
        try:
            await websockets.connect(gateway.listen_url("storm"), additional_headers={"ServiceBusAuthorization": bad},
                                     open_timeout=10 * TIMEOUT_FACTOR)
        except websockets.InvalidStatus as exc:
            statuses.append(exc.response.status_code)
            if exc.response.status_code == 429:
                break
    assert statuses[0] == 401
    assert statuses[-1] == 429, statuses
    # Other clients are not affected by one client's storm... and neither is this client with a good token
    # once the window passes; a fresh entity check proves the gateway itself is fine.
    assert gateway.alive()


async def test_renew_token_keeps_the_channel_and_a_bad_one_closes_it_with_1008(gateway):
    ws = await websockets.connect(gateway.listen_url("renew"), compression=None,
                                  additional_headers={"ServiceBusAuthorization": gateway.token("renew")})
    await ws.send(json.dumps({"renewToken": {"token": gateway.token("renew", ttl=7200)}}))
    await asyncio.wait_for(await ws.ping(), 10 * TIMEOUT_FACTOR)
    await ws.send(json.dumps({"renewToken": {"token": "SharedAccessSignature sr=x&sig=bad&se=1&skn=y"}}))
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10 * TIMEOUT_FACTOR)
    assert ws.close_code == 1008


async def test_expired_listener_token_closes_with_1008_after_grace(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\ntoken_grace = 1\nping_interval = 1\n")
    gw = gateway_factory("--config", str(cfg))
    # Valid now (within the 30 s presentation skew), already past expiry + grace for the channel.
    token = gw.token("exp", expiry=int(time.time()) - 5)
    ws = await websockets.connect(gw.listen_url("exp"), additional_headers={"ServiceBusAuthorization": token})
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 20 * TIMEOUT_FACTOR)
    assert ws.close_code == 1008


async def test_gateway_pings_idle_listeners(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\nping_interval = 1\n")
    gw = gateway_factory("--config", str(cfg))
    pinged = asyncio.Event()
    ws = await websockets.connect(gw.listen_url("idle"), ping_interval=None,
                                  additional_headers={"ServiceBusAuthorization": gw.token("idle")})
    original = ws.protocol.recv_frame if hasattr(ws.protocol, "recv_frame") else None

    def spy(frame):
        if frame.opcode.name == "PING":
            pinged.set()
        return original(frame)

    ws.protocol.recv_frame = spy
    await asyncio.wait_for(pinged.wait(), 20 * TIMEOUT_FACTOR)
    await ws.close()


@pytest.mark.parametrize("request_bytes", [
    b"GET /$hc/x?sb-hc-action=listen HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00garbage-tls-hello\r\n\r\n",
    (b"GET /$hc/x?sb-hc-action=listen HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"),
])
async def test_malformed_http_gets_4xx_not_a_crash(gateway, request_bytes):
    with socket.create_connection((gateway.host, gateway.port), timeout=10 * TIMEOUT_FACTOR) as sock:
        sock.sendall(request_bytes)
        answer = sock.recv(200)
    assert answer == b"" or answer.startswith(b"HTTP/1.") and answer[9:10] == b"4", answer
    await still_serves(gateway)


async def test_bad_sec_websocket_key_is_400(gateway):
    with socket.create_connection((gateway.host, gateway.port), timeout=10 * TIMEOUT_FACTOR) as sock:
        token = gateway.token("k")
        sock.sendall((f"GET /$hc/k?sb-hc-action=listen HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n"
                      f"ServiceBusAuthorization: {token}\r\n\r\n").encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 400")


async def test_requests_in_flight_are_capped_with_503(gateway_factory, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[gateway]\nmax_connections = 3\n")
    gw = gateway_factory("--config", str(cfg))
    entered = asyncio.Event()
    release = asyncio.Event()

    async def hang(head, body):
        entered.set()
        await release.wait()
        return 200, {}, b"late"

    async with RawListener(gw.listen_url("cap"), gw.token("cap"), http=hang), aiohttp.ClientSession() as s:
        headers = {"ServiceBusAuthorization": gw.token("cap")}
        held = [asyncio.create_task(s.get(f"{gw.http_base}/cap/{i}", headers=headers)) for i in range(3)]
        await asyncio.wait_for(entered.wait(), 10 * TIMEOUT_FACTOR)
        for _ in range(100):  # until all three are pending at the gateway
            async with aiohttp.ClientSession() as probe, probe.get(f"{gw.http_base}/$health") as r:
                if (await r.json())["pending"]["requests"] == 3:
                    break
            await asyncio.sleep(0.05)
        async with s.get(f"{gw.http_base}/cap/x", headers=headers) as r:
            assert r.status == 503
        release.set()
        for task in held:
            response = await asyncio.wait_for(task, 10 * TIMEOUT_FACTOR)
            assert response.status == 200
            response.release()


async def test_a_rendezvous_cannot_answer_for_another_request(gateway):
    """A response counts only on its request's own rendezvous or the control channel the request went to."""
    entity = "isolation"
    control = await websockets.connect(gateway.listen_url(entity), compression=None,
                                       additional_headers={"ServiceBusAuthorization": gateway.token(entity)})
    async with aiohttp.ClientSession() as s:
        headers = {"ServiceBusAuthorization": gateway.token(entity)}
        first = asyncio.create_task(s.get(f"{gateway.http_base}/{entity}/one", headers=headers))
        second = asyncio.create_task(s.get(f"{gateway.http_base}/{entity}/two", headers=headers))
        requests_seen = {}
        while len(requests_seen) < 2:
            message = json.loads(await asyncio.wait_for(control.recv(), 10 * TIMEOUT_FACTOR))["request"]
            requests_seen[message["requestTarget"]] = message
        one, two = requests_seen[f"/{entity}/one"], requests_seen[f"/{entity}/two"]

        def response(req, body_text):
            return json.dumps({"response": {"requestId": req["id"], "statusCode": 200, "body": True,
                                            "responseHeaders": {"X-From": body_text}}})

        async with websockets.connect(one["address"], compression=None) as rendezvous:
            await rendezvous.send(response(two, "forged"))  # request two was never sent to this socket
            await rendezvous.send(b"forged body")
            await rendezvous.send(response(one, "rendezvous"))
            await rendezvous.send(b"answer one")
            r1 = await asyncio.wait_for(first, 10 * TIMEOUT_FACTOR)
            assert await r1.read() == b"answer one"
        assert not second.done()
        await control.send(response(two, "control"))
        await control.send(b"answer two")
        r2 = await asyncio.wait_for(second, 10 * TIMEOUT_FACTOR)
        assert await r2.read() == b"answer two" and r2.headers["X-From"] == "control"
    await control.close()


async def test_a_header_value_that_is_not_utf8_reaches_the_listener_as_latin1(gateway):
    """obs-text (RFC 9110 §5.5) in a relayed request: read as ISO-8859-1, not a 500 from the control message."""
    async with RawListener(gateway.listen_url("obs"), gateway.token("obs")) as listener:
        reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
        writer.write(b"GET /obs HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization: " + gateway.token("obs").encode()
                     + b"\r\nX-Name: caf\xe9\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10 * TIMEOUT_FACTOR)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert listener.requests[0]["requestHeaders"]["X-Name"] == "caf\u00e9"
    await still_serves(gateway)

