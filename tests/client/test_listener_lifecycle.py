"""Listener lifecycle against real gateway processes: status events, reconnect ladder, 404 ends retrying,
401 does not, token renewal (spec §2.5, §2.8)."""

from __future__ import annotations

import asyncio
import time

import pytest

from hybrid.client import (
    HybridConnectionClient,
    HybridConnectionListener,
    ListenerStatus,
    RelayedConnection,
    SharedAccessKeyTokenProvider,
    TokenProvider,
)
from hybrid.errors import AuthenticationError, ConnectionClosed, EndpointNotFound
from tests.client import seconds, within
from tests.support.gateway_process import GatewayProcess, start_gateway

DECLARED_ONLY = """
[namespace]
dynamic = false

[[hybrid_connections]]
name = "declared"
"""


async def _echo(conn: RelayedConnection) -> None:
    async for message in conn:
        await conn.send(message)


class StatusLog:
    """Collects status events in order and lets a test await the n-th occurrence of one."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._changed = asyncio.Condition()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_online": lambda: self._record("Online"),
            "on_connecting": lambda: self._record("Connecting"),
            "on_offline": lambda: self._record("Offline"),
        }

    def _record(self, name: str) -> None:
        self.events.append(name)
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, name: str, occurrence: int, timeout: float = 30.0) -> None:
        async def condition() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.events.count(name) >= occurrence)

        await within(condition(), timeout)


async def _echo_once(gw: GatewayProcess, entity: str, text: str) -> str | bytes:
    conn = await within(HybridConnectionClient(gw.connection_string(entity), tls=False).connect())
    try:
        await conn.send(text)
        return await within(conn.recv())
    finally:
        await conn.close()


async def test_open_reports_connecting_then_online_and_close_reports_offline(gateway):
    log = StatusLog()
    listener = HybridConnectionListener(gateway.connection_string("states"), tls=False, **log.callbacks())
    assert listener.status is ListenerStatus.OFFLINE
    await within(listener.open())
    assert listener.status is ListenerStatus.ONLINE and listener.is_online
    iterator = aiter(listener)
    pending = asyncio.ensure_future(anext(iterator))
    await listener.close()
    with pytest.raises(StopAsyncIteration):
        await within(pending)  # async for ends when the listener closes
    assert listener.status is ListenerStatus.OFFLINE
    assert log.events == ["Connecting", "Online", "Offline"]


async def test_reconnects_after_the_gateway_restarts_on_the_same_port(tmp_path):
    state = tmp_path / "state"
    first = await asyncio.to_thread(start_gateway, state)
    second: GatewayProcess | None = None
    log = StatusLog()
    listener = HybridConnectionListener(
        first.connection_string("phoenix"), tls=False, connection_handler=_echo, **log.callbacks()
    )
    try:
        await within(listener.open())
        assert await _echo_once(first, "phoenix", "before") == "before"
        await asyncio.to_thread(first.stop)
        await log.wait_for("Connecting", 2)
        assert listener.status is ListenerStatus.CONNECTING
        assert isinstance(listener.last_error, ConnectionClosed)
        # The fixture's argv has "--port 0"; the later flag wins.
        second = await asyncio.to_thread(start_gateway, state, "--port", str(first.port))
        assert second.port == first.port
        await log.wait_for("Online", 2, timeout=60.0)  # the ladder is 0, 1, 2, 5, 10 s
        assert listener.status is ListenerStatus.ONLINE
        assert await _echo_once(second, "phoenix", "after") == "after"
    finally:
        await listener.close()
        for gw in (first, second):
            if gw is not None:
                await asyncio.to_thread(gw.stop)
    assert log.events == ["Connecting", "Online", "Connecting", "Online", "Offline"]


async def test_open_on_an_unknown_hybrid_connection_raises_endpoint_not_found(gateway_factory, tmp_path):
    config = tmp_path / "declared.toml"
    config.write_text(DECLARED_ONLY)
    gw = await asyncio.to_thread(gateway_factory, "--config", str(config))
    log = StatusLog()
    listener = HybridConnectionListener(gw.connection_string("undeclared"), tls=False, **log.callbacks())
    with pytest.raises(EndpointNotFound):
        await within(listener.open())
    assert listener.status is ListenerStatus.OFFLINE
    assert isinstance(listener.last_error, EndpointNotFound)
    assert log.events == ["Connecting", "Offline"]
    async with HybridConnectionListener(gw.connection_string("declared"), tls=False) as ok:
        assert ok.is_online


async def test_a_404_while_reconnecting_stops_the_listener(tmp_path):
    state = tmp_path / "state"
    config = tmp_path / "declared.toml"
    config.write_text(DECLARED_ONLY)
    first = await asyncio.to_thread(start_gateway, state)  # dynamic: "fleeting" exists once listened on
    second: GatewayProcess | None = None
    log = StatusLog()
    listener = HybridConnectionListener(first.connection_string("fleeting"), tls=False, **log.callbacks())
    try:
        await within(listener.open())
        ended = asyncio.ensure_future(listener.accept_connection())
        await asyncio.to_thread(first.stop)
        await log.wait_for("Connecting", 2)
        # Same keys (same state dir), same port, but "fleeting" is not declared: listen answers 404.
        second = await asyncio.to_thread(start_gateway, state, "--config", str(config), "--port", str(first.port))
        await log.wait_for("Offline", 1, timeout=60.0)
        assert listener.status is ListenerStatus.OFFLINE
        assert isinstance(listener.last_error, EndpointNotFound)
        assert await within(ended) is None  # async for ends too
        # Had it kept retrying, the next rungs (1 s, 2 s) would have reached the gateway by now.
        await asyncio.sleep(seconds(3.5))
        attempts = [line for line in second.output if "/$hc/fleeting" in line and "404" in line]
        assert len(attempts) == 1, attempts
        assert listener.status is ListenerStatus.OFFLINE
    finally:
        await listener.close()
        for gw in (first, second):
            if gw is not None:
                await asyncio.to_thread(gw.stop)
    assert log.events[:4] == ["Connecting", "Online", "Connecting", "Offline"]


async def test_a_401_while_reconnecting_is_retried(tmp_path):
    good_state, other_state = tmp_path / "good", tmp_path / "other"
    first = await asyncio.to_thread(start_gateway, good_state)
    gateways = [first]
    log = StatusLog()
    listener = HybridConnectionListener(
        first.connection_string("stubborn"), tls=False, connection_handler=_echo, **log.callbacks()
    )
    try:
        await within(listener.open())
        await asyncio.to_thread(first.stop)
        await log.wait_for("Connecting", 2)
        # Another state dir means other keys: our token no longer validates.
        impostor = await asyncio.to_thread(start_gateway, other_state, "--port", str(first.port))
        gateways.append(impostor)

        async def until_unauthorized() -> None:
            while not isinstance(listener.last_error, AuthenticationError):
                await asyncio.sleep(0.05)

        await within(until_unauthorized(), 30)
        assert listener.status is ListenerStatus.CONNECTING  # still trying
        await asyncio.to_thread(impostor.stop)
        restored = await asyncio.to_thread(start_gateway, good_state, "--port", str(first.port))
        gateways.append(restored)
        await log.wait_for("Online", 2, timeout=60.0)
        assert await _echo_once(restored, "stubborn", "back") == "back"
    finally:
        await listener.close()
        for gw in gateways:
            await asyncio.to_thread(gw.stop)
    assert "Offline" not in log.events[:-1]


async def test_open_with_a_wrong_key_raises_authentication_error(gateway):
    listener = HybridConnectionListener(
        f"sb://127.0.0.1:{gateway.port}/locked",
        SharedAccessKeyTokenProvider(gateway.key_name, "definitely-the-wrong-key"),
        tls=False,
    )
    with pytest.raises(AuthenticationError):
        await within(listener.open())
    assert listener.status is ListenerStatus.OFFLINE


class CountingProvider(TokenProvider):
    """Real SAS tokens; counts how often it is asked, and can sign renewals with a wrong key."""

    def __init__(self, key_name: str, key: str, *, bad_renewal: bool = False) -> None:
        self.good = SharedAccessKeyTokenProvider(key_name, key)
        self.bad = SharedAccessKeyTokenProvider(key_name, "a-key-the-gateway-does-not-know")
        self.bad_renewal = bad_renewal
        self.calls = 0
        self.asked = asyncio.Event()

    async def get_token(self, audience: str, ttl: float) -> tuple[str, float]:
        self.calls += 1
        self.asked.set()
        provider = self.bad if (self.bad_renewal and self.calls == 2) else self.good
        return await provider.get_token(audience, ttl)


async def test_token_is_renewed_on_the_control_channel_before_expiry(gateway):
    provider = CountingProvider(gateway.key_name, gateway.key)
    log = StatusLog()
    listener = HybridConnectionListener(
        f"sb://127.0.0.1:{gateway.port}/renewing", provider, tls=False, token_ttl=2, connection_handler=_echo,
        **log.callbacks(),
    )
    async with listener:
        started = time.monotonic()
        while provider.calls < 3:  # the connect, then two renewals at ~80 % of each 2 s lifetime
            provider.asked.clear()
            await within(provider.asked.wait())
        assert time.monotonic() - started >= 2.0  # not before they were due
        assert await _echo_once(gateway, "renewing", "still here") == "still here"
        assert log.events == ["Connecting", "Online"]  # the renewals did not cost a reconnect


async def test_a_rejected_renewal_closes_the_channel_and_the_listener_reconnects(gateway):
    provider = CountingProvider(gateway.key_name, gateway.key, bad_renewal=True)
    log = StatusLog()
    listener = HybridConnectionListener(
        f"sb://127.0.0.1:{gateway.port}/badrenew", provider, tls=False, token_ttl=2, connection_handler=_echo,
        **log.callbacks(),
    )
    async with listener:
        await log.wait_for("Online", 2)  # the gateway closed with 1008 on the bad renewToken (§2.5)
        assert isinstance(listener.last_error, ConnectionClosed)
        assert listener.last_error.close_code == 1008
        assert await _echo_once(gateway, "badrenew", "recovered") == "recovered"
    assert log.events[:4] == ["Connecting", "Online", "Connecting", "Online"]
