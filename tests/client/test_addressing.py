"""Addressing and URL building (spec §1.1, §1.2, §1.3, §3.3, §7)."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest

from hybrid.client.addressing import (
    RelayAddress,
    is_connection_string,
    new_tracking_id,
    reject_url,
    split_accept_address,
)
from hybrid.errors import ConfigError

CS = "Endpoint=sb://gw.example:8443/;SharedAccessKeyName=root;SharedAccessKey=abc=;EntityPath=myhc"


def test_sb_address_defaults_to_tls_and_keeps_the_port():
    address = RelayAddress.parse("sb://gw.example:8443/myhc")
    assert (address.host, address.port, address.entity, address.tls) == ("gw.example", 8443, "myhc", True)
    assert address.listen_url("id1") == "wss://gw.example:8443/$hc/myhc?sb-hc-action=listen&sb-hc-id=id1"


def test_no_port_means_the_scheme_default_as_on_azure():
    address = RelayAddress.parse("sb://contoso.servicebus.windows.net/hc")
    assert address.port is None
    assert address.connect_url("x").startswith("wss://contoso.servicebus.windows.net/$hc/hc?")
    assert address.http_url() == "https://contoso.servicebus.windows.net/hc"


@pytest.mark.parametrize(
    "kwargs, scheme",
    [({"tls": False}, "ws"), ({"scheme": "ws"}, "ws"), ({"scheme": "wss"}, "wss"), ({}, "wss")],
)
def test_plaintext_is_an_explicit_option(kwargs, scheme):
    address = RelayAddress.parse("sb://127.0.0.1:9000/hc", **kwargs)
    assert urlsplit(address.listen_url("i")).scheme == scheme
    assert urlsplit(address.http_url()).scheme == ("http" if scheme == "ws" else "https")


def test_ws_endpoint_implies_plaintext():
    assert RelayAddress.parse("ws://127.0.0.1:9000/hc").tls is False
    assert RelayAddress.parse("https://h/hc").tls is True


def test_contradicting_scheme_and_tls_is_a_config_error():
    with pytest.raises(ConfigError):
        RelayAddress.parse("sb://h/hc", scheme="ws", tls=True)


def test_connection_string_entity_path_and_override():
    address = RelayAddress.from_connection_string(CS)
    assert address.entity == "myhc" and address.port == 8443
    assert RelayAddress.from_connection_string(CS, entity_path="other").entity == "other"
    with pytest.raises(ConfigError):
        RelayAddress.from_connection_string("Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=b")


def test_address_without_entity_is_refused():
    with pytest.raises(ConfigError):
        RelayAddress.parse("sb://h:1/")
    with pytest.raises(ConfigError):
        RelayAddress.parse("ftp://h/hc")


def test_entity_names_may_contain_slashes():
    address = RelayAddress.parse("sb://h/", entity_path="a/b")
    assert address.entity == "a/b"
    assert address.connect_url("i", "/s").startswith("wss://h/$hc/a/b/s?")


def test_audience_is_http_host_port_entity():
    # §3.3: the gateway ignores scheme and port, Node keeps the port; no $hc and no query.
    assert RelayAddress.parse("sb://gw:8443/myhc").audience == "http://gw:8443/myhc"
    assert RelayAddress.parse("sb://gw/myhc").audience == "http://gw/myhc"


def test_connect_url_puts_app_query_first_then_action_and_id():
    url = RelayAddress.parse("sb://h:1/hc").connect_url("the-id", "any/suffix", "?app=1&b=%20x")
    parts = urlsplit(url)
    assert parts.path == "/$hc/hc/any/suffix"
    assert parts.query == "app=1&b=%20x&sb-hc-action=connect&sb-hc-id=the-id"


def test_suffix_is_percent_encoded_but_pre_encoded_text_survives():
    url = RelayAddress.parse("sb://h/hc").connect_url("i", "/a b/c%2Fd")
    assert urlsplit(url).path == "/$hc/hc/a%20b/c%2Fd"


def test_http_url_has_no_hc_prefix():
    assert RelayAddress.parse("sb://h:1/hc", tls=False).http_url("/x/y", "q=1") == "http://h:1/hc/x/y?q=1"


def test_ipv6_host_is_bracketed():
    address = RelayAddress.parse("sb://[::1]:9000/hc")
    assert address.authority == "[::1]:9000"
    assert address.listen_url("i").startswith("wss://[::1]:9000/$hc/hc?")


def test_tracking_ids_are_fresh_guids_in_d_format():
    a, b = new_tracking_id(), new_tracking_id()
    assert a != b and str(uuid.UUID(a)) == a


def test_connection_string_detection():
    assert is_connection_string(CS)
    assert is_connection_string("  endpoint=sb://h/")
    assert not is_connection_string("sb://h/hc")


def test_reject_url_appends_net_style_parameters():
    url = reject_url("ws://gw/$hc/hc?sb-hc-action=accept&sb-hc-id=1", 401, "No way & never")
    pairs = dict(parse_qsl(urlsplit(url).query))
    assert pairs["sb-hc-statusCode"] == "401"
    assert pairs["sb-hc-statusDescription"] == "No way & never"
    assert url.startswith("ws://gw/$hc/hc?sb-hc-action=accept&sb-hc-id=1&")


def test_accept_address_yields_path_suffix_and_filtered_query():
    # The example of spec §1.3.
    address = "wss://gw:8443/$hc/myhc/any/suffix?app=1&sb-hc-action=accept&sb-hc-id=abc&x"
    assert split_accept_address(address, "myhc") == ("/myhc/any/suffix", "/any/suffix", "app=1&x")
    assert split_accept_address("wss://gw/$hc/myhc?sb-hc-action=accept&sb-hc-id=1", "myhc") == ("/myhc", "", "")
    assert split_accept_address("wss://gw/$hc/MyHC/s?sb-hc-id=1", "myhc")[1] == "/s"
