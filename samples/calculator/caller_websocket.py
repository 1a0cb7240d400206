"""Call the Calculator with SOAP on ONE hybrid WebSocket: many calls in flight, and a callback from the service.

    python -m samples.calculator.caller_websocket "Endpoint=sb://127.0.0.1:9351/;SharedAccessKeyName=…;SharedAccessKey=…" --plaintext

The host (``python -m samples.calculator.host``) serves the Calculator on the hybrid connection ``calculator-hc``
with :class:`~wcfrelay.bindings.HybridConnectionRelayBinding`. This caller loads the WSDL over relayed HTTP
(``http(s)://gateway/calculator-hc?wsdl``) and then sends every call as a SOAP 1.2 envelope on one hybrid WebSocket
(:func:`wcfrelay.client.websocket_transport.hybrid_websocket_zeep_client`): Add, Echo, Fail (a SOAP fault),
``--calls`` concurrent Adds correlated by WS-Addressing MessageID/RelatesTo, and AddAndReport, during which the
service calls the caller back (``Equation``) over the same socket. ``--http`` also makes the same calls over relayed
HTTP, to show that both give the same results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import zeep.exceptions

from samples.calculator import service as calculator
from samples.calculator.caller import base_url
from samples.calculator.host import HYBRID_PATH
from wcfrelay.client import relay_zeep_client
from wcfrelay.client.websocket_transport import CallbackMessage, hybrid_websocket_zeep_client

__all__ = ["main", "run"]

ENV_VAR = "WCFRELAY_CONNECTION_STRING"


async def run(connection_string: str, base: str, *, path: str = HYBRID_PATH, calls: int = 100) -> list[str]:
    """Make the calls; returns the lines to print."""
    lines: list[str] = []
    equations: list[str] = []

    def on_equation(message: CallbackMessage) -> None:
        equations.append(calculator.equation_of(message.body) or "")

    client = hybrid_websocket_zeep_client(f"{base}/{path}?wsdl", connection_string=connection_string,
                                          callbacks={calculator.EQUATION_ACTION: on_equation})
    async with client:
        lines.append(f"Add(2, 40) = {await client.service.Add(2, 40)}")
        lines.append(f"Echo('hello') = {await client.service.Echo('hello')}")
        try:
            await client.service.Fail("on purpose")
        except zeep.exceptions.Fault as fault:
            lines.append(f"Fail -> SOAP fault {fault.code}: {fault.message}")
        began = time.perf_counter()
        results = await asyncio.gather(*(client.service.Add(i, 1000 * i) for i in range(calls)))
        rate = calls / (time.perf_counter() - began)
        correct = sum(result == 1001 * i for i, result in enumerate(results))
        lines.append(f"{calls} concurrent Add calls on one WebSocket: {correct} correct ({rate:.0f} calls/s)")
        total = await client.service.AddAndReport(20, 22)
        lines.append(f"AddAndReport(20, 22) = {total}; callback Equation: {', '.join(equations) or 'none'}")
        lines.append(f"WebSockets opened: {client.transport.connections_opened}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.calculator.caller_websocket",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("connection_string", nargs="?", default=os.environ.get(ENV_VAR),
                        help=f"Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=… (default: ${ENV_VAR})")
    parser.add_argument("--plaintext", action="store_true", help="ws:// and http:// (a local gateway without TLS)")
    parser.add_argument("--path", default=HYBRID_PATH, help=f"the hybrid connection (default {HYBRID_PATH})")
    parser.add_argument("--calls", type=int, default=100, help="how many concurrent Add calls (default 100)")
    parser.add_argument("--http", action="store_true", help="also call over relayed HTTP and compare")
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error(f"give a connection string or set {ENV_VAR}")
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    base = base_url(args.connection_string, plaintext=args.plaintext)
    for line in asyncio.run(run(args.connection_string, base, path=args.path, calls=args.calls)):
        print(line)
    if args.http:
        client = relay_zeep_client(f"{base}/{args.path}?wsdl", connection_string=args.connection_string)
        print(f"HTTP Add(2, 40) = {client.service.Add(2, 40)}")
        print(f"HTTP Echo('hello') = {client.service.Echo('hello')}")
        try:
            client.service.Fail("on purpose")
        except zeep.exceptions.Fault as fault:
            print(f"HTTP Fail -> SOAP fault {fault.code}: {fault.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
