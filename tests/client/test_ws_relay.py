"""Python listener and Python sender through a real gateway: WebSocket relaying (spec §1.3, §2.2, §2.6, §2.8)."""

from __future__ import annotations

import asyncio
import os

import pytest

from hybrid.client import AcceptContext, HybridConnectionClient, HybridConnectionListener, RelayedConnection
from hybrid.client.tokens import SharedAccessKeyTokenProvider
from hybrid.errors import AuthenticationError, BadRequest, ConnectionClosed, EndpointNotFound, RelayError
from tests.client import within


async def _echo(conn: RelayedConnection) -> None:
    async for message in conn:
        await conn.send(message)


async def test_echo_text_and_binary_with_suffix_query_headers_and_subprotocol(gateway):
    contexts: list[AcceptContext] = []

    def accept(context: AcceptContext) -> bool:
        contexts.append(context)
        return True

    listener = HybridConnectionListener(
        gateway.connection_string("echo"), tls=False, accept_handler=accept, connection_handler=_echo
    )
    async with listener:
        client = HybridConnectionClient(gateway.connection_string("echo"), tls=False)
        conn = await within(
            client.connect("/room/7", "user=bob&x=%20y", headers={"X-App": "v1"}, subprotocols=["chat", "superchat"])
        )
        await conn.send("hello")
        assert await within(conn.recv()) == "hello"  # text stays text
        await conn.send(b"\x00\x01\xff")
        assert await within(conn.recv()) == b"\x00\x01\xff"  # binary stays binary
        big = os.urandom(300_000)
        await conn.send(big)
        assert await within(conn.recv()) == big
        assert conn.subprotocol == "chat"  # the first offered one, echoed to both sides (§2.6)
        await conn.close(1000, "bye")

    (context,) = contexts
    assert context.suffix == "/room/7"
    assert context.path == "/echo/room/7"
    assert context.query == "user=bob&x=%20y"  # sb-hc-* filtered, the rest byte for byte (§1.2)
    assert context.connect_headers["X-App"] == "v1"
    assert "ServiceBusAuthorization" not in context.connect_headers  # the relay token never reaches a listener
    assert context.connect_headers.get("Sec-WebSocket-Key")  # hyco-ws needs it (§2.2)
    assert context.offered_subprotocols == ["chat", "superchat"]
    assert context.remote_endpoint is not None and context.remote_endpoint.address == "127.0.0.1"


async def test_async_for_yields_connections_and_close_codes_cross_the_relay(gateway):
    async with HybridConnectionListener(gateway.connection_string("iter"), tls=False) as listener:
        client = HybridConnectionClient(gateway.connection_string("iter"), tls=False)
        sender_task = asyncio.ensure_future(client.connect())
        accepted = await within(anext(aiter(listener)))
        sender = await within(sender_task)
        assert accepted.context is not None and accepted.context.suffix == ""
        await sender.send("ping")
        assert await within(accepted.recv()) == "ping"
        await accepted.send(b"pong")
        assert await within(sender.recv()) == b"pong"
        await accepted.close(4000, "listener done")
        with pytest.raises(ConnectionClosed) as caught:
            await within(sender.recv())
        assert caught.value.close_code == 4000
        assert caught.value.close_reason == "listener done"


async def test_several_senders_at_once_each_get_their_own_connection(gateway):
    async with HybridConnectionListener(gateway.connection_string("many"), tls=False, connection_handler=_echo):
        client = HybridConnectionClient(gateway.connection_string("many"), tls=False)
        conns = await within(asyncio.gather(*(client.connect(f"/n{i}") for i in range(8))))
        await asyncio.gather(*(c.send(f"msg {i}") for i, c in enumerate(conns)))
        replies = await within(asyncio.gather(*(c.recv() for c in conns)))
        assert replies == [f"msg {i}" for i in range(8)]
        await asyncio.gather(*(c.close() for c in conns))


