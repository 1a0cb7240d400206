"""Pure parts: the HybridConnectionRelayBinding, its place in wcfrelay.migrate, what add_endpoint accepts, and the
host's small helpers. No gateway."""

from __future__ import annotations

import asyncio

import pytest

from hybrid.errors import ConfigError
from samples.calculator import service as calculator
from wcfrelay import link
from wcfrelay.bindings import (
    HYBRID_CONNECTION,
    BasicHttpRelayBinding,
    HybridConnectionRelayBinding,
    NetEventRelayBinding,
    WebHttpRelayBinding,
    binding_for,
)
from wcfrelay.migrate import endpoints_from_app_config
from wcfrelay.service.forward import SoapForwarder, check_target
from wcfrelay.service.handler import ServiceRequest, SpyneHandler, callback_channel, run_service_request
from wcfrelay.service.host import (
    HybridEndpoint,
    RelayEndpoint,
    RelayServiceHost,
    reconnect_ladder,
    via_public_base,
)
from wcfrelay.service.spyne_app import SpyneBytesApp

CS = "Endpoint=sb://gw.example:9351/;SharedAccessKeyName=root;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0"


def test_the_hybrid_binding() -> None:
    binding = HybridConnectionRelayBinding()
    assert binding.link_binding is None and not binding.one_way and not binding.multicast
    assert binding.max_message == link.DEFAULT_MAX_MESSAGE and binding.ws_addressing
    assert binding.http and binding.websocket and binding.max_calls_per_connection == 64
    assert HybridConnectionRelayBinding(max_received_message_size=100 << 20).max_message == 100 << 20
    binding.check_protocol("soap12")
    binding.check_protocol("soap11")
    with pytest.raises(ConfigError, match="SOAP application"):
        binding.check_protocol("http")
    with pytest.raises(ConfigError, match="no listener link"):
        binding.registration("calc")
    for bad in ({"max_received_message_size": 0}, {"max_received_message_size": 2**31},
                {"http": False, "websocket": False}, {"max_calls_per_connection": 0},
                {"max_calls_per_connection": True}, {"client_authentication": "Windows"}):
        with pytest.raises(ConfigError):
            HybridConnectionRelayBinding(**bad)


def test_binding_for_knows_the_migration_name() -> None:
    assert isinstance(binding_for(HYBRID_CONNECTION), HybridConnectionRelayBinding)
    assert isinstance(binding_for("HybridConnectionRelayBinding"), HybridConnectionRelayBinding)
    assert binding_for("hybridconnection", max_received_message_size=1024).max_message == 1024
    with pytest.raises(ConfigError, match="hybridConnection"):
        binding_for("netTcp")


def test_migrated_endpoints_get_their_host_binding() -> None:
    from tests.migrate import SAMPLE

    basic, _ws, _log, events, tcp = endpoints_from_app_config(SAMPLE)
    assert tcp.layer == "hybrid" and tcp.binding == HYBRID_CONNECTION
    binding = tcp.host_binding()
    assert isinstance(binding, HybridConnectionRelayBinding)
    assert binding.max_message == (tcp.max_message or link.DEFAULT_MAX_MESSAGE)
    assert isinstance(basic.host_binding(), BasicHttpRelayBinding) and basic.host_binding() == basic.relay_binding()
    assert isinstance(events.host_binding(), NetEventRelayBinding)
    # relay_binding() stays what it was: the legacy layer's binding only
    with pytest.raises(ValueError):
        tcp.relay_binding()


