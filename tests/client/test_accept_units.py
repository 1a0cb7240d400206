"""Accept decisions and the accept context (spec §2.2, §2.6, §1.3)."""

from __future__ import annotations

import pytest

from hybrid.client.listener import AcceptContext, normalise_decision
from hybrid.protocol.messages import Accept, RemoteEndpoint


def test_true_accepts_and_false_rejects_like_net():
    assert normalise_decision(True) is None
    assert normalise_decision(False) == (400, "Rejected by user code")
    assert normalise_decision(None) == (400, "Rejected by user code")


def test_status_and_description_pass_through():
    assert normalise_decision((401, "Status Description from test")) == (401, "Status Description from test")
    assert normalise_decision(503) == (503, "Rejected by user code")
    assert normalise_decision((403, "a\r\nb")) == (403, "a  b")


@pytest.mark.parametrize("bad", [(200, "ok"), 302, 600])
def test_rejection_status_must_be_an_error(bad):
    with pytest.raises(ValueError):
        normalise_decision(bad)


def test_odd_return_values_are_refused():
    with pytest.raises(TypeError):
        normalise_decision("yes")


def test_context_recovers_suffix_query_headers_and_first_subprotocol():
    accept = Accept(
        address="ws://gw:1/$hc/myhc/room/7?user=bob&sb-hc-action=accept&sb-hc-id=abc",
        id="abc",
        connect_headers={"Sec-WebSocket-Protocol": "chat, superchat", "X-App": "1"},
        remote_endpoint=RemoteEndpoint("10.0.0.1", 1234),
    )
    context = AcceptContext.from_accept(accept, "myhc")
    assert context.suffix == "/room/7"
    assert context.path == "/myhc/room/7"
    assert context.query == "user=bob"
    assert context.connect_headers["x-app"] == "1"
    assert context.offered_subprotocols == ["chat", "superchat"]
    assert context.subprotocol == "chat"
    assert context.remote_endpoint == RemoteEndpoint("10.0.0.1", 1234)


def test_context_without_subprotocols():
    context = AcceptContext.from_accept(Accept("ws://gw/$hc/hc?sb-hc-id=1", "1", {}), "hc")
    assert context.subprotocol is None and context.offered_subprotocols == []
