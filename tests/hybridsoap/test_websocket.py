"""SOAP on a hybrid WebSocket, against a probe service: calls run concurrently (one blocked call does not hold up the
others), per-socket concurrency is bounded, callbacks reach the caller while its call is still running (to a plain
handler and to a Spyne callback application), and bad input gets a SOAP fault while the socket stays usable."""

from __future__ import annotations

import asyncio
import time

import pytest
from lxml import etree

from hybrid.client import HybridConnectionClient
from hybrid.errors import ConnectionClosed, RelayTimeout
from tests.hybridsoap.support import (
    CALLBACK_NS,
    GATES,
    PROBE_NS,
    PROGRESS_ACTION,
    S11,
    S12,
    WSA,
    callback_application,
    probe_application,
    wait_routable,
)
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_support import HostThread, module_gateway
from wcfrelay import soap_ws
from wcfrelay.bindings import HybridConnectionRelayBinding
from wcfrelay.client.websocket_transport import CallbackMessage, hybrid_websocket_zeep_client
from wcfrelay.service.host import HybridEndpoint, RelayServiceHost

PROBE = "probe-hc"
NARROW = "probe-narrow"
SMALL = "probe-small"
SMALL_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> GatewayProcess:
    yield from module_gateway(tmp_path_factory)


@pytest.fixture(scope="module")
def probe(gw: GatewayProcess):
    import logging

    logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)
    host = RelayServiceHost(gw.connection_string(), tls=False, max_workers=32)
    host.add_endpoint(probe_application(), PROBE, HybridConnectionRelayBinding())
    host.add_endpoint(probe_application(), NARROW, HybridConnectionRelayBinding(max_calls_per_connection=4))
    host.add_endpoint(probe_application(), SMALL, HybridConnectionRelayBinding(max_received_message_size=SMALL_LIMIT))
    with HostThread(host) as thread:
        for path in (PROBE, NARROW, SMALL):
            wait_routable(gw, path)
        yield thread


@pytest.fixture(autouse=True)
def fresh_gates():
    GATES.reset()
    yield
    GATES.reset()


def _client(gw: GatewayProcess, path: str = PROBE, **options):
    return hybrid_websocket_zeep_client(f"{gw.http_base}/{path}?wsdl", connection_string=gw.connection_string(),
                                        **options)


