"""Unit tests of the pure parts of the relay host and callers: bindings, registration, backoff, status, handshake
refusals, addresses, call handling on the real Calculator, one-way prechecks, tokens and token carriers."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import requests
from lxml import etree

from hybrid.auth import build_token
from hybrid.client.tokens import SharedAccessKeyTokenProvider, SharedAccessSignatureTokenProvider, TokenProvider
from hybrid.errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequest,
    ConfigError,
    EndpointNotFound,
    RelayError,
)
from samples.calculator import service as calculator
from wcfrelay import link, soap
from wcfrelay.bindings import (
    BasicHttpRelayBinding,
    NetEventRelayBinding,
    NetOnewayRelayBinding,
    RelayBinding,
    ServiceRegistrySettings,
    WebHttpRelayBinding,
    WS2007HttpRelayBinding,
    binding_for,
    link_message_limit,
)
from wcfrelay.client import (
    AiohttpTransport,
    RelayToken,
    RelayTokenAuth,
    add_relay_token_header,
    audience_for,
    relay_zeep_client,
)
from wcfrelay.service.host import (
    AddressAlreadyInUse,
    Backoff,
    ConnectionStatus,
    RelayServiceHost,
    aggregate_status,
    bound_reply,
    is_permanent,
    link_refusal,
    link_url,
    precheck_one_way,
    run_call,
    split_address,
)
from wcfrelay.service.spyne_app import SoapResult, SpyneBytesApp

TNS = "http://tempuri.org/"
S11, S12 = soap.SOAP11_ENV_NS, soap.SOAP12_ENV_NS
CS = "Endpoint=sb://gw.example:9351/;SharedAccessKeyName=root;SharedAccessKey=c2VjcmV0"
PUBLIC = "https://gw.example/calc"


def env(ns: str, body: str, header: str = "") -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return f'<s:Envelope xmlns:s="{ns}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode()


def call(method: str = "POST", *, path: str = "", query: str = "", headers: dict | None = None,
         one_way: bool = False) -> link.Call:
    return link.Call("c1", method, path, query, headers or {}, PUBLIC, one_way)


@pytest.fixture(scope="module")
def app11() -> SpyneBytesApp:
    return SpyneBytesApp(calculator.make_application("soap11"))


@pytest.fixture(scope="module")
def app12() -> SpyneBytesApp:
    return SpyneBytesApp(calculator.make_application("soap12"))


@pytest.fixture(scope="module")
def app_http() -> SpyneBytesApp:
    return SpyneBytesApp(calculator.make_application("http"))


# ------------------------------------------------------------------------------------------------- bindings


@pytest.mark.parametrize(
    ("binding", "link_binding", "protocol", "one_way", "limit"),
    [
        (BasicHttpRelayBinding(), link.Binding.BASIC_HTTP, "soap11", False, link.DEFAULT_MAX_MESSAGE),
        (WS2007HttpRelayBinding(), link.Binding.WS2007_HTTP, "soap12", False, link.DEFAULT_MAX_MESSAGE),
        (WebHttpRelayBinding(), link.Binding.WEB_HTTP, "http", False, link.DEFAULT_MAX_MESSAGE),
        (NetOnewayRelayBinding(), link.Binding.NET_ONEWAY, "soap12", True, link.ONEWAY_MAX_MESSAGE),
        (NetEventRelayBinding(), link.Binding.NET_EVENT, "soap12", True, link.ONEWAY_MAX_MESSAGE),
    ],
)
def test_binding_maps_to_link_and_protocol(binding: RelayBinding, link_binding, protocol, one_way, limit) -> None:
    assert binding.link_binding is link_binding
    assert binding.protocol == protocol
    assert binding.one_way is one_way
    assert binding.multicast is (link_binding is link.Binding.NET_EVENT)
    assert binding.max_message == limit
    assert binding.ws_addressing is (link_binding is link.Binding.WS2007_HTTP)
    registration = binding.registration("a/b")
    assert registration == link.Registration(link_binding, link.ClientAuth.RELAY_ACCESS_TOKEN,
                                             link.Discovery.PRIVATE, "b", limit)
    # what the host sends is what the gateway parses
    assert link.Registration.from_query(registration.to_query()) == registration


def test_binding_options_reach_the_registration() -> None:
    binding = BasicHttpRelayBinding(client_authentication="None", max_received_message_size=2 << 20)
    registration = binding.registration("calc", ServiceRegistrySettings("public", "Calculator"))
    assert registration.client_auth is link.ClientAuth.NONE
    assert registration.max_message == 2 << 20
    assert registration.discovery is link.Discovery.PUBLIC
    assert registration.display_name == "Calculator"
    assert link.Registration.from_query(registration.to_query()) == registration
    assert BasicHttpRelayBinding(client_authentication=link.ClientAuth.NONE).client_auth is link.ClientAuth.NONE
    assert BasicHttpRelayBinding(client_authentication="RelayAccessToken").client_auth is \
        link.ClientAuth.RELAY_ACCESS_TOKEN


@pytest.mark.parametrize(
    "make",
    [
        lambda: NetOnewayRelayBinding(max_received_message_size=64 * 1024 + 1),
        lambda: BasicHttpRelayBinding(max_received_message_size=0),
        lambda: BasicHttpRelayBinding(max_received_message_size=link.DEFAULT_MAX_MESSAGE + 1),
        lambda: BasicHttpRelayBinding(max_received_message_size=True),
        lambda: BasicHttpRelayBinding(client_authentication="Windows"),
        lambda: WS2007HttpRelayBinding(security_mode="Message"),
        lambda: WS2007HttpRelayBinding(security_mode="Transport"),
        lambda: ServiceRegistrySettings("everyone"),
        lambda: ServiceRegistrySettings("public", "bad\nname"),
        lambda: ServiceRegistrySettings("public", "x" * 257),
        lambda: binding_for("netTcp"),
    ],
)
def test_binding_option_errors(make) -> None:
    with pytest.raises(ConfigError):
        make()


def test_relay_binding_is_abstract_and_protocols_are_checked() -> None:
    with pytest.raises(TypeError):
        RelayBinding()
    with pytest.raises(ConfigError, match="protocol='soap12'"):
        WS2007HttpRelayBinding().check_protocol("soap11")
    BasicHttpRelayBinding().check_protocol("soap11")


def test_binding_for_names() -> None:
    assert isinstance(binding_for("basicHttp"), BasicHttpRelayBinding)
    assert isinstance(binding_for("NetEventRelayBinding"), NetEventRelayBinding)
    assert isinstance(binding_for(link.Binding.WEB_HTTP), WebHttpRelayBinding)
    assert binding_for("ws2007http", client_authentication="none").client_auth is link.ClientAuth.NONE


def test_service_registry_settings() -> None:
    assert ServiceRegistrySettings().discovery == "private"
    assert ServiceRegistrySettings(link.Discovery.PUBLIC).discovery == "public"
    assert ServiceRegistrySettings("PUBLIC").discovery == "public"
    assert ServiceRegistrySettings().display_name_for("a/b/calc") == "calc"
    assert ServiceRegistrySettings("public", None).display_name_for("a/b") == "b"
    assert ServiceRegistrySettings(display_name="Calc").display_name_for("a/b") == "Calc"


def test_link_message_limit_leaves_room_for_the_header() -> None:
    assert link_message_limit(100) == 100 + link.MAX_HEADER + 4


# ------------------------------------------------------------------------------------------------- backoff, status


def test_backoff_doubles_from_one_to_sixty_seconds() -> None:
    backoff = Backoff()
    assert [backoff.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.attempt == 9
    backoff.reset()
    assert backoff.next_delay() == 1
    fast = Backoff(0.05, 0.2)
    assert [fast.next_delay() for _ in range(4)] == [0.05, 0.1, 0.2, 0.2]
    for bad in ((-1, 1), (2, 1)):
        with pytest.raises(ConfigError):
            Backoff(*bad)


def test_aggregate_status() -> None:
    on, conn, off = ConnectionStatus.ONLINE, ConnectionStatus.CONNECTING, ConnectionStatus.OFFLINE
    assert aggregate_status([]) is off
    assert aggregate_status([on, on]) is on
    assert aggregate_status([on, conn]) is conn
    assert aggregate_status([off, conn]) is conn
    assert aggregate_status([on, off]) is off
    assert [s.value for s in (on, conn, off)] == ["Online", "Connecting", "Offline"]


@pytest.mark.parametrize(
    ("status", "cls", "permanent"),
    [
        (400, BadRequest, True),
        (401, AuthenticationError, True),
        (403, AuthorizationError, True),
        (404, EndpointNotFound, True),
        (409, AddressAlreadyInUse, True),
        (429, RelayError, False),
        (500, RelayError, False),
        (502, RelayError, False),
        (503, RelayError, False),
    ],
)
def test_link_refusals(status: int, cls: type, permanent: bool) -> None:
    error = link_refusal(status, "Reason", b'{"error": {"message": "why"}}')
    assert type(error) is cls
    assert error.http_status == status
    assert is_permanent(error) is permanent
    assert str(status) in str(error) and "why" in str(error)


def test_other_errors_are_not_permanent() -> None:
    assert not is_permanent(None)
    assert not is_permanent(AuthenticationError("not from a handshake"))
    assert not is_permanent(OSError("refused"))


# ------------------------------------------------------------------------------------------------- addresses


def test_split_address() -> None:
    assert split_address("sb://gw:9351/a/b") == ("gw:9351", "a/b", True)
    assert split_address("ws://gw:1/a/") == ("gw:1", "a", False)
    assert split_address("https://user@gw/a") == ("gw", "a", True)
    assert split_address("calc/ws", "sb://gw:9351/") == ("gw:9351", "calc/ws", True)
    assert split_address("/calc", "http://gw:80/prefix/") == ("gw:80", "prefix/calc", False)
    for bad, base in (("calc", None), ("sb://gw/", None), ("ftp://gw/a", None), ("sb://gw/a?x=1", None),
                      ("$wcf/a", "sb://gw/"), ("sb://gw:port/a", None)):
        with pytest.raises(ConfigError):
            split_address(bad, base)


def test_link_url() -> None:
    registration = NetEventRelayBinding().registration("a b/c", ServiceRegistrySettings("public", "Events"))
    url = link_url("gw:9351", "a b/c", registration, tls=True)
    assert url.startswith("wss://gw:9351/$wcf/a%20b/c?")
    assert link.Registration.from_query(url.split("?", 1)[1]) == registration
    assert link_url("gw", "x", registration, tls=False).startswith("ws://gw/$wcf/x?")


# ------------------------------------------------------------------------------------------------- calls


def test_run_call_soap11(app11: SpyneBytesApp) -> None:
    result = run_call(app11, call(headers={"content-type": "text/xml; charset=utf-8", "SOAPAction": '"Add"'}),
                      env(S11, f'<Add xmlns="{TNS}"><a>2</a><b>3</b></Add>'))
    assert result.status == 200 and result.content_type.startswith("text/xml")
    assert etree.fromstring(result.body).findtext(f".//{{{TNS}}}AddResult") == "5"


def test_run_call_wsdl_uses_the_public_url(app11: SpyneBytesApp) -> None:
    result = run_call(app11, call("GET", query="wsdl"), b"")
    assert result.status == 200
    root = etree.fromstring(result.body)
    assert [a.get("location") for a in root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")] == [PUBLIC]


def test_run_call_errors_outside_spyne_are_faults(app11: SpyneBytesApp, app_http: SpyneBytesApp) -> None:
    bad_url = link.Call("c1", "GET", "", "wsdl", {}, "not a url", False)
    result = run_call(app11, bad_url, b"")
    assert result.status == 400
    assert etree.fromstring(result.body).find(f".//{{{S11}}}Fault") is not None
    result = run_call(app_http, call("GET", query="wsdl"), b"")
    assert result.status == 404
    assert json.loads(result.body)["faultcode"].startswith("Client.")


@pytest.mark.parametrize("path", ["/Add", "Add"])
def test_run_call_web_http_path(app_http: SpyneBytesApp, path: str) -> None:
    result = run_call(app_http, call("GET", path=path, query="a=40&b=2"), b"")
    assert (result.status, json.loads(result.body)) == (200, 42)


def test_run_call_one_way_operation_is_202(app11: SpyneBytesApp) -> None:
    calculator.clear_received()
    result = run_call(app11, call(), env(S11, f'<Log xmlns="{TNS}"><message>m</message></Log>'))
    assert (result.status, result.body, result.one_way) == (202, b"", True)
    assert ("Log", "m") in calculator.received


def test_precheck_one_way(app12: SpyneBytesApp) -> None:
    log_msg = f'<Log xmlns="{TNS}"><message>m</message></Log>'
    assert precheck_one_way(app12, call(one_way=True), env(S12, log_msg)) is None
    assert precheck_one_way(app12, call("GET", one_way=True), b"") is None

    def fault_of(body: bytes) -> str:
        result = precheck_one_way(app12, call(one_way=True), body)
        assert result is not None and result.status in (400, 500)
        root = etree.fromstring(result.body)
        ns = etree.QName(root).namespace
        fault = root.find(f"{{{ns}}}Body/{{{ns}}}Fault")
        return fault.findtext("faultcode") or (
            fault.findtext(f"{{{ns}}}Code/{{{ns}}}Value") + "/" + (fault.findtext(f"{{{ns}}}Code/{{{ns}}}Subcode/"
                                                                                   f"{{{ns}}}Value") or ""))

    assert fault_of(env(S11, log_msg)).endswith("VersionMismatch")  # in the sender's (1.1) envelope
    assert fault_of(b"not xml").endswith("InvalidEnvelope")
    assert fault_of(env(S12, f'<Nope xmlns="{TNS}"/>')).endswith("OperationNotFound")
    assert fault_of(env(S12, "")).endswith("EmptyBody")
    must = '<x:Secret xmlns:x="urn:x" s:mustUnderstand="true">1</x:Secret>'
    assert "MustUnderstand" in fault_of(env(S12, log_msg, must))
    assert fault_of(b'<!DOCTYPE x [<!ENTITY a "b">]>' + env(S12, log_msg)).endswith("InvalidEnvelope")


def test_bound_reply(app11: SpyneBytesApp) -> None:
    small = SoapResult(200, "text/xml", b"x" * 10)
    assert bound_reply(app11, small, 10) is small
    big = bound_reply(app11, SoapResult(200, "text/xml", b"x" * 11), 10)
    assert big.status == 500
    assert "PayloadTooLarge" in big.body.decode() and "max_received_message_size" in big.body.decode()


# ------------------------------------------------------------------------------------------------- host configuration


def test_host_needs_a_listen_credential() -> None:
    with pytest.raises(ConfigError):
        RelayServiceHost()
    with pytest.raises(ConfigError):
        RelayServiceHost("Endpoint=sb://gw/")
    with pytest.raises(ConfigError):
        RelayServiceHost(CS, renew_fraction=1.5)
    with pytest.raises(ConfigError):
        RelayServiceHost(CS, max_workers=0)
    with pytest.raises(ConfigError):
        RelayServiceHost(CS, backoff_initial=10, backoff_max=1)
    token = build_token("http://gw/calc", "root", "c2VjcmV0", int(time.time()) + 60)
    host = RelayServiceHost(token_provider=token, endpoint="sb://gw/")
    assert isinstance(host.token_provider, SharedAccessSignatureTokenProvider)
    assert isinstance(RelayServiceHost(CS).token_provider, SharedAccessKeyTokenProvider)


def test_add_endpoint(caplog) -> None:
    host = RelayServiceHost(CS + ";EntityPath=default/calc", tls=False)
    basic = host.add_endpoint(calculator.make_application("soap11"))
    assert (basic.path, basic.authority, basic.tls) == ("default/calc", "gw.example:9351", False)
    assert basic.address == "sb://gw.example:9351/default/calc"
    assert basic.audience == "http://gw.example:9351/default/calc"
    assert basic.http_url == "http://gw.example:9351/default/calc"
    assert basic.url.startswith("ws://gw.example:9351/$wcf/default/calc?binding=basicHttp&")
    assert basic.app.max_request_size == link.DEFAULT_MAX_MESSAGE
    assert basic.status is ConnectionStatus.OFFLINE and basic.last_error is None

    ws = host.add_endpoint(calculator.make_application("soap12"), "sb://other:1/calc/ws", WS2007HttpRelayBinding(),
                           ServiceRegistrySettings("public", "WS"))
    assert (ws.authority, ws.path, ws.registration.display_name) == ("other:1", "calc/ws", "WS")
    assert ws.app.ws_addressing

    ready = SpyneBytesApp(calculator.make_application("http"))
    assert host.add_endpoint(ready, "calc/web", WebHttpRelayBinding()).app is ready

    with caplog.at_level(logging.WARNING, logger="wcfrelay.host"):
        oneway = host.add_endpoint(calculator.make_application("soap12"), "calc/log", NetOnewayRelayBinding())
    assert oneway.app.max_request_size == link.ONEWAY_MAX_MESSAGE
    assert "{http://tempuri.org/}Add" in caplog.text and "Log" not in caplog.text.split("operations")[1]

    with pytest.raises(ConfigError, match="protocol='soap11'"):
        host.add_endpoint(calculator.make_application("soap12"), "calc/x", BasicHttpRelayBinding())
    with pytest.raises(ConfigError, match="already"):
        host.add_endpoint(calculator.make_application("soap11"), "Default/Calc")
    with pytest.raises(TypeError):
        host.add_endpoint(object(), "calc/y")
    with pytest.raises(TypeError):
        host.add_endpoint(calculator.make_application("soap11"), "calc/z", "basicHttp")
    assert [e.path for e in host.endpoints] == ["default/calc", "calc/ws", "calc/web", "calc/log"]


def test_tls_follows_the_scheme_unless_told() -> None:
    host = RelayServiceHost(CS)
    assert host.add_endpoint(calculator.make_application("soap11"), "a").url.startswith("wss://")
    assert host.add_endpoint(calculator.make_application("soap11"), "ws://gw:1/b").url.startswith("ws://")


def test_bare_path_needs_an_endpoint() -> None:
    token = build_token("http://gw/calc", "root", "c2VjcmV0", int(time.time()) + 60)
    host = RelayServiceHost(token_provider=token)
    with pytest.raises(ConfigError, match="bare path"):
        host.add_endpoint(calculator.make_application("soap11"), "calc")
    with pytest.raises(ConfigError, match="address"):
        host.add_endpoint(calculator.make_application("soap11"))


async def test_open_without_endpoints_is_refused() -> None:
    with pytest.raises(ConfigError):
        await RelayServiceHost(CS).open()


# ------------------------------------------------------------------------------------------------- tokens


class CountingProvider(TokenProvider):
    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.audiences: list[str] = []

    async def get_token(self, audience: str, ttl: float) -> tuple[str, float]:
        self.audiences.append(audience)
        await asyncio.sleep(0)  # a real await: the provider cannot be stepped synchronously
        expiry = int(time.time() + self.lifetime)
        return build_token(audience, "root", "c2VjcmV0", expiry), float(expiry)


def test_relay_token_caches_until_renewal_is_due() -> None:
    provider = CountingProvider(3600)
    token = RelayToken(provider, "http://gw/calc")
    first = token.get()
    assert first.startswith("SharedAccessSignature sr=http%3A%2F%2Fgw%2Fcalc&")
    assert token.get() == first and token.fetches == 1
    expired = RelayToken(CountingProvider(-10), "http://gw/calc")
    expired.get()
    expired.get()
    assert expired.fetches == 2  # already past its renewal point: asked again


async def test_relay_token_from_coroutines_and_inside_a_running_loop() -> None:
    provider = CountingProvider(3600)
    token = RelayToken(provider, "http://gw/calc")
    value = await token.aget()
    assert value and await token.aget() == value and token.fetches == 1
    # the sync path, called while this loop runs (a zeep plugin under AsyncClient), still works
    other = RelayToken(CountingProvider(3600), "http://gw/x")
    assert other.get().startswith("SharedAccessSignature")


def test_relay_token_sources() -> None:
    ready = build_token("http://gw/calc", "root", "c2VjcmV0", int(time.time()) + 60)
    assert RelayToken(ready, "http://gw/calc").get() == ready
    assert RelayToken(lambda audience, ttl: "tok-" + audience, "http://gw/a").get() == "tok-http://gw/a"
    assert RelayToken(lambda audience, ttl: ("t", time.time() + 60), "a").get() == "t"
    assert RelayToken(None, "a").get() is None
    with pytest.raises(TypeError):
        RelayToken(lambda audience, ttl: 42, "a").get()
    with pytest.raises(ConfigError):
        RelayToken(None, "a", renew_fraction=0)
    from_cs = RelayToken.from_credentials("http://gw/calc", connection_string=CS)
    assert isinstance(from_cs.provider, SharedAccessKeyTokenProvider)
    assert RelayToken.from_credentials("http://gw/calc").provider is None
    with pytest.raises(ConfigError):
        RelayToken.from_credentials("a", connection_string=CS, token_provider=ready)


def test_audience_for() -> None:
    assert audience_for("http://gw:9351/calc?wsdl") == "http://gw:9351/calc"
    assert audience_for("https://u:p@gw/calc/ws/?singleWsdl") == "http://gw/calc/ws"
    assert audience_for("http://gw/calc/service.wsdl") == "http://gw/calc"
    assert audience_for("http://gw/a%20b") == "http://gw/a%20b"
    with pytest.raises(ConfigError):
        audience_for("calc")


def test_relay_token_auth_hook() -> None:
    token = RelayToken(build_token("http://gw/a", "root", "c2VjcmV0", int(time.time()) + 60), "http://gw/a")
    get = requests.Request("GET", "http://gw/a?wsdl", auth=RelayTokenAuth(token)).prepare()
    assert get.headers["ServiceBusAuthorization"] == token.get()
    post = requests.Request("POST", "http://gw/a", auth=RelayTokenAuth(token, "Authorization")).prepare()
    assert post.headers["Authorization"] == token.get()
    skipped = requests.Request("POST", "http://gw/a", auth=RelayTokenAuth(token, post=False)).prepare()
    assert "ServiceBusAuthorization" not in skipped.headers


@pytest.mark.parametrize("ns", [S11, S12])
def test_add_relay_token_header_round_trips(ns: str) -> None:
    root = etree.fromstring(env(ns, f'<Add xmlns="{TNS}"/>'))
    add_relay_token_header(root, "first")
    add_relay_token_header(root, "SharedAccessSignature sr=x")
    assert len(root.findall(f".//{soap.RELAY_ACCESS_TOKEN}")) == 1
    token, stripped = soap.extract_relay_token(etree.tostring(root))
    assert token == "SharedAccessSignature sr=x"
    assert b"RelayAccessToken" not in stripped
    with pytest.raises(ValueError):
        add_relay_token_header(etree.fromstring(b"<x/>"), "t")


def test_client_option_errors_come_before_any_network() -> None:
    with pytest.raises(ConfigError):
        relay_zeep_client("http://127.0.0.1:9/calc?wsdl", token_carrier="cookie")
    with pytest.raises(ConfigError):
        relay_zeep_client("http://127.0.0.1:9/calc?wsdl", transport=object())


def test_aiohttp_transport_response_is_what_zeep_reads() -> None:
    response = AiohttpTransport._response(500, {"content-type": "text/xml"}, b"<x/>", "http://gw/a", "utf-8")
    assert response.status_code == 500 and response.headers["Content-Type"] == "text/xml"
    assert response.content == b"<x/>" and response.encoding == "utf-8"
    transport = AiohttpTransport()
    assert transport.new_response(response) is response
    assert transport.wsdl_session.auth is None
