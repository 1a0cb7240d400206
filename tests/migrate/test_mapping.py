"""The mapping rules, binding by binding: where each WCF endpoint goes and with which settings."""

from __future__ import annotations

import pytest

from wcfrelay import link
from wcfrelay.migrate import HYBRID_BINDING, EndpointPlan, endpoints_from_app_config, plan_migration

from . import SAMPLE, config


def by_name(plan, name: str, role: str | None = None) -> EndpointPlan:
    found = [e for e in plan.endpoints if e.name == name and (role is None or e.role == role)]
    assert len(found) == 1, [e.label for e in plan.endpoints]
    return found[0]


def text(ep: EndpointPlan) -> str:
    return "\n".join(ep.maps + ep.changes + ep.actions)


# ------------------------------------------------------------------------------------------ basicHttp, discovery


def test_basic_http_maps_directly_with_public_discovery():
    plan = plan_migration(config("basic_http_public.config"))
    ep = by_name(plan, "orders")
    assert (ep.layer, ep.binding, ep.path) == ("legacy", "basicHttp", "orders")
    assert ep.role == "service" and ep.service == "Contoso.Orders.OrderService"
    assert ep.contract == "Contoso.Orders.IOrderService"
    assert ep.discovery == "public" and ep.display_name == "Order service"
    assert ep.client_auth == "relayAccessToken"
    assert ep.key_name == "orders-listen"
    assert ep.namespace_host == "contoso.servicebus.windows.net"
    assert ep.security_mode == "Transport" and plan.tls_advised


def test_request_reply_size_over_the_legacy_limit_is_clipped_with_a_warning():
    plan = plan_migration(config("basic_http_public.config"))
    ep = by_name(plan, "orders")
    assert ep.max_message == link.DEFAULT_MAX_MESSAGE
    assert ep.status == "changed"
    assert any("2147483647" in c and "clipped" in c for c in ep.changes)
    assert any("clipped" in w for w in plan.warnings)


def test_client_endpoints_are_callers_with_the_send_key():
    plan = plan_migration(config("basic_http_public.config"))
    client = by_name(plan, "ordersClient")
    assert client.role == "client" and not client.hostable
    assert (client.layer, client.binding, client.key_name) == ("legacy", "basicHttp", "orders-send")
    assert client.status == "direct"
    assert any("SOAP 1.1 client" in a for a in client.actions)


# ------------------------------------------------------------------------------------------ ws2007Http, security


def test_ws2007_security_none_maps_and_message_security_needs_manual_action():
    plan = plan_migration(config("ws2007_security.config"))
    plain = by_name(plan, "plain")
    assert (plain.layer, plain.binding, plain.status) == ("legacy", "ws2007Http", "direct")
    assert plain.security_mode == "None"
    signed = by_name(plan, "signed")
    assert signed.status == "manual" and signed.layer is None and signed.binding is None
    assert not signed.hostable
    assert "Message" in signed.actions[0] and "NOT migrated" in signed.actions[0]
    credential = by_name(plan, "credential")
    assert credential.status == "manual" and "TransportWithMessageCredential" in credential.actions[0]
    # Only the migrated endpoint reaches the host.
    assert [e.name for e in endpoints_from_app_config(config("ws2007_security.config"))] == ["plain"]
    assert {e.name for e in endpoints_from_app_config(config("ws2007_security.config"), include_all=True)} == \
        {"plain", "signed", "credential"}


# ------------------------------------------------------------------------------------------ webHttp, defaults


def test_web_http_with_default_binding_behavior_and_base_address():
    plan = plan_migration(config("web_http_anonymous.config"))
    [ep] = plan.endpoints
    # The relative address resolves against the https base address (an HTTP binding), not the sb:// one.
    assert ep.path == "weather/forecast"
    assert (ep.layer, ep.binding) == ("legacy", "webHttp")
    # The nameless <binding> and nameless <behavior> apply.
    assert ep.client_auth == "none"
    assert ep.key_name == "rest-listen"
    assert ep.security_mode == "None" and not plan.tls_advised
    assert any("client_auth = \"none\"" in m for m in ep.maps)
    assert [r.name for r in plan.rules] == ["rest-listen"]


# ------------------------------------------------------------------------------------------ netOneway, netEvent


