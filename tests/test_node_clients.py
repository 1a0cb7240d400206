"""The official, unmodified Node clients (hyco-ws 1.0.5, hyco-https 1.4.5) against a real gateway process.

Each test runs over ws/http and over wss/https (``--dev-tls``; Node trusts the dev certificate through
NODE_EXTRA_CA_CERTS). The Node side lives in tests/node; tests/support/node.py installs and runs it.
The Python peers here use the ``websockets`` library directly, following the wire protocol
(spec §2.2, §2.6), so these tests do not depend on the project's own client SDK.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import websockets

from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.support.node import NODE_DIR, NodeProcesses, ensure_node_modules, pattern_bytes, run_script

SCRIPTS = ("ws_listener.js", "ws_sender.js", "https_listener.js", "http_client.js", "lib/common.js")
SENDER_TEXT = "hello from hyco-ws \u2713"


@dataclass
class Relay:
    """A running gateway plus what a client needs to trust it."""

    gw: GatewayProcess
    tls: bool
    node_env: dict
    ssl_context: ssl.SSLContext | None

    @property
    def label(self) -> str:
        return "tls" if self.tls else "plain"

    def hc(self, name: str) -> str:
        """A hybrid connection name unique to the test and transport."""
        return f"{name}-{self.label}"


def _dev_certificate(gw: GatewayProcess, state: Path) -> Path:
    """The self-signed certificate a ``--dev-tls`` gateway made: the path it logs, else the one in <state>/dev-tls."""
    for line in gw.output:
        m = re.search(r"development TLS certificate: (\S+\.pem)", line)
        if m and Path(m.group(1)).is_file():
            return Path(m.group(1))
    candidates = [state / "dev-tls" / name for name in ("cert.pem", "dev-cert.pem")]
    found = [c for c in candidates if c.is_file()]
    assert found, f"--dev-tls gateway wrote no certificate at {candidates}; output:\n" + "\n".join(gw.output)
    return found[0]


@pytest.fixture(scope="session")
def node_modules():
    ensure_node_modules()


@pytest.fixture(params=["plain", "tls"])
def relay(request, gateway_factory, tmp_path, node_modules) -> Relay:
    if request.param == "plain":
        return Relay(gateway_factory(), False, {}, None)
    state = tmp_path / "tls-state"
    gw = gateway_factory("--dev-tls", tls=True, state_dir=state)
    cert = _dev_certificate(gw, state)
    ctx = ssl.create_default_context(cafile=str(cert))
    return Relay(gw, True, {"NODE_EXTRA_CA_CERTS": str(cert)}, ctx)


@pytest.fixture
def node(relay):
    """Start Node scripts; they are stopped before the gateway (this fixture is set up after it)."""
    procs = NodeProcesses()
    yield procs
    procs.stop_all()


def _echo_expectations(events: list[dict], binary: bytes) -> None:
    messages = [e for e in events if e.get("event") == "message"]
    assert len(messages) == 2, messages
    texts = [m for m in messages if not m["binary"]]
    bins = [m for m in messages if m["binary"]]
    assert [t["text"] for t in texts] == [SENDER_TEXT], "text must come back as text, unchanged"
    assert len(bins) == 1, "binary must come back as binary"
    assert bins[0]["length"] == len(binary)
    assert bins[0]["sha256"] == hashlib.sha256(binary).hexdigest(), "binary payload changed on the way"
    if "base64" in bins[0]:
        assert base64.b64decode(bins[0]["base64"]) == binary


def _assert_rendezvous_address(relay: Relay, address: str, hc: str, suffix: str, query: dict) -> None:
    """§1.3 / §5.3: the accept address keeps the suffix and app query, on the gateway's own scheme, host and port."""
    parts = urlsplit(address)
    assert parts.scheme == ("wss" if relay.tls else "ws"), address
    assert parts.hostname == relay.gw.host and parts.port == relay.gw.port, address
    assert parts.path == f"/$hc/{hc}{suffix}", address
    q = parse_qs(parts.query, keep_blank_values=True)
    for key, value in query.items():
        assert q.get(key) == [value], f"app query {key}={value} missing from {address}"
    assert q.get("sb-hc-action") == ["accept"], address
    assert q.get("sb-hc-id", [""])[0], address
    assert "sb-hc-token" not in q, address


