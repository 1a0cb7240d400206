"""Connection status of a RelayServiceHost against real gateway processes: Online/Connecting/Offline across a
gateway restart, permanent refusals (wrong key → 401) that end in Offline without endless retries, and token
renewal over the link."""

from __future__ import annotations

import asyncio
import time

import pytest

from hybrid.auth import build_token
from hybrid.client.tokens import TokenProvider
from hybrid.errors import AuthenticationError
from samples.calculator import service as calculator
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess, start_gateway
from tests.wcfrelay.test_e2e_support import async_wait_for
from wcfrelay.bindings import BasicHttpRelayBinding
from wcfrelay.client import relay_async_zeep_client
from wcfrelay.service.host import ConnectionStatus, RelayServiceHost, is_permanent

FAST = {"backoff_initial": 0.05, "backoff_max": 0.5}


def recording_host(connection_string: str, events: list[str], **options) -> RelayServiceHost:
    host = RelayServiceHost(
        connection_string, tls=False, **{**FAST, **options},
        on_online=lambda: events.append("Online"),
        on_connecting=lambda: events.append("Connecting"),
        on_offline=lambda: events.append("Offline"),
    )
    host.add_endpoint(calculator.make_application("soap11"), "status/calc", BasicHttpRelayBinding())
    return host


async def add_through(gw: GatewayProcess, a: int, b: int) -> int:
    client = await asyncio.to_thread(relay_async_zeep_client, f"{gw.http_base}/status/calc?wsdl",
                                     connection_string=gw.connection_string())
    async with client:
        return await client.service.Add(a, b)


async def test_status_events_in_order_across_a_gateway_restart(tmp_path) -> None:
    state = tmp_path / "state"
    first = await asyncio.to_thread(start_gateway, state)
    events: list[str] = []
    host = recording_host(first.connection_string(), events)
    second = None
    try:
        await host.open()
        assert events == ["Connecting", "Online"] and host.status is ConnectionStatus.ONLINE
        assert await add_through(first, 1, 2) == 3

        await asyncio.to_thread(first.stop)
        await async_wait_for(lambda: host.status is ConnectionStatus.CONNECTING, what="Connecting")
        assert host.last_error is not None

        # A new gateway on the same port and state dir: same key, so the host gets back in by itself.
        second = await asyncio.to_thread(start_gateway, state, "--port", str(first.port))
        await async_wait_for(lambda: host.status is ConnectionStatus.ONLINE, timeout=20, what="Online again")
        assert await add_through(second, 20, 22) == 42
    finally:
        await host.close()
        for gw in (first, second):
            if gw is not None:
                await asyncio.to_thread(gw.stop)
    assert events == ["Connecting", "Online", "Connecting", "Online", "Offline"]
    assert host.endpoints[0].connect_attempts >= 2


async def test_wrong_key_on_open_is_permanent_and_goes_offline(gateway: GatewayProcess) -> None:
    events: list[str] = []
    wrong = f"Endpoint={gateway.endpoint};SharedAccessKeyName={gateway.key_name};SharedAccessKey=bm90IHRoZSBrZXk="
    host = recording_host(wrong, events)
    with pytest.raises(AuthenticationError) as info:
        await host.open()
    assert info.value.http_status == 401 and is_permanent(info.value)
    assert host.status is ConnectionStatus.OFFLINE
    assert isinstance(host.last_error, AuthenticationError)
    assert events == ["Connecting", "Offline"]
    assert host.endpoints[0].connect_attempts == 1


async def test_reconnect_into_401_goes_offline_and_stops_retrying(tmp_path) -> None:
    first = await asyncio.to_thread(start_gateway, tmp_path / "a")
    events: list[str] = []
    host = recording_host(first.connection_string(), events)
    second = None
    try:
        await host.open()
        await asyncio.to_thread(first.stop)
        # Same port, another state dir: another root key, so the host's key is now wrong.
        second = await asyncio.to_thread(start_gateway, tmp_path / "b", "--port", str(first.port))
        await asyncio.wait_for(host.wait_closed(), 20 * TIMEOUT_FACTOR)  # returns once every endpoint gave up
        endpoint = host.endpoints[0]
        assert endpoint.status is ConnectionStatus.OFFLINE
        assert isinstance(host.last_error, AuthenticationError)
        assert endpoint._run_task is not None and endpoint._run_task.done()  # no retry loop left
        attempts = endpoint.connect_attempts
        assert 2 <= attempts < 50
    finally:
        await host.close()
        for gw in (first, second):
            if gw is not None:
                await asyncio.to_thread(gw.stop)
    assert events == ["Connecting", "Online", "Connecting", "Offline"]
    assert host.endpoints[0].connect_attempts == attempts


async def test_tokens_are_renewed_over_the_link(gateway: GatewayProcess) -> None:
    events: list[str] = []
    host = recording_host(gateway.connection_string(), events, token_ttl=2.5)
    endpoint = host.endpoints[0]
    async with host:
        await async_wait_for(lambda: endpoint.renewals >= 2, timeout=15, what="two renewals")
        assert endpoint.link_errors == []
        assert endpoint.connect_attempts == 1 and host.status is ConnectionStatus.ONLINE
        assert await add_through(gateway, 2, 2) == 4
    assert events == ["Connecting", "Online", "Offline"]


class _GoodThenWrongKey(TokenProvider):
    """A token source whose key was rotated away after the first token (what an operator's mistake looks like)."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.calls = 0

    async def get_token(self, audience: str, ttl: float) -> tuple[str, float]:
        self.calls += 1
        key = self.gw.key if self.calls == 1 else "bm90IHRoZSBrZXk="
        expiry = int(time.time() + ttl)
        return build_token(audience, self.gw.key_name, key, expiry), float(expiry)


async def test_a_refused_renewal_closes_the_link_and_the_host_gives_up(gateway: GatewayProcess) -> None:
    events: list[str] = []
    host = RelayServiceHost(
        token_provider=_GoodThenWrongKey(gateway), endpoint=gateway.endpoint, tls=False, token_ttl=2, **FAST,
        on_online=lambda: events.append("Online"), on_connecting=lambda: events.append("Connecting"),
        on_offline=lambda: events.append("Offline"),
    )
    host.add_endpoint(calculator.make_application("soap11"), "status/calc")
    try:
        await host.open()
        await asyncio.wait_for(host.wait_closed(), 20 * TIMEOUT_FACTOR)
        assert isinstance(host.last_error, AuthenticationError)
    finally:
        await host.close()
    assert events == ["Connecting", "Online", "Connecting", "Offline"]
    assert host.endpoints[0].renewals == 1
