"""Call the Calculator's former NetTcpRelayBinding endpoint, now a hybrid connection, in both ways it is served.

    export WCFRELAY_CONNECTION_STRING="Endpoint=sb://127.0.0.1:9351/;SharedAccessKeyName=calculator-send;SharedAccessKey=…"
    python -m samples.migration.call_hybrid --plaintext

* over a hybrid WebSocket: one SOAP 1.2 envelope per message, the answer comes back as one message;
* as a relayed HTTP request: ``POST http(s)://gateway/calculator/tcp`` with the envelope as the body.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys

from hybrid.client import HybridConnectionClient

__all__ = ["add_envelope", "call_over_http", "call_over_websocket", "main"]

ENV_VAR = "WCFRELAY_CONNECTION_STRING"
TNS = "http://tempuri.org/"


def add_envelope(a: int, b: int) -> str:
    """A SOAP 1.2 request for ``ICalculator.Add`` (the Calculator's namespace is WCF's default, tempuri.org)."""
    return ('<soap12:Envelope xmlns:soap12="http://www.w3.org/2003/05/soap-envelope">'
            f'<soap12:Body><Add xmlns="{TNS}"><a>{int(a)}</a><b>{int(b)}</b></Add></soap12:Body>'
            "</soap12:Envelope>")


def result_of(envelope: str | bytes) -> int:
    text = envelope.decode("utf-8") if isinstance(envelope, bytes) else envelope
    match = re.search(r"<(?:\w+:)?AddResult[^>]*>(-?\d+)</", text)
    if not match:
        raise ValueError("no AddResult in the answer: " + text[:300])
    return int(match[1])


async def call_over_websocket(client: HybridConnectionClient, a: int, b: int) -> int:
    conn = await client.connect()
    try:
        await conn.send(add_envelope(a, b))
        return result_of(await conn.recv())
    finally:
        await conn.close(1000, "done")


async def call_over_http(client: HybridConnectionClient, a: int, b: int) -> int:
    response = await client.request("POST", headers={"Content-Type": "application/soap+xml; charset=utf-8"},
                                     body=add_envelope(a, b).encode("utf-8"))
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.body[:300]!r}")
    return result_of(response.body)


async def _run(connection_string: str, path: str, plaintext: bool) -> None:
    async with HybridConnectionClient(connection_string, entity_path=path,
                                      tls=False if plaintext else None) as client:
        print("WebSocket Add(2, 40) =", await call_over_websocket(client, 2, 40))
        print("HTTP      Add(20, 22) =", await call_over_http(client, 20, 22))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.migration.call_hybrid", description=__doc__.split("\n")[0])
    parser.add_argument("connection_string", nargs="?", default=os.environ.get(ENV_VAR),
                        help=f"a connection string with the Send right (default: ${ENV_VAR})")
    parser.add_argument("--path", default="calculator-tcp", help="the hybrid connection (default calculator-tcp)")
    parser.add_argument("--plaintext", action="store_true", help="ws:// and http:// to a local gateway without TLS")
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error(f"give a connection string or set {ENV_VAR}")
    asyncio.run(_run(args.connection_string, args.path, args.plaintext))
    return 0


if __name__ == "__main__":
    sys.exit(main())