# ---------------------------------------------------------------------------------------------------------------
# Without a gateway


def test_node_scripts_pass_syntax_check(node_modules):
    for script in SCRIPTS:
        done = subprocess.run(["node", "--check", str(NODE_DIR / script)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{script}: {done.stderr}"


@pytest.mark.parametrize("script", ["ws_listener.js", "https_listener.js", "ws_sender.js"])
def test_node_scripts_fail_cleanly_without_gateway(node_modules, script):
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    action = "connect" if script == "ws_sender.js" else "listen"
    result = run_script(script, f"ws://127.0.0.1:{port}/$hc/nohc?sb-hc-action={action}", "token", timeout=20)
    assert result.returncode == 2, result.text
    fatal = result.of("fatal")
    assert fatal and "ECONNREFUSED" in fatal[0]["message"], result.text
    assert not any(e.get("event") == "READY" for e in result.events)


# ---------------------------------------------------------------------------------------------------------------
# hyco-ws listener <-> hyco-ws sender


def test_hyco_ws_sender_to_hyco_ws_listener(relay, node):
    gw, hc = relay.gw, relay.hc("node-ws-echo")
    listener = node.start("ws_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    listener.wait_ready()

    result = run_script("ws_sender.js", gw.connect_url(hc, "/a/b", "x=1"), gw.token(hc), env=relay.node_env)
    assert result.returncode == 0, result.text + "\n" + listener.describe()
    _echo_expectations(result.events, pattern_bytes(1024))
    assert result.of("open")[0]["protocol"] is None, "no subprotocol was asked for, none may be chosen"

    conn = listener.wait_for(lambda e: e.get("event") == "connection", what="connection")
    _assert_rendezvous_address(relay, conn["url"], hc, "/a/b", {"x": "1"})
    # The listener saw both messages with their types.
    listener.wait_for(lambda e: e.get("event") == "message" and e["binary"], what="binary message")
    texts = [e["text"] for e in listener.wait_count("message", 2) if not e["binary"]]
    assert texts == [SENDER_TEXT]
    # The sender closed with 1000; the close reaches the listener.
    close = listener.wait_for(lambda e: e.get("event") == "close", what="close")
    assert close["code"] == 1000, close


@pytest.mark.parametrize("script", ["ws_listener.js", "https_listener.js"])
def test_listener_with_bad_token_is_refused(relay, script):
    """§2.8: a listen with a badly signed token gets 401; the script reports it and exits (no READY)."""
    gw, hc = relay.gw, relay.hc("node-listen-badtoken-" + script.split("_")[0])
    result = run_script(script, gw.listen_url(hc), gw.token(hc, key="wrong-key"), env=relay.node_env, timeout=30)
    assert result.returncode == 2, result.text
    assert "401" in result.of("fatal")[0]["message"], result.text
    assert not any(e.get("event") == "READY" for e in result.events)


def test_hyco_ws_large_binary_message(relay, node):
    """A 300 KiB binary message crosses the relay in both directions intact."""
    gw, hc = relay.gw, relay.hc("node-ws-large")
    listener = node.start("ws_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    listener.wait_ready()
    size = 300 * 1024
    result = run_script("ws_sender.js", gw.connect_url(hc), gw.token(hc), "--binary-size", str(size),
                        env=relay.node_env)
    assert result.returncode == 0, result.text + "\n" + listener.describe()
    _echo_expectations(result.events, pattern_bytes(size))


def test_hyco_ws_sender_without_listener_is_refused(relay, node):
    """§2.8: a WebSocket sender gets 404 when nothing listens (here the HC has never had a listener)."""
    gw, hc = relay.gw, relay.hc("node-ws-nolistener")
    result = run_script("ws_sender.js", gw.connect_url(hc), gw.token(hc), env=relay.node_env)
    assert result.returncode == 2, result.text
    assert "404" in result.of("fatal")[0]["message"], result.text


def test_hyco_ws_sender_with_bad_token_is_refused(relay, node):
    gw, hc = relay.gw, relay.hc("node-ws-badtoken")
    listener = node.start("ws_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    listener.wait_ready()
    bad = gw.token(hc, key="not-the-key")
    result = run_script("ws_sender.js", gw.connect_url(hc), bad, env=relay.node_env)
    assert result.returncode == 2, result.text
    assert "401" in result.of("fatal")[0]["message"], "§2.8: an invalid token is a 401"
    assert not listener.of("connection"), "a refused sender must not reach the listener"


# ---------------------------------------------------------------------------------------------------------------
# hyco-https listener <-> plain Node http/https client


@pytest.fixture
def https_listener(relay, node, request):
    gw = relay.gw
    params = getattr(request.node, "callspec", None)
    extra = [str(v) for k, v in (params.params.items() if params else ()) if k != "relay"]
    name = "-".join([request.node.originalname.removeprefix("test_hyco_https_"), *extra])
    hc = relay.hc("node-http-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
    listener = node.start("https_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    listener.wait_ready()
    return hc, listener


def _http(relay: Relay, hc: str, path: str, method: str, body: int | None = None, repeat: int = 1,
          concurrency: int = 1, auth: str = "header"):
    url = f"{relay.gw.http_base}/{hc}{path}"
    args = [url, relay.gw.token(hc), method] + ([str(body)] if body is not None else [])
    args += ["--repeat", str(repeat), "--concurrency", str(concurrency), "--auth", auth]
    result = run_script("http_client.js", *args, env=relay.node_env)
    return result


def _one_response(result) -> dict:
    assert result.returncode == 0, result.text
    responses = result.of("response")
    assert len(responses) == 1, result.text
    return responses[0]


def test_hyco_https_get(relay, https_listener):
    hc, listener = https_listener
    result = _http(relay, hc, "/sub/hello?x=1&y=two", "GET")
    resp = _one_response(result)
    assert resp["status"] == 200, result.text + listener.describe()
    assert resp["text"] == "hello from hyco-https"
    assert resp["headers"]["content-type"].startswith("text/plain")
    # §1.3: requestTarget carries the HC name, the suffix and the app query.
    assert resp["headers"]["x-request-url"] == f"/{hc}/sub/hello?x=1&y=two"
    req = listener.wait_for(lambda e: e.get("event") == "request", what="request")
    assert req["method"] == "GET" and req["bodyLength"] == 0 and req["channel"] == "control"
    # §1.4: the relay token never reaches the listener.
    assert "servicebusauthorization" not in req["headers"], req["headers"]
    assert "via" in {k.lower() for k in resp["headers"]}, "§2.4: the gateway adds Via to relayed replies"


@pytest.mark.parametrize("size", [1000, 100 * 1024], ids=["1KB-inline", "100KB-rendezvous"])
def test_hyco_https_post_echo(relay, https_listener, size):
    hc, listener = https_listener
    sent = pattern_bytes(size)
    result = _http(relay, hc, "/echo", "POST", size)
    resp = _one_response(result)
    assert resp["status"] == 200, result.text + listener.describe()
    assert resp["headers"]["x-body-length"] == str(size)
    assert resp["headers"]["x-body-sha256"] == hashlib.sha256(sent).hexdigest(), "listener got a different body"
    assert resp["bodyLength"] == size
    assert resp["sha256"] == hashlib.sha256(sent).hexdigest(), "client got a different body back"
    req = listener.wait_for(lambda e: e.get("event") == "request", what="request")
    assert req["method"] == "POST" and req["bodyLength"] == size
    assert req["headers"].get("content-type") == "application/octet-stream"
    # §2.7: a request over 64 KiB must come over a gateway-initiated rendezvous; a small one inline.
    assert req["channel"] == ("rendezvous" if size > 64 * 1024 else "control"), req


def test_hyco_https_big_response(relay, https_listener):
    """100 KiB > 64 KiB: hyco-https opens the request's rendezvous itself for the response (§2.7)."""
    hc, listener = https_listener
    result = _http(relay, hc, "/files/big", "GET", repeat=2)
    assert result.returncode == 0, result.text + listener.describe()
    expected = hashlib.sha256(pattern_bytes(100 * 1024)).hexdigest()
    responses = result.of("response")
    assert len(responses) == 2
    for resp in responses:
        assert resp["status"] == 200
        assert resp["bodyLength"] == 100 * 1024
        assert resp["sha256"] == expected
        assert resp["headers"]["x-body-sha256"] == expected
    responded = listener.wait_count("responded", 2)
    assert len(responded) == 2 and all(r["channel"] == "rendezvous" for r in responded), responded


def test_hyco_https_head(relay, https_listener):
    """HEAD: headers only. hyco-https still sends body bytes after HEAD (§2.4); the gateway must drop them."""
    hc, listener = https_listener
    resp = _one_response(_http(relay, hc, "/hello", "HEAD"))
    assert resp["status"] == 200, listener.describe()
    assert resp["bodyLength"] == 0
    assert resp["headers"]["x-head"] == "yes"
    assert resp["headers"]["x-request-method"] == "HEAD"

    # Node's client never reuses a connection after HEAD, so check the byte stream directly: on one
    # keep-alive connection, what follows the HEAD response's header block must be the next status line.
    sock = socket.create_connection((relay.gw.host, relay.gw.port), timeout=20 * TIMEOUT_FACTOR)
    if relay.ssl_context is not None:
        sock = relay.ssl_context.wrap_socket(sock, server_hostname=relay.gw.host)
    with sock:
        token = relay.gw.token(hc)
        head = (f"HEAD /{hc}/hello HTTP/1.1\r\nHost: {relay.gw.host}:{relay.gw.port}\r\n"
                f"ServiceBusAuthorization: {token}\r\n\r\n")
        sock.sendall(head.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before the HEAD response ended: {buf!r}"
            buf += chunk
        header_block, rest = buf.split(b"\r\n\r\n", 1)
        assert header_block.startswith(b"HTTP/1.1 200"), header_block
        if b"connection: close" in header_block.lower():
            assert rest == b"", f"bytes after a HEAD response: {rest[:80]!r}"
            return
        get = (f"GET /{hc}/hello HTTP/1.1\r\nHost: {relay.gw.host}:{relay.gw.port}\r\n"
               f"ServiceBusAuthorization: {token}\r\nConnection: close\r\n\r\n")
        sock.sendall(get.encode())
        while len(rest) < 12:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 200"), f"the gateway sent a body after the HEAD response: {rest[:80]!r}"


def test_hyco_https_unknown_route_status_passes_through(relay, https_listener):
    hc, listener = https_listener
    resp = _one_response(_http(relay, hc, "/nothing-here", "GET"))
    assert resp["status"] == 404, listener.describe()
    assert resp["statusMessage"] == "Not Found"
    assert resp["text"] == "no route for GET /" + hc + "/nothing-here"


def test_hyco_https_no_content_then_more_requests(relay, https_listener):
    """hyco-https answers 204 with body:false *and* a stray empty binary frame (§2.4): the gateway must ignore
    it, so the next responses on the same control channel keep their own bodies."""
    hc, listener = https_listener
    resp = _one_response(_http(relay, hc, "/nocontent", "GET"))
    assert resp["status"] == 204 and resp["bodyLength"] == 0, listener.describe()
    for _ in range(2):
        resp = _one_response(_http(relay, hc, "/hello", "GET"))
        assert resp["status"] == 200 and resp["text"] == "hello from hyco-https", listener.describe()
    resp = _one_response(_http(relay, hc, "/echo", "POST", 300))
    assert resp["status"] == 200 and resp["sha256"] == hashlib.sha256(pattern_bytes(300)).hexdigest()


def test_hyco_https_fragmented_response(relay, https_listener):
    """write('aaa'); write('bbb'); end('ccc') arrives as one fragmented binary message (§2.4)."""
    hc, listener = https_listener
    resp = _one_response(_http(relay, hc, "/chunks", "GET"))
    assert resp["status"] == 200, listener.describe()
    assert resp["text"] == "aaabbbccc"


@pytest.mark.parametrize("auth", ["query", "authorization"])
def test_hyco_https_other_token_carriers(relay, https_listener, auth):
    """§1.4: sb-hc-token in the query is accepted and stripped; so is Authorization when it is the only carrier."""
    hc, listener = https_listener
    resp = _one_response(_http(relay, hc, "/sub/hello?x=1", "GET", auth=auth))
    assert resp["status"] == 200, listener.describe()
    assert resp["headers"]["x-request-url"] == f"/{hc}/sub/hello?x=1", "§1.2: sb-hc-* is filtered from the target"
    req = listener.wait_for(lambda e: e.get("event") == "request", what="request")
    assert "authorization" not in req["headers"] and "servicebusauthorization" not in req["headers"], req


def test_hyco_https_bad_token_is_refused(relay, https_listener):
    hc, listener = https_listener
    url = f"{relay.gw.http_base}/{hc}/hello"
    result = run_script("http_client.js", url, relay.gw.token(hc, key="wrong-key"), "GET", env=relay.node_env)
    resp = _one_response(result)
    assert resp["status"] == 401, resp
    assert not listener.of("request"), "an unauthorized request must not reach the listener"


@pytest.mark.parametrize("size", [1000, 70 * 1024], ids=["inline", "rendezvous"])
def test_hyco_https_concurrent_posts(relay, https_listener, size):
    """Eight POSTs at once, each a different length: every JSON header must stay paired with its own body (§2.1)."""
    hc, listener = https_listener
    result = _http(relay, hc, "/echo", "POST", size, concurrency=8)
    assert result.returncode == 0, result.text + listener.describe()
    responses = result.of("response")
    assert len(responses) == 8
    for resp in responses:
        assert resp["status"] == 200, resp
        assert resp["headers"]["x-body-length"] == str(resp["sentLength"]), "the listener got another request's body"
        assert resp["sha256"] == resp["sentSha256"], "a response carried another request's body"


def test_hyco_ws_concurrent_senders(relay, node):
    """Five hyco-ws senders at once through one hyco-ws listener, each with its own payload size."""
    gw, hc = relay.gw, relay.hc("node-ws-concurrent")
    listener = node.start("ws_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    listener.wait_ready()
    sizes = [100 + i for i in range(5)]
    with ThreadPoolExecutor(len(sizes)) as pool:
        results = list(pool.map(lambda n: run_script("ws_sender.js", gw.connect_url(hc, f"/s{n}"), gw.token(hc),
                                                     "--binary-size", str(n), env=relay.node_env), sizes))
    for n, result in zip(sizes, results):
        assert result.returncode == 0, result.text + "\n" + listener.describe()
        _echo_expectations(result.events, pattern_bytes(n))
    urls = sorted(urlsplit(e["url"]).path for e in listener.wait_count("connection", len(sizes)))
    assert urls == sorted(f"/$hc/{hc}/s{n}" for n in sizes)


# ---------------------------------------------------------------------------------------------------------------
# Python websockets sender -> hyco-ws listener


def _connect_kwargs(relay: Relay, token: str | None = None) -> dict:
    kwargs: dict = {"compression": None, "open_timeout": 10 * TIMEOUT_FACTOR, "max_size": None}
    if token is not None:
        kwargs["additional_headers"] = {"ServiceBusAuthorization": token}
    if relay.ssl_context is not None:
        kwargs["ssl"] = relay.ssl_context
    return kwargs


async def test_python_sender_to_hyco_ws_listener(relay, node):
    gw, hc = relay.gw, relay.hc("py-sender-node-ws")
    listener = node.start("ws_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    await asyncio.to_thread(listener.wait_ready)

    url = gw.connect_url(hc, "/py/sfx", "q=2&r=three")
    async with websockets.connect(url, **_connect_kwargs(relay, gw.token(hc))) as ws:
        await ws.send("text from python")
        assert await asyncio.wait_for(ws.recv(), 10 * TIMEOUT_FACTOR) == "text from python"
        payload = bytes(range(256)) * 8
        await ws.send(payload)
        echoed = await asyncio.wait_for(ws.recv(), 10 * TIMEOUT_FACTOR)
        assert isinstance(echoed, bytes) and echoed == payload
        assert ws.subprotocol is None
    conn = await asyncio.to_thread(listener.wait_for, lambda e: e.get("event") == "connection")
    _assert_rendezvous_address(relay, conn["url"], hc, "/py/sfx", {"q": "2", "r": "three"})


async def test_python_sender_subprotocol_is_chosen_by_hyco_ws(relay, node):
    """§2.6: hyco-ws takes the first offered protocol; the sender must get that same one back."""
    gw, hc = relay.gw, relay.hc("py-sender-subproto")
    listener = node.start("ws_listener.js", gw.listen_url(hc), gw.token(hc), env=relay.node_env)
    await asyncio.to_thread(listener.wait_ready)
    async with websockets.connect(gw.connect_url(hc), subprotocols=["chat", "superchat"],
                                  **_connect_kwargs(relay, gw.token(hc))) as ws:
        assert ws.subprotocol == "chat"
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 10 * TIMEOUT_FACTOR) == "ping"
    opened = await asyncio.to_thread(listener.wait_for, lambda e: e.get("event") == "open")
    assert opened["protocol"] == "chat"


# ---------------------------------------------------------------------------------------------------------------
# hyco-ws sender -> raw Python listener (control channel + accept, §2.2 / §2.6)


async def test_hyco_ws_sender_to_python_listener(relay):
    gw, hc = relay.gw, relay.hc("node-sender-py-listener")
    accepts: list[dict] = []
    echo_tasks: list[asyncio.Task] = []

    async def echo(address: str) -> None:
        kwargs = _connect_kwargs(relay)  # the address is the credential: no token (§3.4)
        async with websockets.connect(address, **kwargs) as rendezvous:
            async for message in rendezvous:
                await rendezvous.send(message)  # str stays text, bytes stay binary

    async with websockets.connect(gw.listen_url(hc), **_connect_kwargs(relay, gw.token(hc))) as control:

        async def control_loop() -> None:
            async for raw in control:
                assert isinstance(raw, str), "control messages are text (§2.1)"
                message = json.loads(raw)
                if "accept" in message:
                    accepts.append(message["accept"])
                    echo_tasks.append(asyncio.create_task(echo(message["accept"]["address"])))

        loop_task = asyncio.create_task(control_loop())
        try:
            result = await asyncio.to_thread(run_script, "ws_sender.js", gw.connect_url(hc, "/x/y", "k=v"),
                                             gw.token(hc), env=relay.node_env)
        finally:
            loop_task.cancel()
        failures = [repr(t.exception()) for t in echo_tasks if t.done() and not t.cancelled() and t.exception()]
        assert result.returncode == 0, f"{result.text}\naccepts: {accepts}\nrendezvous errors: {failures}"
        _echo_expectations(result.events, pattern_bytes(1024))

    assert len(accepts) == 1, accepts
    accept = accepts[0]
    _assert_rendezvous_address(relay, accept["address"], hc, "/x/y", {"k": "v"})
    assert accept["id"] and accept["id"] in accept["address"]
    headers = {k.lower(): v for k, v in accept["connectHeaders"].items()}
    assert headers.get("sec-websocket-key"), "§2.2: hyco-ws listeners need Sec-WebSocket-Key"
    assert headers.get("sec-websocket-version") == "13"
    assert "servicebusauthorization" not in headers, "§2.2: the relay token is not forwarded"
    for task in echo_tasks:
        await asyncio.wait_for(task, 10 * TIMEOUT_FACTOR)
