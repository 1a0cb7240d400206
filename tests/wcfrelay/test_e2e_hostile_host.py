"""A service host that answers with malformed link messages: the gateway closes that host's link, the waiting
caller gets a SOAP fault at once, and the gateway goes on serving everyone else. The host here is a raw WebSocket
client speaking the link protocol by hand (``wcfrelay/link.py``), so it can send what a real host never would."""

from __future__ import annotations

import concurrent.futures
import struct

import pytest
import requests
import websockets.sync.client as wsc
from websockets.exceptions import ConnectionClosed

from samples.calculator import service as calculator
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_support import CT11, HostThread, add_body, env11, module_gateway, soap_fault
from wcfrelay import link as lk
from wcfrelay.bindings import BasicHttpRelayBinding
from wcfrelay.service.host import RelayServiceHost

TIMEOUT = 10 * TIMEOUT_FACTOR


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> GatewayProcess:
    gateway = next(module_gateway(tmp_path_factory))
    host = RelayServiceHost(gateway.connection_string(), tls=False)
    host.add_endpoint(calculator.make_application("soap11"), "calc", BasicHttpRelayBinding())
    with HostThread(host):
        yield gateway
    gateway.stop()


def _prefixed(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("!I", len(header)) + header + body


def _reply_header(call_id: str) -> bytes:
    return f'{{"type":"reply","id":"{call_id}","status":200,"headers":{{}}}}'.encode()


# What the hostile host sends instead of a reply, given the call's id.
HOSTILE = {
    "header nested too deep": lambda cid: _prefixed(b"[" * 30_000 + b"]" * 30_000),
    "header not JSON": lambda cid: _prefixed(b"{reply"),
    "header longer than the message": lambda cid: struct.pack("!I", 5000) + _reply_header(cid),
    "header over the limit": lambda cid: struct.pack("!I", lk.MAX_HEADER + 1) + b"x" * (lk.MAX_HEADER + 1),
    "a text message": lambda cid: _reply_header(cid).decode(),
    "a reply with a status that is no HTTP status": lambda cid: _prefixed(
        f'{{"type":"reply","id":"{cid}","status":1000,"headers":{{}}}}'.encode()),
    "a reply with headers that are not strings": lambda cid: _prefixed(
        f'{{"type":"reply","id":"{cid}","status":200,"headers":{{"X":[1]}}}}'.encode()),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_malformed_reply_closes_the_link_and_faults_the_caller(gw: GatewayProcess, kind: str) -> None:
    path = "hostile-" + "".join(c if c.isalnum() else "-" for c in kind)
    query = lk.Registration(lk.Binding.BASIC_HTTP).to_query()
    link = wsc.connect(f"{gw.ws_base}/$wcf/{path}?{query}", open_timeout=TIMEOUT,
                       additional_headers={"ServiceBusAuthorization": gw.token(path)})
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(requests.post, f"{gw.http_base}/{path}", data=env11(add_body(1, 2)), timeout=TIMEOUT,
                                 headers={"Content-Type": CT11, "ServiceBusAuthorization": gw.token(path)})
            call, _ = lk.decode(link.recv(timeout=TIMEOUT))
            assert isinstance(call, lk.Call)
            link.send(HOSTILE[kind](call.id))
            response = answer.result(timeout=TIMEOUT)
        # The caller hears at once that its service is gone (not a timeout, not the garbage).
        assert response.status_code == 502, (response.status_code, response.text[:300])
        fault = soap_fault(response.content)
        assert fault["relay_code"] == "ListenerUnavailable" and "host disconnected" in (fault["reason"] or "")
        # The gateway closed the hostile link.
        with pytest.raises(ConnectionClosed):
            while True:
                link.recv(timeout=TIMEOUT)
    finally:
        link.close()
    # Everyone else is still served, and the gateway did not fail inside (no traceback in its log).
    ok = requests.post(f"{gw.http_base}/calc", data=env11(add_body(20, 22)), timeout=TIMEOUT,
                       headers={"Content-Type": CT11, "ServiceBusAuthorization": gw.token("calc")})
    assert ok.status_code == 200 and "42" in ok.text
    assert gw.alive()
    assert not [line for line in gw.output if "Traceback" in line], "\n".join(gw.output[-40:])