async def test_listener_rejection_reaches_the_sender_with_status_and_description(gateway):
    def accept(context: AcceptContext):
        if context.suffix == "/deny":
            return (401, "Status Description from test")
        if context.suffix == "/teapot":
            return 418
        return False

    async with HybridConnectionListener(gateway.connection_string("gate"), tls=False, accept_handler=accept):
        client = HybridConnectionClient(gateway.connection_string("gate"), tls=False)
        with pytest.raises(AuthenticationError) as denied:
            await within(client.connect("/deny"))
        assert denied.value.http_status == 401
        assert denied.value.status_description == "Status Description from test"

        with pytest.raises(BadRequest) as refused:
            await within(client.connect("/other"))
        assert refused.value.http_status == 400
        assert refused.value.status_description == "Rejected by user code"

        with pytest.raises(RelayError) as teapot:
            await within(client.connect("/teapot"))
        assert teapot.value.http_status == 418


async def test_async_accept_handler_and_a_handler_that_raises(gateway):
    async def accept(context: AcceptContext) -> bool:
        if context.query == "boom=1":
            raise RuntimeError("application bug")
        await asyncio.sleep(0)
        return True

    async with HybridConnectionListener(
        gateway.connection_string("asyncgate"), tls=False, accept_handler=accept, connection_handler=_echo
    ):
        client = HybridConnectionClient(gateway.connection_string("asyncgate"), tls=False)
        conn = await within(client.connect())
        await conn.send("ok")
        assert await within(conn.recv()) == "ok"
        await conn.close()
        with pytest.raises(RelayError) as failed:
            await within(client.connect(query="boom=1"))
        assert failed.value.http_status == 500


async def test_sender_errors_map_to_project_exceptions(gateway):
    # Created by a listener, then left: "no listener" is a 404 for WebSocket senders (§2.8).
    async with HybridConnectionListener(gateway.connection_string("lonely"), tls=False):
        pass
    client = HybridConnectionClient(gateway.connection_string("lonely"), tls=False)
    with pytest.raises(EndpointNotFound):
        await within(client.connect())

    never = HybridConnectionClient(gateway.connection_string("never-created"), tls=False)
    with pytest.raises(EndpointNotFound):
        await within(never.connect())

    async with HybridConnectionListener(gateway.connection_string("guarded"), tls=False):
        wrong_key = HybridConnectionClient(
            f"sb://127.0.0.1:{gateway.port}/guarded",
            SharedAccessKeyTokenProvider(gateway.key_name, "not-the-key-at-all"),
            tls=False,
        )
        with pytest.raises(AuthenticationError) as caught:
            await within(wrong_key.connect())
        assert caught.value.http_status == 401

        anonymous = HybridConnectionClient(f"sb://127.0.0.1:{gateway.port}/guarded", tls=False)
        with pytest.raises(AuthenticationError):
            await within(anonymous.connect())


async def test_address_and_token_provider_instead_of_connection_string(gateway):
    provider = SharedAccessKeyTokenProvider(gateway.key_name, gateway.key)
    address = f"sb://127.0.0.1:{gateway.port}/explicit"
    async with HybridConnectionListener(address, provider, scheme="ws", connection_handler=_echo):
        client = HybridConnectionClient(address, provider, scheme="ws")
        conn = await within(client.connect())
        await conn.send("via address")
        assert await within(conn.recv()) == "via address"
        await conn.close()


async def test_unreachable_gateway_is_a_connection_error():
    client = HybridConnectionClient("sb://127.0.0.1:1/nobody", tls=False)
    with pytest.raises(ConnectionClosed):
        await within(client.connect())


async def test_listener_may_choose_another_offered_subprotocol_and_sender_close_codes_arrive(gateway):
    def accept(context: AcceptContext) -> bool:
        context.subprotocol = "superchat"
        return True

    async with HybridConnectionListener(gateway.connection_string("proto"), tls=False, accept_handler=accept) as lst:
        client = HybridConnectionClient(gateway.connection_string("proto"), tls=False)
        sender_task = asyncio.ensure_future(client.connect(subprotocols=["chat", "superchat"]))
        accepted = await within(lst.accept_connection())
        sender = await within(sender_task)
        assert sender.subprotocol == accepted.subprotocol == "superchat"  # both sides agree (§2.6)
        await sender.close(4001, "sender bye")
        with pytest.raises(ConnectionClosed) as caught:
            await within(accepted.recv())
        assert (caught.value.close_code, caught.value.close_reason) == (4001, "sender bye")
