"""Serve the Calculator from a migrated ``host.toml``, on both layers of the gateway.

* **legacy** endpoints (basicHttp, ws2007Http, webHttp, netOneway, netEvent) go on one
  :class:`~wcfrelay.service.host.RelayServiceHost`, each with ``plan.relay_binding()`` and ``plan.registry_settings()``;
* **hybrid** endpoints (what NetTcpRelayBinding became) get a :class:`~hybrid.client.HybridConnectionListener` on the
  hybrid connection ``plan.path`` that runs the service's SOAP 1.2 application on every WebSocket message (one
  envelope per message; the reply goes back on the same WebSocket) and on every relayed HTTP request.

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

from hybrid.client import HybridConnectionListener, RelayedHttpRequest, RelayedHttpResponse
from samples.calculator import service as calculator
from wcfrelay.migrate import EndpointPlan, HostConfig, endpoints_from_app_config, load_host_config
from wcfrelay.service.host import RelayServiceHost
from wcfrelay.service.spyne_app import SpyneBytesApp

__all__ = ["PROTOCOLS", "SERVICES", "SoapOverHybrid", "application_for", "build_hybrid_listeners",
           "build_legacy_host", "main", "serve"]

log = logging.getLogger("samples.migration")

#: the WCF service type named in the configuration → a factory of its Spyne application for one protocol
SERVICES: dict[str, Callable[..., Any]] = {
    "Samples.Calculator.CalculatorService": calculator.make_application,
}
#: the Spyne protocol each of our bindings needs
PROTOCOLS = {"basicHttp": "soap11", "ws2007Http": "soap12", "webHttp": "http", "netOneway": "soap12",
             "netEvent": "soap12", "hybridConnection": "soap12"}
SOAP12 = "application/soap+xml; charset=utf-8"
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


def build_legacy_host(endpoints: list[EndpointPlan], connection_string: str, *, endpoint: str | None = None,
                      tls: bool | None = None, **options: Any) -> RelayServiceHost | None:
    """One RelayServiceHost for the legacy-layer endpoints (None if there are none)."""
    legacy = [p for p in endpoints if p.layer == "legacy"]
    if not legacy:
        return None
    host = RelayServiceHost(connection_string, endpoint=endpoint, tls=tls, **options)
    for plan in legacy:
        host.add_endpoint(application_for(plan), plan.path, plan.relay_binding(), plan.registry_settings())
    return host


class SoapOverHybrid:
    """A hybrid endpoint: SOAP 1.2 over a hybrid connection, as WebSocket messages or relayed HTTP requests."""

    def __init__(self, plan: EndpointPlan, public_base: str) -> None:
        self.plan = plan
        limit = plan.max_message or 16 * 1024 * 1024
        self.app = SpyneBytesApp(application_for(plan), max_request_size=limit, ws_addressing=False)
        self.public_url = f"{public_base.rstrip('/')}/{plan.path}"

    async def handle_request(self, request: RelayedHttpRequest) -> RelayedHttpResponse:
        body = await request.read()
        result = await asyncio.to_thread(
            self.app.handle, body, content_type=request.headers.get("Content-Type", SOAP12),
            soap_action=request.headers.get("SOAPAction"), http_method=request.method, query_string=request.query,
            path=request.suffix or "/", public_url=self.public_url)
        return RelayedHttpResponse(result.status, headers={"Content-Type": result.content_type}, body=result.body)

    async def handle_connection(self, conn: Any) -> None:
        """Each message is one SOAP 1.2 envelope; each answer goes back as one message (none for one-way calls).
        A duplex contract's callbacks would be more messages from the service on the same WebSocket."""
        async for message in conn:
            data = message.encode("utf-8") if isinstance(message, str) else message
            result = await asyncio.to_thread(self.app.handle, data, content_type=SOAP12)
            if result.one_way or not result.body:
                continue
            await conn.send(result.body.decode("utf-8") if isinstance(message, str) else result.body)


def build_hybrid_listeners(endpoints: list[EndpointPlan], connection_string: str, *, tls: bool | None = None,
                           public_base: str = "http://127.0.0.1:9351", **options: Any) -> list[HybridConnectionListener]:
    listeners = []
    for plan in endpoints:
        if plan.layer != "hybrid":
            continue
        handler = SoapOverHybrid(plan, public_base)
        listeners.append(HybridConnectionListener(connection_string, entity_path=plan.path, tls=tls,
                                                  request_handler=handler.handle_request,
                                                  connection_handler=handler.handle_connection, **options))
    return listeners


def _public_base(endpoint: str | None, connection_string: str, tls: bool | None) -> str:
    """``http(s)://host:port`` of the gateway, for the WSDL's address."""
    from urllib.parse import urlsplit

    from hybrid.auth import ConnectionString

    url = endpoint or ConnectionString.parse(connection_string).endpoint
    secure = _tls(url, True) if tls is None else tls
    return f"{'https' if secure else 'http'}://{urlsplit(url).netloc}"


async def serve(endpoints: list[EndpointPlan], connection_string: str, *, endpoint: str | None = None,
                tls: bool | None = None, stop: asyncio.Event | None = None,
                ready: asyncio.Event | None = None) -> None:
    """Open everything, report, and run until ``stop`` is set (or the task is cancelled). ``tls`` None follows the
    scheme of ``endpoint`` (host.toml's ``[host] endpoint``), else of the connection string (sb:// means TLS)."""
    if tls is None and endpoint:
        tls = _tls(endpoint, True)
    public_base = _public_base(endpoint, connection_string, tls)
    host = build_legacy_host(endpoints, connection_string, endpoint=endpoint, tls=tls)
    listeners = build_hybrid_listeners(endpoints, connection_string, tls=tls, public_base=public_base)
    stop = stop or asyncio.Event()
    try:
        if host is not None:
            await host.open()
            for ep in host.endpoints:
                print(f"legacy  {ep.http_url} ({ep.binding.name})", flush=True)
        for listener in listeners:
            await listener.open()
            print(f"hybrid  {listener.address.entity} (SOAP 1.2 over a hybrid connection)", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for listener in listeners:
            await listener.close()
        if host is not None:
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