def test_oneway_over_64k_is_clipped_and_under_is_kept():
    plan = plan_migration(config("oneway_event.config"))
    ingest = by_name(plan, "ingest")
    assert (ingest.layer, ingest.binding) == ("legacy", "netOneway")
    assert ingest.max_message == 65536 == link.ONEWAY_MAX_MESSAGE
    assert any("1048576" in c and "64 KB" in c and "clipped" in c for c in ingest.changes)
    assert any("ingest" in w and "clipped" in w for w in plan.warnings)
    audit = by_name(plan, "audit")
    assert audit.max_message == 32768
    assert not any("clipped" in c for c in audit.changes)


def test_net_event_stays_on_the_legacy_layer():
    plan = plan_migration(config("oneway_event.config"))
    alerts = by_name(plan, "alerts", "service")
    assert (alerts.layer, alerts.binding, alerts.client_auth) == ("legacy", "netEvent", "none")
    assert any("no Hybrid Connections counterpart" in c for c in alerts.changes)
    publisher = by_name(plan, "publisher")
    assert publisher.role == "client" and publisher.layer == "legacy"
    assert any("cannot reach the gateway" in a for a in publisher.actions)
    # Everything else is legacy too: no hybrid connection to declare.
    assert plan.hybrid_connections == []


def test_connection_string_gives_listen_to_hosts_and_send_to_callers():
    plan = plan_migration(config("oneway_event.config"))
    [rule] = plan.rules
    assert rule.name == "RootManageSharedAccessKey"
    assert rule.rights_list == ["Listen", "Send"]
    assert by_name(plan, "ingest").key_name == "RootManageSharedAccessKey"
    assert "telemetry.servicebus.windows.net" in plan.namespaces
    assert any("point clients at your gateway instead of `telemetry.servicebus.windows.net`" in a
               for a in plan.actions)
    assert any("Manage" in n for n in plan.notes)


# ------------------------------------------------------------------------------------------ netTcp


def test_net_tcp_moves_to_hybrid_connections():
    plan = plan_migration(config("nettcp.config"))
    chat = by_name(plan, "chat", "service")
    assert (chat.layer, chat.binding, chat.path) == ("hybrid", HYBRID_BINDING, "chat")
    assert chat.status == "changed" and chat.connection_mode == "Hybrid"
    assert any("Hybrid Connections" in c and "binary" in c for c in chat.changes)
    assert any('connectionMode="Hybrid"' in c and "stays relayed" in c for c in chat.changes)
    # Public discovery has no hybrid counterpart: the endpoint stays private, and the report says so.
    assert chat.discovery == "private"
    assert any("discoveryMode" in c and "not listed" in c for c in chat.changes)


def test_net_tcp_relayed_and_anonymous():
    plan = plan_migration(config("nettcp.config"))
    lobby = by_name(plan, "lobby")
    assert lobby.layer == "hybrid" and lobby.connection_mode == "Relayed"
    assert not any("connectionMode=\"Hybrid\"" in c for c in lobby.changes)
    assert lobby.client_auth == "none" and lobby.max_message == 10485760
    hcs = {hc.name: hc for hc in plan.hybrid_connections}
    assert set(hcs) == {"chat", "lobby", "orders/tcp"}
    assert hcs["lobby"].requires_client_authorization is False
    assert hcs["chat"].requires_client_authorization is True
    assert any("chatClient" in u for u in hcs["chat"].used_by)


def test_net_tcp_client_must_be_replaced():
    plan = plan_migration(config("nettcp.config"))
    client = by_name(plan, "chatClient")
    assert client.role == "client" and client.layer == "hybrid"
    assert client.key_name == "callers"  # no token provider: the connection string's key
    assert any("HybridConnectionClient" in a and "cannot talk to it" in a for a in client.actions)


def test_rules_rights_from_use_in_the_net_tcp_config():
    plan = plan_migration(config("nettcp.config"))
    rights = {r.name: r.rights_list for r in plan.rules}
    assert rights == {"tcp-listen": ["Listen"], "callers": ["Send"]}


def test_hybrid_connection_nested_under_a_legacy_path_is_warned_about():
    plan = plan_migration(config("nettcp.config"))
    nested = by_name(plan, "nested")
    assert nested.layer == "hybrid" and nested.path == "orders/tcp"
    assert any("nested under legacy endpoint `orders`" in w for w in plan.warnings)
    assert any("nested under legacy endpoint" in c for c in nested.changes)


