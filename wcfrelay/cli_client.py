"""``wcfrelay listen`` and ``wcfrelay send``: a hybrid-connection echo listener and a one-shot sender.

Both take ``--connection-string`` (or the ``WCFRELAY_CONNECTION_STRING`` environment variable) and ``--entity``
when the string has no ``EntityPath``. ``--ws`` (alias ``--insecure``) talks plain ``ws://``/``http://`` to a local
gateway; without it the scheme is ``wss://``/``https://`` as with Azure Relay.

Wire them into an argparse program with :func:`add_listen_parser` and :func:`add_send_parser`; each sets
``func`` on its sub-parser to a function taking the parsed namespace and returning an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable
from typing import Any, TextIO

from hybrid.client import (
    HybridConnectionClient,
    HybridConnectionListener,
    RelayedConnection,
    RelayedHttpRequest,
    RelayedHttpResponse,
)
from hybrid.client.status import error_for_status
from hybrid.errors import RelayError

__all__ = [
    "ENV_CONNECTION_STRING",
    "add_listen_parser",
    "add_send_parser",
    "run_listen",
    "run_send",
    "send_once",
    "serve_echo",
]

ENV_CONNECTION_STRING = "WCFRELAY_CONNECTION_STRING"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connection-string",
        default=None,
        help=f"Endpoint=sb://host[:port]/;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…] "
        f"(default: ${ENV_CONNECTION_STRING})",
    )
    parser.add_argument("--entity", default=None, help="hybrid connection name, if the string has no EntityPath")
    parser.add_argument(
        "--ws",
        "--insecure",
        dest="plaintext",
        action="store_true",
        help="plain ws:// and http:// (a local gateway without TLS)",
    )
    parser.add_argument("--cafile", default=None, help="PEM file of CA certificates to trust for wss/https")
    parser.add_argument("-v", "--verbose", action="store_true", help="log protocol events to stderr")


def add_listen_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``listen``: an echo listener for WebSocket senders and HTTP requests."""
    parser = subparsers.add_parser(
        "listen",
        help="run an echo listener on a hybrid connection",
        description="Echo every WebSocket message back to its sender and answer every HTTP request with its "
        "own body (and a JSON summary when the body is empty). Stops on Ctrl-C.",
    )
    _add_common(parser)
    parser.set_defaults(func=run_listen)
    return parser


