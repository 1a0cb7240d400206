"""The WCF-style relay layer across three nodes: request/reply for every pairing of caller node and host node,
multicast reaching hosts on different nodes, and the discovery feed listing every node's public endpoints."""

from __future__ import annotations

import threading

import pytest
import requests
from lxml import etree

from tests.support.gateway_process import TIMEOUT_FACTOR
from tests.wcfrelay.test_e2e_multicast import notify, recording_service
from tests.wcfrelay.test_e2e_support import TNS, HostThread, wait_for
from wcfrelay.bindings import BasicHttpRelayBinding, NetEventRelayBinding, ServiceRegistrySettings
from wcfrelay.service.host import RelayServiceHost
from wcfrelay.service.spyne_app import build_application

PAIRS = [(c, h) for c in range(3) for h in range(3)]


def host_on(node, path, binding, name, sink, lock, protocol="soap11", registry=None):
    app = build_application([recording_service(name, sink, lock)], tns=TNS, name="EventSink", protocol=protocol)
    host = RelayServiceHost(node.connection_string(), tls=False)
    host.add_endpoint(app, path, binding, registry)
    return HostThread(host).start()


def twice(node, path, n):
    body = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            f'<Twice xmlns="{TNS}"><n>{n}</n></Twice></s:Body></s:Envelope>')
    return requests.post(f"{node.http_base}/{path}", data=body, timeout=15 * TIMEOUT_FACTOR,
                         headers={"Content-Type": "text/xml; charset=utf-8",
                                  "ServiceBusAuthorization": node.token(path)})


@pytest.mark.parametrize("caller,hosted", PAIRS)
def test_soap_request_reply_for_every_node_pairing(cluster, caller, hosted):
    path = f"calc-{caller}-{hosted}"
    thread = host_on(cluster.nodes[hosted], path, BasicHttpRelayBinding(), "h", [], threading.Lock())
    try:
        # The directory needs a moment to tell the other nodes; answers before that are a clean fault.
        wait_for(lambda: twice(cluster.nodes[caller], path, 1).status_code == 200, what="routable")
        for n in (2, 21, -7):
            response = twice(cluster.nodes[caller], path, n)
            assert response.status_code == 200
            assert f"<tns:TwiceResult>{2 * n}</tns:TwiceResult>" in response.text
        # The WSDL fetched through any node names the address the caller used, not the host's node.
        wsdl = requests.get(f"{cluster.nodes[caller].http_base}/{path}?wsdl", timeout=15 * TIMEOUT_FACTOR,
                            headers={"ServiceBusAuthorization": cluster.nodes[caller].token(path)})
        assert wsdl.status_code == 200 and f"{cluster.nodes[caller].http_base}/{path}" in wsdl.text
    finally:
        thread.stop()


def test_forged_node_forwarding_header_is_refused(cluster):
    thread = host_on(cluster.nodes[0], "guarded", BasicHttpRelayBinding(), "h", [], threading.Lock())
    try:
        wait_for(lambda: twice(cluster.nodes[0], "guarded", 1).status_code == 200, what="routable")
        body = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
                f'<Twice xmlns="{TNS}"><n>1</n></Twice></s:Body></s:Envelope>')
        response = requests.post(f"{cluster.nodes[0].http_base}/guarded", data=body, timeout=15,
                                 headers={"Content-Type": "text/xml", "X-Relay-Node-Authorization": "forged"})
        assert response.status_code == 403
        assert "Fault" in response.text
    finally:
        thread.stop()


def test_multicast_reaches_hosts_on_every_node(cluster):
    sinks = [[] for _ in range(3)]
    lock = threading.Lock()
    threads = [host_on(cluster.nodes[i], "events", NetEventRelayBinding(), f"h{i}", sinks[i], lock,
                       protocol="soap12") for i in range(3)]
    try:
        for sender in range(3):  # each node learns of the others on its own heartbeat
            node = cluster.nodes[sender]
            wait_for(lambda node=node: notify(node, "events", "probe").headers.get("X-Relay-Receivers") == "3",
                     what=f"all three hosts reachable from node {sender}")
        for sender in range(3):
            response = notify(cluster.nodes[sender], "events", f"from-{sender}")
            assert response.status_code == 202 and response.headers["X-Relay-Receivers"] == "3"
        wait_for(lambda: all({"from-0", "from-1", "from-2"} <= set(s) for s in sinks),
                 what="every host to get every event")
    finally:
        for thread in threads:
            thread.stop()


def test_discovery_feed_lists_public_endpoints_of_all_nodes(cluster):
    threads = [
        host_on(cluster.nodes[0], "pub/a", BasicHttpRelayBinding(), "a", [], threading.Lock(),
                registry=ServiceRegistrySettings(discovery="public", display_name="Alpha")),
        host_on(cluster.nodes[1], "pub/b", BasicHttpRelayBinding(), "b", [], threading.Lock(),
                registry=ServiceRegistrySettings(discovery="public", display_name="Beta")),
        host_on(cluster.nodes[2], "hidden", BasicHttpRelayBinding(), "c", [], threading.Lock()),
    ]
    atom = "{http://www.w3.org/2005/Atom}"

    def titles():
        feed = etree.fromstring(requests.get(f"{cluster.nodes[2].http_base}/", timeout=15).content)
        return sorted(e.findtext(f"{atom}title") for e in feed.iter(f"{atom}entry"))

    try:
        wait_for(lambda: titles() == ["Alpha", "Beta"], what="both public endpoints in node 2's feed")
    finally:
        for thread in threads:
            thread.stop()


def test_one_way_call_reaches_a_host_on_another_node(cluster):
    from wcfrelay.bindings import NetOnewayRelayBinding
    sink: list[str] = []
    thread = host_on(cluster.nodes[2], "oneway", NetOnewayRelayBinding(), "h", sink, threading.Lock(),
                     protocol="soap12")
    try:
        wait_for(lambda: notify(cluster.nodes[0], "oneway", "probe").status_code == 202, what="routable")
        response = notify(cluster.nodes[0], "oneway", "across")
        assert response.status_code == 202
        wait_for(lambda: "across" in sink, what="the host to receive the message")
    finally:
        thread.stop()


def test_host_limit_holds_across_the_cluster(cluster):
    import websockets.sync.client as wsc

    from wcfrelay import link as lk
    query = lk.Registration(lk.Binding.BASIC_HTTP).to_query()
    links = []
    try:
        for i in range(25):
            node = cluster.nodes[i % 3]
            links.append(wsc.connect(f"{node.ws_base}/$wcf/crowded?{query}",
                                     additional_headers={"ServiceBusAuthorization": node.token("crowded")}))
        for node in cluster.nodes:
            with pytest.raises(Exception) as info:
                wsc.connect(f"{node.ws_base}/$wcf/crowded?{query}",
                            additional_headers={"ServiceBusAuthorization": node.token("crowded")})
            assert "403" in str(info.value)
    finally:
        for ws in links:
            ws.close()
