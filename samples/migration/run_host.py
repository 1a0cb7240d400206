"""Serve the Calculator from a migrated ``host.toml``, on both layers of the gateway, with one host.

Every endpoint goes on one :class:`~wcfrelay.service.host.RelayServiceHost` with ``plan.host_binding()`` and
``plan.registry_settings()``:

* **legacy** endpoints (basicHttp, ws2007Http, webHttp, netOneway, netEvent) get their WCF-style relay binding and a
  listener link each;
* **hybrid** endpoints (what NetTcpRelayBinding became, ``binding = "hybridConnection"``) get
  :class:`~wcfrelay.bindings.HybridConnectionRelayBinding`: the host listens on the hybrid connection ``plan.path``
  and runs the service's SOAP 1.2 application on every relayed HTTP request (``GET …?wsdl`` included) and on every
  message of a hybrid WebSocket (many calls in flight per socket, correlated by WS-Addressing, and callbacks).

Run it (the connection string must be for a gateway rule with the Listen right, e.g. ``calculator-listen``)::

    export WCFRELAY_CONNECTION_STRING="Endpoint=sb://127.0.0.1:9351/;SharedAccessKeyName=calculator-listen;SharedAccessKey=…"
    python -m samples.migration.run_host samples/migration/out/host.toml

The same works straight from the WCF file (``--app-config samples/migration/app.config``): the endpoints then come
from :func:`wcfrelay.migrate.endpoints_from_app_config`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from samples.calculator import service as calculator
from wcfrelay.migrate import EndpointPlan, HostConfig, endpoints_from_app_config, load_host_config
from wcfrelay.service.host import HybridEndpoint, RelayServiceHost

__all__ = ["PROTOCOLS", "SERVICES", "application_for", "build_host", "main", "serve"]

log = logging.getLogger("samples.migration")

#: the WCF service type named in the configuration → a factory of its Spyne application for one protocol
SERVICES: dict[str, Callable[..., Any]] = {
    "Samples.Calculator.CalculatorService": calculator.make_application,
}
#: the Spyne protocol each of our bindings needs
PROTOCOLS = {"basicHttp": "soap11", "ws2007Http": "soap12", "webHttp": "http", "netOneway": "soap12",
             "netEvent": "soap12", "hybridConnection": "soap12"}
ENV_VAR = "WCFRELAY_CONNECTION_STRING"


def application_for(plan: EndpointPlan) -> Any:
    """The Spyne application for an endpoint: its WCF service type, in the protocol its binding needs."""
    try:
        factory = SERVICES[plan.service]
    except KeyError:
        raise SystemExit(f"no Python implementation of service {plan.service!r} (endpoint {plan.path!r}); "
                         f"add it to SERVICES in {__name__}") from None
    return factory(PROTOCOLS[plan.binding or ""])


def _tls(url: str | None, default: bool) -> bool:
    if not url:
        return default
    return url.split("://", 1)[0].lower() in ("sb", "https", "wss")


def build_host(endpoints: list[EndpointPlan], connection_string: str, *, endpoint: str | None = None,
               tls: bool | None = None, **options: Any) -> RelayServiceHost:
    """One RelayServiceHost serving every migrated endpoint, legacy and hybrid alike."""
    host = RelayServiceHost(connection_string, endpoint=endpoint, tls=tls, **options)
    for plan in endpoints:
        if plan.hostable:
            host.add_endpoint(application_for(plan), plan.path, plan.host_binding(), plan.registry_settings())
    return host


async def serve(endpoints: list[EndpointPlan], connection_string: str, *, endpoint: str | None = None,
                tls: bool | None = None, stop: asyncio.Event | None = None,
                ready: asyncio.Event | None = None) -> None:
    """Open everything, report, and run until ``stop`` is set (or the task is cancelled). ``tls`` None follows the
    scheme of ``endpoint`` (host.toml's ``[host] endpoint``), else of the connection string (sb:// means TLS)."""
    if tls is None and endpoint:
        tls = _tls(endpoint, True)
    host = build_host(endpoints, connection_string, endpoint=endpoint, tls=tls)
    stop = stop or asyncio.Event()
    try:
        await host.open()
        for ep in host.endpoints:
            layer = "hybrid" if isinstance(ep, HybridEndpoint) else "legacy"
            print(f"{layer:<7} {ep.http_url} ({ep.binding.name})", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await host.close()


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m samples.migration.run_host", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("host_toml", nargs="?", help="the host.toml written by `wcfrelay migrate`")
    source.add_argument("--app-config", help="read the endpoints straight from a WCF app.config instead")
    parser.add_argument("--connection-string", default=os.environ.get(ENV_VAR),
                        help=f"a connection string with the Listen right (default: ${ENV_VAR})")
    parser.add_argument("--plaintext", action="store_true",
                        help="ws:// and http:// to a local gateway without TLS (with --app-config; host.toml says it)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)
    endpoint: str | None = None
    if args.host_toml:
        config: HostConfig = load_host_config(args.host_toml)
        endpoints = config.endpoints
        endpoint = config.endpoint
        connection_string = args.connection_string or config.connection_string()
    else:
        endpoints = endpoints_from_app_config(args.app_config)
        connection_string = args.connection_string
    if not connection_string:
        parser.error(f"give --connection-string or set {ENV_VAR}")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(endpoints, connection_string, endpoint=endpoint, tls=False if args.plaintext else None,
                    stop=stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