def add_send_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``send``: connect, send one message (``--message`` or stdin), print the reply."""
    parser = subparsers.add_parser(
        "send",
        help="send one message to a hybrid connection and print the reply",
        description="Open a relayed WebSocket, send one text message, print the first reply. With --http, send "
        "an HTTP request instead and print the response body.",
    )
    _add_common(parser)
    parser.add_argument("--message", "-m", default=None, help="the message (default: read stdin)")
    parser.add_argument("--suffix", default="", help="path after the entity name, e.g. /room/1")
    parser.add_argument("--query", default="", help="query string for the listener, e.g. a=1&b=2")
    parser.add_argument("--http", action="store_true", help="send an HTTP request instead of a WebSocket message")
    parser.add_argument("--method", default=None, help="HTTP method (default: POST with a message, GET without)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply")
    parser.set_defaults(func=run_send)
    return parser


def _connection_string(args: argparse.Namespace) -> str:
    text = args.connection_string or os.environ.get(ENV_CONNECTION_STRING)
    if not text:
        raise SystemExit(f"error: give --connection-string or set {ENV_CONNECTION_STRING}")
    return text


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=args.cafile) if args.cafile else None


def _setup_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)


# -- listen -----------------------------------------------------------------------------------------


async def _echo_connection(conn: RelayedConnection) -> None:
    async for message in conn:
        await conn.send(message)


async def _echo_request(request: RelayedHttpRequest) -> RelayedHttpResponse:
    body = await request.read()
    if body:
        content_type = request.headers.get("Content-Type", "application/octet-stream")
        return RelayedHttpResponse(200, headers={"Content-Type": content_type}, body=body)
    summary = {"method": request.method, "target": request.target, "suffix": request.suffix, "query": request.query}
    return RelayedHttpResponse(200, headers={"Content-Type": "application/json"}, body=json.dumps(summary))


async def serve_echo(
    connection_string: str,
    *,
    entity: str | None = None,
    plaintext: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run the echo listener until ``stop`` is set; print status changes to ``out``. Returns an exit status.

    ``ready`` is set once the listener is online.
    """
    stop = stop or asyncio.Event()

    def report(text: str) -> Callable[[], None]:
        return lambda: print(text, file=out, flush=True)

    listener = HybridConnectionListener(
        connection_string,
        entity_path=entity,
        tls=False if plaintext else None,
        ssl=ssl_context,
        connection_handler=_echo_connection,
        request_handler=_echo_request,
        on_online=report("status: Online"),
        on_connecting=report("status: Connecting"),
        on_offline=report("status: Offline"),
    )
    try:
        await listener.open()
    except RelayError as exc:
        print(f"error: cannot listen on {listener.address.sb_uri}: {exc}", file=sys.stderr)
        return 1
    print(f"listening on {listener.address.sb_uri}", file=out, flush=True)
    if ready is not None:
        ready.set()
    stopper = asyncio.ensure_future(stop.wait())
    gave_up = asyncio.ensure_future(listener.accept_connection())  # returns None once the listener is offline
    try:
        await asyncio.wait({stopper, gave_up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        gave_up.cancel()
        await listener.close()
    if not stop.is_set():
        print(f"error: listener went offline: {listener.last_error}", file=sys.stderr)
        return 1
    return 0


def run_listen(args: argparse.Namespace) -> int:
    """Entry point of ``wcfrelay listen``."""
    _setup_logging(args)
    connection_string = _connection_string(args)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
                pass
        return await serve_echo(
            connection_string, entity=args.entity, plaintext=args.plaintext, ssl_context=_ssl_context(args), stop=stop
        )

    return asyncio.run(main())


# -- send -------------------------------------------------------------------------------------------


async def send_once(
    connection_string: str,
    message: str | None,
    *,
    entity: str | None = None,
    plaintext: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    suffix: str = "",
    query: str = "",
    http: bool = False,
    method: str | None = None,
    timeout: float = 30.0,
) -> str | bytes:
    """Send one message (WebSocket) or one request (``http=True``) and return the reply.

    For HTTP, a status of 400 or more raises the matching ``hybrid.errors`` exception.
    """
    client = HybridConnectionClient(
        connection_string, entity_path=entity, tls=False if plaintext else None, ssl=ssl_context
    )
    async with client:
        if http:
            verb = method or ("POST" if message else "GET")
            response = await client.request(verb, suffix, query, body=(message or "").encode("utf-8"), timeout=timeout)
            if response.status >= 400:
                raise error_for_status(response.status, response.reason, body=response.body)
            return response.body
        conn = await asyncio.wait_for(client.connect(suffix, query), timeout)
        try:
            await conn.send(message or "")
            return await asyncio.wait_for(conn.recv(), timeout)
        finally:
            await conn.close()


def run_send(args: argparse.Namespace) -> int:
    """Entry point of ``wcfrelay send``."""
    _setup_logging(args)
    connection_string = _connection_string(args)
    message = args.message if args.message is not None else sys.stdin.read()
    try:
        reply = asyncio.run(
            send_once(
                connection_string,
                message,
                entity=args.entity,
                plaintext=args.plaintext,
                ssl_context=_ssl_context(args),
                suffix=args.suffix,
                query=args.query,
                http=args.http,
                method=args.method,
                timeout=args.timeout,
            )
        )
    except (TimeoutError, RelayError) as exc:
        status = getattr(exc, "http_status", None)
        print(f"error: {exc}" + (f" (HTTP {status})" if status and str(status) not in str(exc) else ""),
              file=sys.stderr)
        return 1
    if isinstance(reply, bytes):
        try:
            text = reply.decode("utf-8")
        except UnicodeDecodeError:
            sys.stdout.buffer.write(reply)
            sys.stdout.flush()
            return 0
    else:
        text = reply
    print(text)
    return 0
