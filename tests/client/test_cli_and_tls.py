"""The ``wcfrelay listen``/``send`` commands and the SDK over TLS, against real gateway processes."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import ssl
import sys
from pathlib import Path

from hybrid.client import HybridConnectionClient, HybridConnectionListener, RelayedConnection
from tests.client import within
from wcfrelay.cli_client import ENV_CONNECTION_STRING, add_listen_parser, add_send_parser, send_once, serve_echo


def test_subcommands_parse_their_flags():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_listen_parser(sub)
    add_send_parser(sub)
    listen = parser.parse_args(["listen", "--connection-string", "Endpoint=sb://h/", "--entity", "e", "--ws"])
    assert (listen.entity, listen.plaintext, listen.func.__name__) == ("e", True, "run_listen")
    send = parser.parse_args(["send", "--insecure", "--http", "-m", "hi", "--suffix", "/x", "--query", "a=1"])
    assert (send.plaintext, send.http, send.message, send.suffix, send.query) == (True, True, "hi", "/x", "a=1")
    assert send.func.__name__ == "run_send"


async def test_echo_listener_answers_websocket_and_http(gateway):
    stop, ready = asyncio.Event(), asyncio.Event()
    cs = gateway.connection_string("cli-echo")
    server = asyncio.ensure_future(serve_echo(cs, plaintext=True, stop=stop, ready=ready, out=io.StringIO()))
    try:
        await within(ready.wait())
        assert await within(send_once(cs, "over websocket", plaintext=True)) == "over websocket"
        assert await within(send_once(cs, "over http", plaintext=True, http=True)) == b"over http"
        summary = await within(send_once(cs, None, plaintext=True, http=True, suffix="/s", query="q=1"))
        assert b'"suffix": "/s"' in summary and b'"query": "q=1"' in summary
    finally:
        stop.set()
    assert await within(server) == 0


async def _run(*args: str, env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wcfrelay", *args, env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(proc.communicate(stdin), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_wcfrelay_listen_and_send_commands(gateway):
    env = {ENV_CONNECTION_STRING: gateway.connection_string()}  # no EntityPath: --entity names it
    listen = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wcfrelay", "listen", "--entity", "cmd", "--ws",
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert listen.stdout is not None
        while True:
            line = (await within(listen.stdout.readline(), 30)).decode()
            assert line, "wcfrelay listen exited before going online"
            if line.startswith("listening on"):
                break
        code, out, err = await _run("send", "--entity", "cmd", "--ws", "--message", "hello cli", env=env)
        assert (code, out.strip()) == (0, "hello cli"), err
        code, out, err = await _run("send", "--entity", "cmd", "--ws", "--http", env=env, stdin=b"from stdin")
        assert (code, out.strip()) == (0, "from stdin"), err
        code, out, err = await _run("send", "--entity", "nobody-here", "--ws", "-m", "x", env=env)
        assert code != 0 and "404" in err
    finally:
        listen.send_signal(signal.SIGINT)
        assert await within(listen.wait(), 20) == 0


async def test_sdk_over_tls_with_the_development_certificate(gateway_factory, tmp_path):
    state = tmp_path / "tls-state"
    gw = await asyncio.to_thread(gateway_factory, "--dev-tls", tls=True, state_dir=state)
    certs = list(Path(state).rglob("dev-cert.pem"))
    assert certs, "the gateway did not write its development certificate"
    context = ssl.create_default_context(cafile=str(certs[0]))

    async def echo(conn: RelayedConnection) -> None:
        async for message in conn:
            await conn.send(message)

    async def hello(request):
        return b"secure " + await request.read()

    cs = gw.connection_string("secure")  # sb:// means wss:// and https:// by default, as on Azure
    async with (
        HybridConnectionListener(cs, ssl=context, connection_handler=echo, request_handler=hello),
        HybridConnectionClient(cs, ssl=context) as client,
    ):
        conn = await within(client.connect())
        await conn.send("over tls")
        assert await within(conn.recv()) == "over tls"
        await conn.close()
        response = await within(client.request("POST", body=b"http"))
        assert (response.status, response.body) == (200, b"secure http")
