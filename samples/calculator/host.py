"""Host the Calculator behind a relay gateway: it dials out, so it needs no inbound port.

Five endpoints: four as a WCF Relay service would expose them, and the same service on a hybrid connection:

=====================  ============================  =====================================================
path                   binding                       who calls it
=====================  ============================  =====================================================
``calculator``         BasicHttpRelayBinding         zeep, suds, WCF BasicHttpBinding, raw SOAP 1.1
``calculator/ws``      WS2007HttpRelayBinding        SOAP 1.2 + WS-Addressing callers (security None)
``calculator/log``     NetOnewayRelayBinding         one-way Log/Notify messages, one receiver
``calculator/events``  NetEventRelayBinding          one-way Notify to every host listening
``calculator-hc``      HybridConnectionRelayBinding  SOAP 1.2 over relayed HTTP (``…/calculator-hc?wsdl``),
                                                     and over one hybrid WebSocket with many calls in flight
                                                     and callbacks (``samples.calculator.caller_websocket``)
=====================  ============================  =====================================================

The hybrid connection ``calculator-hc`` is created on first listen by a development gateway; a gateway with a
declared namespace must declare it.

Run it (the connection string needs a rule with the Listen claim)::

    python -m samples.calculator.host "Endpoint=sb://127.0.0.1:9351/;SharedAccessKeyName=…;SharedAccessKey=…" --plaintext
    WCFRELAY_CONNECTION_STRING="Endpoint=…" python -m samples.calculator.host --plaintext

``--plaintext`` talks ``ws://`` to a local gateway started without TLS. The BasicHttp endpoint is public (listed
in the gateway's feed at ``GET /``); the others are private. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from samples.calculator import service as calculator
from wcfrelay.bindings import (
    BasicHttpRelayBinding,
    HybridConnectionRelayBinding,
    NetEventRelayBinding,
    NetOnewayRelayBinding,
    ServiceRegistrySettings,
    WS2007HttpRelayBinding,
)
from wcfrelay.service.host import RelayServiceHost

__all__ = ["HYBRID_PATH", "build_host", "main"]

ENV_VAR = "WCFRELAY_CONNECTION_STRING"
#: the hybrid connection the Calculator also listens on
HYBRID_PATH = "calculator-hc"


def build_host(connection_string: str, *, plaintext: bool = False, **host_options: object) -> RelayServiceHost:
    """The Calculator's five endpoints on one host (``host_options`` go to RelayServiceHost)."""
    host = RelayServiceHost(connection_string, tls=False if plaintext else None, **host_options)  # type: ignore[arg-type]
    host.add_endpoint(calculator.make_application("soap11"), "calculator", BasicHttpRelayBinding(),
                      ServiceRegistrySettings("public", "Calculator (BasicHttp)"))
    host.add_endpoint(calculator.make_application("soap12"), "calculator/ws", WS2007HttpRelayBinding(),
                      ServiceRegistrySettings("private"))
    host.add_endpoint(calculator.make_application("soap12"), "calculator/log", NetOnewayRelayBinding())
    host.add_endpoint(calculator.make_application("soap12"), "calculator/events", NetEventRelayBinding())
    host.add_endpoint(calculator.make_application("soap12"), HYBRID_PATH, HybridConnectionRelayBinding())
    return host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.calculator.host", description=__doc__.split("\n")[0])
    parser.add_argument("connection_string", nargs="?", default=os.environ.get(ENV_VAR),
                        help=f"Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=… (default: ${ENV_VAR})")
    parser.add_argument("--plaintext", action="store_true", help="ws:// instead of wss:// (a local gateway)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error(f"give a connection string or set {ENV_VAR}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Spyne logs every fault a service raises with a traceback; Fail raises on purpose.
    logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)

    host = build_host(args.connection_string, plaintext=args.plaintext)

    def report(text: str):
        return lambda: print(f"status: {text}", flush=True)

    host.on_online, host.on_connecting, host.on_offline = report("Online"), report("Connecting"), report("Offline")
    for endpoint in host.endpoints:
        print(f"endpoint {endpoint.http_url} ({endpoint.binding.name})", flush=True)
    code = host.run()
    if code and host.last_error is not None:
        print(f"error: {host.last_error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