async def _until(predicate, what: str, timeout: float = 10.0) -> None:
    """Wait for an observable state (bounded)."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------------- concurrency


def test_a_blocked_call_does_not_hold_up_the_others(gw: GatewayProcess, probe) -> None:
    async def main() -> None:
        async with _client(gw) as client:
            blocked = asyncio.ensure_future(client.service.Block("slow"))
            await _until(lambda: GATES.running == 1, "Block to start")
            pings = await asyncio.wait_for(asyncio.gather(*(client.service.Ping(f"p{i}") for i in range(30))),
                                           20 * TIMEOUT_FACTOR)
            assert pings == [f"p{i}" for i in range(30)]
            assert not blocked.done()  # still running while 30 other calls came and went on the same socket
            GATES.open("slow")
            assert await blocked == "slow"
            assert client.transport.connections_opened == 1

    asyncio.run(main())


def test_answers_out_of_order_are_matched_to_their_calls(gw: GatewayProcess, probe) -> None:
    async def main() -> None:
        async with _client(gw) as client:
            calls = [asyncio.ensure_future(client.service.Block(f"k{i}")) for i in range(10)]
            await _until(lambda: GATES.running == 10, "all ten calls to run")
            for i in reversed(range(10)):  # answered last-first
                GATES.open(f"k{i}")
                assert await calls[i] == f"k{i}"
                assert not any(c.done() for c in calls[:i])

    asyncio.run(main())


def test_calls_in_flight_per_socket_are_bounded(gw: GatewayProcess, probe) -> None:
    endpoint = next(e for e in probe.host.endpoints if e.path == NARROW)
    assert isinstance(endpoint, HybridEndpoint)

    async def main() -> None:
        async with _client(gw, NARROW) as client:
            calls = [asyncio.ensure_future(client.service.Block("all")) for _ in range(10)]
            await _until(lambda: GATES.running == 4, "four calls to run")
            await _until(lambda: client.transport.in_flight == 10, "all ten sent")
            session = next(iter(endpoint.sessions))
            assert session.in_flight == 4  # the other six wait, unread, on the socket
            GATES.open("all")
            assert await asyncio.gather(*calls) == ["all"] * 10
        assert GATES.max_running == 4

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------- callbacks


def test_callback_reaches_the_caller_while_its_call_runs(gw: GatewayProcess, probe) -> None:
    seen: list[CallbackMessage] = []

    async def on_progress(message: CallbackMessage) -> None:
        seen.append(message)
        GATES.open(message.body.findtext(f"{{{CALLBACK_NS}}}key"))  # lets the service method finish

    async def main() -> None:
        async with _client(gw, callbacks={PROGRESS_ACTION: on_progress}) as client:
            results = await asyncio.gather(*(client.service.Work(f"job{i}") for i in range(5)))
            assert results == [f"done:job{i}" for i in range(5)]

    asyncio.run(main())
    assert sorted(m.body.findtext(f"{{{CALLBACK_NS}}}key") for m in seen) == [f"job{i}" for i in range(5)]
    assert all(m.action == PROGRESS_ACTION and m.message_id for m in seen)


def test_callback_to_a_spyne_callback_application(gw: GatewayProcess, probe) -> None:
    async def main() -> None:
        async with _client(gw, callbacks=callback_application()) as client:
            assert await client.service.Work("spyne") == "done:spyne"
            assert client.transport.callbacks_received == 1

    asyncio.run(main())


def test_host_can_push_to_connected_callers(gw: GatewayProcess, probe) -> None:
    endpoint = next(e for e in probe.host.endpoints if e.path == PROBE)
    got: asyncio.Queue[CallbackMessage] = asyncio.Queue()

    async def main() -> None:
        async with _client(gw, callbacks=got.put_nowait) as client:
            assert await client.service.Ping("hello") == "hello"
            await _until(lambda: len(endpoint.callback_channels) == 1, "the session to be listed")
            channel = endpoint.callback_channels[0]
            probe.call(channel.send_async("urn:test:push", f'<Pushed xmlns="{CALLBACK_NS}">news</Pushed>'))
            message = await asyncio.wait_for(got.get(), 10 * TIMEOUT_FACTOR)
            assert message.action == "urn:test:push" and message.body.text == "news"
            with pytest.raises(RuntimeError):  # the blocking send refuses to run on the host's own loop
                probe.call(_send_on_loop(channel))

    asyncio.run(main())


async def _send_on_loop(channel) -> None:
    channel.send("urn:test:never")


# ------------------------------------------------------------------------------------------------- bad input


def _env12(body: str, message_id: str | None = None, action: str | None = None) -> str:
    head = ""
    if message_id or action:
        head = "<s:Header>" + (f'<a:Action xmlns:a="{WSA}">{action}</a:Action>' if action else "") + \
               (f'<a:MessageID xmlns:a="{WSA}">{message_id}</a:MessageID>' if message_id else "") + "</s:Header>"
    return f'<s:Envelope xmlns:s="{S12}">{head}<s:Body>{body}</s:Body></s:Envelope>'


def _parse(message: str | bytes) -> etree._Element:
    return etree.fromstring(message.encode() if isinstance(message, str) else message)


def _fault(message: str | bytes) -> dict[str, str | None]:
    root = _parse(message)
    ns = etree.QName(root).namespace
    fault = root.find(f"{{{ns}}}Body/{{{ns}}}Fault")
    assert fault is not None, message
    if ns == S11:
        return {"code": fault.findtext("faultcode"), "subcode": None, "reason": fault.findtext("faultstring"),
                "relates_to": root.findtext(f"{{{S11}}}Header/{{{WSA}}}RelatesTo")}
    return {"code": fault.findtext(f"{{{ns}}}Code/{{{ns}}}Value"),
            "subcode": fault.findtext(f"{{{ns}}}Code/{{{ns}}}Subcode/{{{ns}}}Value"),
            "reason": fault.findtext(f"{{{ns}}}Reason/{{{ns}}}Text"),
            "relates_to": root.findtext(f"{{{ns}}}Header/{{{WSA}}}RelatesTo")}


def _ping_result(message: str | bytes) -> str | None:
    return _parse(message).findtext(f".//{{{PROBE_NS}}}PingResult")


async def _connect(gw: GatewayProcess, path: str):
    client = HybridConnectionClient(gw.connection_string(), entity_path=path, tls=False)
    return client, await client.connect()


def test_malformed_messages_get_faults_and_the_socket_stays_usable(gw: GatewayProcess, probe) -> None:
    async def main() -> None:
        client, conn = await _connect(gw, PROBE)
        try:
            async def ask(text: str | bytes) -> str | bytes:
                await conn.send(text)
                return await asyncio.wait_for(conn.recv(), 10 * TIMEOUT_FACTOR)

            cases = {
                "not xml at all": "Sender",
                "<unclosed": "Sender",
                "<NotAnEnvelope/>": "Sender",
                '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>': "Sender",
                f'<s:Envelope xmlns:s="{S12}"><s:Header/></s:Envelope>': "Sender",  # no Body
                _env12(f'<Nope xmlns="{PROBE_NS}"/>', "urn:uuid:nope-1"): "Sender",  # unknown operation
            }
            for text, code in cases.items():
                fault = _fault(await ask(text))
                assert fault["code"].endswith(code), (text, fault)
            # an unknown operation still relates to its MessageID
            fault = _fault(await ask(_env12(f'<Nope xmlns="{PROBE_NS}"/>', "urn:uuid:nope-2")))
            assert fault["relates_to"] == "urn:uuid:nope-2" and fault["subcode"].endswith("OperationNotFound")
            # SOAP 1.1 to a SOAP 1.2 endpoint: VersionMismatch, in SOAP 1.1 so the sender can read it
            fault = _fault(await ask(f'<s:Envelope xmlns:s="{S11}"><s:Body><Ping xmlns="{PROBE_NS}">'
                                     "<text>x</text></Ping></s:Body></s:Envelope>"))
            assert fault["code"].endswith("VersionMismatch")
            # the socket still works: a good call, correlated
            answer = await ask(_env12(f'<Ping xmlns="{PROBE_NS}"><text>still here</text></Ping>', "urn:uuid:ok-1",
                                      f"{PROBE_NS}/Ping"))
            assert isinstance(answer, str)
            assert _ping_result(answer) == "still here"
            root = _parse(answer)
            assert root.findtext(f"{{{S12}}}Header/{{{WSA}}}RelatesTo") == "urn:uuid:ok-1"
            assert root.findtext(f"{{{S12}}}Header/{{{WSA}}}Action") == f"{PROBE_NS}/PingResponse"
            # a binary message is answered in binary; one without MessageID is answered all the same
            answer = await ask(_env12(f'<Ping xmlns="{PROBE_NS}"><text>bin</text></Ping>').encode())
            assert isinstance(answer, bytes) and _ping_result(answer) == "bin"
        finally:
            await conn.close()
            await client.close()

    asyncio.run(main())


def test_an_oversized_message_is_refused(gw: GatewayProcess, probe) -> None:
    async def main() -> None:
        client, conn = await _connect(gw, SMALL)
        try:
            padding = "x" * (SMALL_LIMIT + 10)
            await conn.send(_env12(f'<Ping xmlns="{PROBE_NS}"><text>{padding}</text></Ping>', "urn:uuid:big-1"))
            fault = _fault(await asyncio.wait_for(conn.recv(), 10 * TIMEOUT_FACTOR))
            assert fault["relates_to"] == "urn:uuid:big-1"
            assert fault["subcode"].endswith("PayloadTooLarge") and str(SMALL_LIMIT) in fault["reason"]
            # the socket is still usable
            await conn.send(_env12(f'<Ping xmlns="{PROBE_NS}"><text>small</text></Ping>', "urn:uuid:small-1"))
            assert _ping_result(await asyncio.wait_for(conn.recv(), 10 * TIMEOUT_FACTOR)) == "small"
            # far beyond the limit the WebSocket layer refuses to read it at all: 1009 (message too big)
            await conn.send("<" + "y" * (SMALL_LIMIT + (2 << 20)))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(conn.recv(), 10 * TIMEOUT_FACTOR)
            assert closed.value.close_code == 1009
        finally:
            await conn.close()
            await client.close()

    asyncio.run(main())


def test_a_call_times_out_and_a_lost_socket_fails_calls_in_flight(gw: GatewayProcess, probe) -> None:
    endpoint = next(e for e in probe.host.endpoints if e.path == PROBE)

    async def main() -> None:
        async with _client(gw, operation_timeout=0.3) as client:
            with pytest.raises(RelayTimeout):
                await client.service.Block("never")
            assert client.transport.in_flight == 0
            assert await client.service.Ping("after timeout") == "after timeout"
            GATES.open("never")
            await _until(lambda: GATES.running == 0, "the timed-out call to end on the service")
        async with _client(gw) as client:
            blocked = asyncio.ensure_future(client.service.Block("lost"))
            await _until(lambda: GATES.running == 1, "Block to start")
            await client.transport.connection.close(1000, "caller gives up")
            with pytest.raises(ConnectionClosed):
                await blocked
            GATES.open("lost")
            # the next call opens a new socket
            assert await client.service.Ping("again") == "again"
            assert client.transport.connections_opened == 2
        await _until(lambda: not endpoint.sessions, "the sessions to end")

    asyncio.run(main())


def test_one_way_operation_is_acknowledged(gw: GatewayProcess) -> None:
    """The Calculator's one-way Log over the WebSocket: zeep returns None once the host acknowledged it."""
    from samples.calculator import service as calculator

    host = RelayServiceHost(gw.connection_string(), tls=False)
    host.add_endpoint(calculator.make_application("soap12"), "calc-oneway-hc", HybridConnectionRelayBinding())
    calculator.clear_received()
    with HostThread(host):
        wait_routable(gw, "calc-oneway-hc")

        async def main() -> None:
            async with _client(gw, "calc-oneway-hc") as client:
                assert await client.service.Log("over the socket") is None
                assert ("Log", "over the socket") in list(calculator.received)

        asyncio.run(main())