def test_add_endpoint_builds_hybrid_endpoints() -> None:
    host = RelayServiceHost(CS, tls=False)
    hybrid = host.add_endpoint(calculator.make_application("soap12"), "calc-hc", HybridConnectionRelayBinding())
    assert isinstance(hybrid, HybridEndpoint) and isinstance(hybrid.handler, SpyneHandler)
    assert hybrid.app is not None and hybrid.app.ws_addressing and hybrid.app.protocol == "soap12"
    assert hybrid.url == "ws://gw.example:9351/$hc/calc-hc"
    assert hybrid.http_url == "http://gw.example:9351/calc-hc"
    assert hybrid.public_url() == "http://gw.example:9351/calc-hc"
    assert hybrid.public_url({"Via": "1.1 evil.example, 1.1 relay.example.com:8443"}) == \
        "http://relay.example.com:8443/calc-hc"
    soap11 = host.add_endpoint(calculator.make_application("soap11"), "calc11-hc", HybridConnectionRelayBinding())
    assert soap11.handler.soap_version.value == "1.1"
    with pytest.raises(ConfigError, match="SOAP application"):
        host.add_endpoint(calculator.make_application("http"), "web-hc", HybridConnectionRelayBinding())
    with pytest.raises(ConfigError, match="already"):
        host.add_endpoint(calculator.make_application("soap11"), "CALC-HC", BasicHttpRelayBinding())

    forwarder = SoapForwarder("http://localhost:8080/Service.svc")
    legacy = host.add_endpoint(forwarder, "fwd", WebHttpRelayBinding())
    assert isinstance(legacy, RelayEndpoint) and legacy.app is None and legacy.handler is forwarder
    assert forwarder.soap_version is None  # webHttp: not SOAP
    with pytest.raises(ConfigError, match="one-way"):
        host.add_endpoint(SoapForwarder("http://localhost:8080/S.svc"), "fwd-events", NetEventRelayBinding())
    with pytest.raises(TypeError, match="EndpointHandler"):
        host.add_endpoint(object(), "x")


def test_public_url_option_wins() -> None:
    host = RelayServiceHost(CS, tls=False, public_url="https://relay.example.com/")
    endpoint = host.add_endpoint(calculator.make_application("soap12"), "calc-hc", HybridConnectionRelayBinding())
    assert endpoint.public_url({"Via": "1.1 other:1"}) == "https://relay.example.com/calc-hc"
    for bad in ("relay.example.com", "ftp://relay", "https://relay/?x=1"):
        with pytest.raises(ConfigError):
            RelayServiceHost(CS, public_url=bad)


def test_via_and_ladder_helpers() -> None:
    assert via_public_base({"via": "1.1 gw:9351"}, tls=True) == "https://gw:9351"
    assert via_public_base({"Via": "1.1 [::1]:9351"}, tls=False) == "http://[::1]:9351"
    assert via_public_base({}, tls=False) is None
    assert via_public_base({"Via": "1.1 bad/host"}, tls=False) is None
    assert via_public_base({"Via": "garbage"}, tls=False) is None
    assert reconnect_ladder(1, 60) == (1, 2, 4, 8, 16, 32, 60)
    assert reconnect_ladder(0.05, 0.2) == (0.05, 0.1, 0.2)


def test_forward_target_checks() -> None:
    assert check_target("http://localhost:8080/Service.svc/") == "http://localhost:8080/Service.svc"
    assert check_target("https://host") == "https://host"
    forwarder = SoapForwarder("http://localhost:8080/Service.svc")
    assert forwarder.target_url("/", "wsdl") == "http://localhost:8080/Service.svc?wsdl"
    assert forwarder.target_url("/mex", "") == "http://localhost:8080/Service.svc/mex"
    assert SoapForwarder("http://h/").target_url("/a%20b", "x=1") == "http://h/a%20b?x=1"
    for bad in ("", "localhost:8080", "http://", "http://h/s?wsdl", "http://h/s#x", "http://h:0x/s",
                "http://a b/s"):
        with pytest.raises(ConfigError):
            check_target(bad)
    with pytest.raises(ConfigError):
        SoapForwarder("http://h/s", timeout=0)
    with pytest.raises(ConfigError):
        SoapForwarder("http://h/s", soap_version="2.0")


def test_callback_channel_is_only_there_for_websocket_calls() -> None:
    seen = []
    app = SpyneBytesApp(calculator.make_application("soap12"))
    marker = object()
    request = ServiceRequest(method="GET", path="/", query="wsdl", headers={}, body=b"",
                             public_url="http://gw/calc", callbacks=marker)  # type: ignore[arg-type]
    original = app.handle

    def spy(*args, **kwargs):
        seen.append(callback_channel())
        return original(*args, **kwargs)

    app.handle = spy  # type: ignore[method-assign]
    assert run_service_request(app, request).status == 200
    assert seen == [marker] and callback_channel() is None


def test_callback_channel_refuses_to_block_its_own_loop() -> None:
    from wcfrelay import soap
    from wcfrelay.service.websocket import CallbackChannel

    async def main() -> None:
        channel = CallbackChannel(object(), soap.SoapVersion.SOAP12, asyncio.get_running_loop())  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="send_async"):
            channel.send("urn:x")

    asyncio.run(main())