# ------------------------------------------------------------------------------------------ web.config, ACS, keys


def test_web_config_with_location_config_source_and_connection_strings():
    plan = plan_migration(config("web.config"))
    [ep] = plan.endpoints
    assert (ep.path, ep.binding, ep.layer) == ("directory", "basicHttp", "legacy")
    # From relay-bindings.config: the smaller of maxReceivedMessageSize and maxBufferSize.
    assert ep.max_message == 262144
    assert any("differ" in c for c in ep.changes)
    assert ep.key_name == "site-listen"
    [rule] = plan.rules
    assert (rule.name, rule.rights_list) == ("site-listen", ["Listen"])
    assert "RelayNamespace" in rule.origins[0]


def test_acs_credentials_are_reported_as_unsupported_and_not_carried_over():
    plan = plan_migration(config("acs_legacy.config"))
    assert plan.rules == []
    echo = by_name(plan, "echo")
    assert echo.layer == "legacy" and echo.key_name is None
    assert any("Access Control Service" in a and "owner" in a and "not supported" in a for a in echo.actions)
    client = by_name(plan, "echoClient")
    assert any("legacy-issuer" in a for a in client.actions)
    assert any("ACS" in a for a in plan.actions)
    assert any("development root key" in n for n in plan.notes)


def test_one_key_name_with_two_keys_becomes_primary_and_secondary():
    plan = plan_migration(config("two_keys.config"))
    [rule] = plan.rules
    assert rule.name == "app" and rule.rights_list == ["Listen", "Send"]
    assert rule.primary_key.startswith("YXBwLXByaW1hcnk") and rule.secondary_key.startswith("YXBwLXNlY29uZGFyeS")
    assert any("secondary_key" in w for w in plan.warnings)


def test_non_relay_endpoints_are_left_alone():
    plan = plan_migration(SAMPLE)
    mex = [e for e in plan.endpoints if e.wcf_binding == "mexHttpBinding"]
    assert len(mex) == 1 and mex[0].status == "skipped" and mex[0].layer is None


# ------------------------------------------------------------------------------------------ the sample


def test_sample_calculator_endpoints():
    hosted = endpoints_from_app_config(SAMPLE)
    assert [(e.path, e.layer, e.binding) for e in hosted] == [
        ("calculator", "legacy", "basicHttp"),
        ("calculator/ws", "legacy", "ws2007Http"),
        ("calculator/log", "legacy", "netOneway"),
        ("calculator/events", "legacy", "netEvent"),
        ("calculator-tcp", "hybrid", HYBRID_BINDING),
    ]
    assert all(e.service == "Samples.Calculator.CalculatorService" for e in hosted)


def test_endpoint_plans_give_a_host_its_registration():
    basic, _ws, log, events, tcp = endpoints_from_app_config(SAMPLE)
    reg = basic.registration()
    assert reg == link.Registration(link.Binding.BASIC_HTTP, link.ClientAuth.RELAY_ACCESS_TOKEN,
                                    link.Discovery.PUBLIC, "Calculator (BasicHttp)", 1048576)
    # The registration survives the link's own query round trip (what the gateway will accept).
    assert link.Registration.from_query(reg.to_query()) == reg
    assert link.Registration.from_query(log.registration().to_query()).max_message == 65536
    assert events.registration().client_auth is link.ClientAuth.NONE
    with pytest.raises(ValueError):
        tcp.registration()


def test_endpoint_plans_build_relay_bindings_for_the_host():
    bindings = pytest.importorskip("wcfrelay.bindings")
    basic, ws, _log, events, tcp = endpoints_from_app_config(SAMPLE)
    assert isinstance(basic.relay_binding(), bindings.BasicHttpRelayBinding)
    assert basic.relay_binding().max_message == 1048576
    assert isinstance(ws.relay_binding(), bindings.WS2007HttpRelayBinding)
    assert isinstance(events.relay_binding(), bindings.NetEventRelayBinding)
    assert events.relay_binding().client_auth is link.ClientAuth.NONE
    registry = basic.registry_settings()
    assert (registry.discovery, registry.display_name) == ("public", "Calculator (BasicHttp)")
    assert basic.relay_binding().registration("calculator", registry) == basic.registration()
    with pytest.raises(ValueError):
        tcp.relay_binding()