def test_ack_and_correlation_helpers() -> None:
    ack = soap_ws.build_ack(soap_ws.soap.SoapVersion.SOAP12, "urn:uuid:1")
    envelope = soap_ws.soap.parse_envelope(ack)
    assert soap_ws.is_ack(envelope)
    assert soap_ws.correlation(envelope) == soap_ws.Correlation(None, "urn:uuid:1", soap_ws.ACK_ACTION)
    assert soap_ws.peek_message_id(_env12("<x/>", "urn:uuid:peek").encode() + b"garbage that never ends <<<") \
        == "urn:uuid:peek"
    assert soap_ws.peek_message_id(b"not xml") is None
    # a header spread over several parser chunks, then a body cut off mid-tag
    padded = _env12("<x/>", "urn:uuid:late").replace("<s:Header>", "<s:Header><p>" + "y" * 20000 + "</p>")
    assert soap_ws.peek_message_id(padded.encode()[: padded.index("<s:Body>") + 12]) == "urn:uuid:late"
    # a MessageID beyond the 64 KiB the peek reads is not found
    far = _env12("<x/>", "urn:uuid:far").replace("<s:Header>", "<s:Header><p>" + "y" * 70000 + "</p>")
    assert soap_ws.peek_message_id(far.encode()) is None
    # a DOCTYPE is refused before any parsing
    assert soap_ws.peek_message_id(b'<!DOCTYPE s [<!ENTITY e "x">]>' + _env12("<x/>", "urn:uuid:d").encode()) is None
    assert soap_ws.peek_message_id(_env12("<x/>").encode()) is None
    root = etree.fromstring(_env12("<x/>").encode())
    mid = soap_ws.ensure_addressing(root, action="urn:a", to="http://gw/x")
    assert mid.startswith("urn:uuid:") and soap_ws.ensure_addressing(root) == mid
    assert root.findtext(f"{{{S12}}}Header/{{{WSA}}}Action") == "urn:a"
    with pytest.raises(soap_ws.soap.EnvelopeError):
        soap_ws.ensure_addressing(etree.fromstring(b"<x/>"))


