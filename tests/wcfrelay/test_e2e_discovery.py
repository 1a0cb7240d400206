"""The discovery feed at ``GET /``: public endpoints listed with their display names, private ones absent but
callable; an endpoint leaves the feed with its last host."""

from __future__ import annotations

import requests
from lxml import etree

from samples.calculator import service as calculator
from tests.support.gateway_process import GatewayProcess
from tests.wcfrelay.test_e2e_support import HostThread
from wcfrelay.bindings import BasicHttpRelayBinding, ServiceRegistrySettings, WS2007HttpRelayBinding
from wcfrelay.client import relay_zeep_client
from wcfrelay.service.host import RelayServiceHost

ATOM = "http://www.w3.org/2005/Atom"


def feed(gw: GatewayProcess) -> dict[str, str]:
    """``{href: title}`` of the feed's entries; the feed must parse as Atom."""
    response = requests.get(f"{gw.http_base}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/atom+xml")
    root = etree.fromstring(response.content)
    assert root.tag == f"{{{ATOM}}}feed"
    assert root.findtext(f"{{{ATOM}}}title") and root.findtext(f"{{{ATOM}}}id") and root.findtext(f"{{{ATOM}}}updated")
    out = {}
    for entry in root.iterfind(f"{{{ATOM}}}entry"):
        link = entry.find(f"{{{ATOM}}}link")
        assert link is not None and entry.findtext(f"{{{ATOM}}}id")
        out[link.get("href")] = entry.findtext(f"{{{ATOM}}}title")
    return out


def test_feed_lists_exactly_the_public_endpoints(gateway: GatewayProcess) -> None:
    host = RelayServiceHost(gateway.connection_string(), tls=False)
    host.add_endpoint(calculator.make_application("soap11"), "pub/calc", BasicHttpRelayBinding(),
                      ServiceRegistrySettings("public", "Public Calculator"))
    host.add_endpoint(calculator.make_application("soap12"), "pub/ws", WS2007HttpRelayBinding(),
                      ServiceRegistrySettings("public"))  # default title: the last path segment
    host.add_endpoint(calculator.make_application("soap11"), "hidden/calc", BasicHttpRelayBinding(),
                      ServiceRegistrySettings("private", "Hidden"))
    host.add_endpoint(calculator.make_application("soap11"), "default/calc", BasicHttpRelayBinding())
    assert feed(gateway) == {}
    with HostThread(host):
        assert feed(gateway) == {
            f"{gateway.http_base}/pub/calc": "Public Calculator",
            f"{gateway.http_base}/pub/ws": "ws",
        }
        for path in ("hidden/calc", "default/calc"):
            client = relay_zeep_client(f"{gateway.http_base}/{path}?wsdl",
                                       connection_string=gateway.connection_string())
            assert client.service.Add(1, 2) == 3
    assert feed(gateway) == {}
