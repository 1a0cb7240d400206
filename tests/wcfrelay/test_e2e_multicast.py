"""Several hosts on one address: NetEvent delivers every message to all of them, NetOneway to exactly one,
request/reply spreads calls over the hosts; different bindings on one path are refused (409)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests

from hybrid.errors import RelayError
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_support import (
    CT12,
    TNS,
    HostThread,
    env12,
    module_gateway,
    wait_for,
)
from wcfrelay import compat
from wcfrelay.bindings import BasicHttpRelayBinding, NetEventRelayBinding, NetOnewayRelayBinding
from wcfrelay.service.host import AddressAlreadyInUse, RelayServiceHost, is_permanent
from wcfrelay.service.spyne_app import build_application

compat.ensure_spyne_importable()
from spyne import Integer32, Service, Unicode, rpc


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory) -> GatewayProcess:
    yield from module_gateway(tmp_path_factory)


def recording_service(name: str, sink: list[str], lock: threading.Lock) -> type[Service]:
    """A distinct Spyne service per host, so each host's deliveries can be told apart."""

    class EventSink(Service):
        __service_name__ = "EventSink"

        @rpc(Unicode, _is_async=True)
        def Notify(ctx, event: str | None) -> None:
            with lock:
                sink.append(event or "")

        @rpc(_returns=Unicode)
        def Who(ctx) -> str:
            return name

        @rpc(Integer32, _returns=Integer32)
        def Twice(ctx, n: int | None) -> int:
            return 2 * (n or 0)

    EventSink.__name__ = f"EventSink_{name}"
    return EventSink


def start_hosts(gw: GatewayProcess, path: str, binding, count: int, protocol: str = "soap12"):
    sinks: list[list[str]] = [[] for _ in range(count)]
    lock = threading.Lock()
    threads = []
    for i in range(count):
        app = build_application([recording_service(f"h{i}", sinks[i], lock)], tns=TNS, name="EventSink",
                                protocol=protocol)
        host = RelayServiceHost(gw.connection_string(), tls=False)
        host.add_endpoint(app, path, binding)
        threads.append(HostThread(host).start())
    return threads, sinks, lock


def notify(gw: GatewayProcess, path: str, event: str) -> requests.Response:
    return requests.post(f"{gw.http_base}/{path}", data=env12(f'<Notify xmlns="{TNS}"><event>{event}</event></Notify>'),
                         headers={"Content-Type": CT12, "ServiceBusAuthorization": gw.token(path)},
                         timeout=15 * TIMEOUT_FACTOR)


def test_net_event_delivers_each_message_to_all_three_hosts(shared_gateway: GatewayProcess) -> None:
    threads, sinks, _lock = start_hosts(shared_gateway, "events", NetEventRelayBinding(), 3)
    try:
        for i in range(5):
            response = notify(shared_gateway, "events", f"e{i}")
            assert response.status_code == 202, response.text
            assert response.headers["X-Relay-Receivers"] == "3"
        expected = [f"e{i}" for i in range(5)]
        wait_for(lambda: all(sorted(s) == expected for s in sinks), what="every host to see every event")
    finally:
        for thread in threads:
            thread.stop()


def test_net_oneway_delivers_each_message_to_exactly_one_of_two_hosts(shared_gateway: GatewayProcess) -> None:
    threads, sinks, lock = start_hosts(shared_gateway, "queue", NetOnewayRelayBinding(), 2)
    try:
        for i in range(20):
            response = notify(shared_gateway, "queue", f"m{i}")
            assert response.status_code == 202, response.text
        wait_for(lambda: sum(len(s) for s in sinks) >= 20, what="20 deliveries")
        with lock:
            delivered = Counter(e for s in sinks for e in s)
        assert delivered == Counter(f"m{i}" for i in range(20))
    finally:
        for thread in threads:
            thread.stop()


def test_request_reply_calls_spread_over_hosts(shared_gateway: GatewayProcess) -> None:
    threads, _, _ = start_hosts(shared_gateway, "spread", BasicHttpRelayBinding(), 2, protocol="soap11")
    try:
        seen = Counter()
        body = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
                f'<Who xmlns="{TNS}"/></s:Body></s:Envelope>')
        for _ in range(40):
            response = requests.post(f"{shared_gateway.http_base}/spread", data=body,
                                     headers={"Content-Type": "text/xml; charset=utf-8",
                                              "ServiceBusAuthorization": shared_gateway.token("spread")}, timeout=10)
            assert response.status_code == 200
            seen[response.text.split("WhoResult>")[1].split("<")[0]] += 1
        assert set(seen) == {"h0", "h1"}  # random choice: both get some of 40 calls (p(fail) = 2**-39)
    finally:
        for thread in threads:
            thread.stop()


def test_another_binding_on_a_registered_path_is_refused_for_good(shared_gateway: GatewayProcess) -> None:
    threads, _, _ = start_hosts(shared_gateway, "taken", NetEventRelayBinding(), 1)
    try:
        host = RelayServiceHost(shared_gateway.connection_string(), tls=False)
        app = build_application([recording_service("x", [], threading.Lock())], tns=TNS, name="EventSink",
                                protocol="soap12")
        endpoint = host.add_endpoint(app, "taken", NetOnewayRelayBinding())
        with pytest.raises(AddressAlreadyInUse) as info:
            HostThread(host).start()
        assert isinstance(info.value, RelayError) and info.value.http_status == 409
        assert is_permanent(info.value)
        assert endpoint.status.value == "Offline"
        assert endpoint.connect_attempts == 1
    finally:
        for thread in threads:
            thread.stop()


async def test_a_26th_host_on_one_address_is_refused(shared_gateway: GatewayProcess) -> None:
    """WCF Relay allows at most 25 listeners per name; the 26th gets 403 and does not retry."""
    from hybrid.errors import AuthorizationError

    app = build_application([recording_service("crowd", [], threading.Lock())], tns=TNS, name="EventSink",
                            protocol="soap12")
    hosts: list[RelayServiceHost] = []
    try:
        for _ in range(25):
            host = RelayServiceHost(shared_gateway.connection_string(), tls=False)
            host.add_endpoint(app, "crowd", NetEventRelayBinding())
            await host.open()
            hosts.append(host)
        extra = RelayServiceHost(shared_gateway.connection_string(), tls=False)
        extra.add_endpoint(app, "crowd", NetEventRelayBinding())
        with pytest.raises(AuthorizationError) as info:
            await extra.open()
        assert info.value.http_status == 403 and is_permanent(info.value)
        assert extra.endpoints[0].connect_attempts == 1
    finally:
        for host in hosts:
            await host.close()