def test_closing_the_host_ends_its_sockets_without_waiting_for_calls(gw: GatewayProcess) -> None:
    host = RelayServiceHost(gw.connection_string(), tls=False)
    host.add_endpoint(probe_application(), "probe-closing", HybridConnectionRelayBinding())
    thread = HostThread(host).start()
    try:
        wait_routable(gw, "probe-closing")

        async def main() -> None:
            async with _client(gw, "probe-closing") as client:
                blocked = asyncio.ensure_future(client.service.Block("forever"))
                await _until(lambda: GATES.running == 1, "Block to start")
                began = time.monotonic()
                await asyncio.get_running_loop().run_in_executor(None, thread.stop)
                # the blocked call (it would hold its thread for 30 s) did not keep the host from closing
                assert time.monotonic() - began < 10 * TIMEOUT_FACTOR
                with pytest.raises(ConnectionClosed, match="1001 the service is closing"):
                    await blocked

        asyncio.run(main())
    finally:
        thread.stop()


def test_relayed_http_bad_input_gets_faults(gw: GatewayProcess, probe) -> None:
    import requests

    token = {"ServiceBusAuthorization": gw.token(SMALL), "Content-Type": "application/soap+xml; charset=utf-8"}
    padding = "x" * (SMALL_LIMIT + 10)
    big = requests.post(f"{gw.http_base}/{SMALL}", headers=token, timeout=30,
                        data=_env12(f'<Ping xmlns="{PROBE_NS}"><text>{padding}</text></Ping>'))
    assert big.status_code == 413 and _fault(big.content)["subcode"].endswith("PayloadTooLarge")
    broken = requests.post(f"{gw.http_base}/{SMALL}", headers=token, data="<not-closed", timeout=30)
    assert broken.status_code == 500 and _fault(broken.content)["code"].endswith("Sender")
    fine = requests.post(f"{gw.http_base}/{SMALL}", headers=token, timeout=30,
                         data=_env12(f'<Ping xmlns="{PROBE_NS}"><text>fine</text></Ping>'))
    assert fine.status_code == 200 and _ping_result(fine.content) == "fine"
