"""Run a gateway node: TLS, listening sockets, the connection-string lines, signals."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from aiohttp import web

from ..errors import ConfigError
from .app import Extension, Gateway
from .config import GatewayConfig
from .front import HttpFrontEnd
from .tls import ensure_dev_certificate, server_ssl_context

__all__ = ["connection_strings", "is_loopback", "run_gateway", "serve"]

log = logging.getLogger("hybrid.gateway")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _display_host(host: str) -> str:
    return "localhost" if host in ("", "0.0.0.0", "::") else host


def connection_strings(config: GatewayConfig, port: int) -> list[str]:
    """One Azure-format line per namespace rule: ``Endpoint=sb://HOST:PORT/;SharedAccessKeyName=…;SharedAccessKey=…``."""
    host = _display_host(config.host)
    if ":" in host:
        host = f"[{host}]"
    return [f"Endpoint=sb://{host}:{port}/;SharedAccessKeyName={rule.name};SharedAccessKey={rule.primary_key}"
            for rule in config.rules]


def tls_context(config: GatewayConfig) -> ssl.SSLContext | None:
    if config.tls_cert and config.tls_key:
        return server_ssl_context(config.tls_cert, config.tls_key)
    if config.dev_tls:
        cert, key = ensure_dev_certificate(config.state_dir)
        log.info("development TLS certificate: %s (trust it with NODE_EXTRA_CA_CERTS or SSL_CERT_FILE)", cert)
        return server_ssl_context(cert, key)
    return None


async def serve(gateway: Gateway, *, out: TextIO = sys.stdout, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever)."""
    config = gateway.config
    context = tls_context(config)
    if context is None and not is_loopback(config.host):
        log.warning("!" * 78)
        log.warning("GATEWAY BOUND TO %s WITHOUT TLS: tokens and traffic cross the network in clear text.",
                    config.host)
        log.warning("Use --tls-cert/--tls-key (or --dev-tls for testing) before exposing it.")
        log.warning("!" * 78)
    app = gateway.make_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    fallback = runner.server
    assert fallback is not None
    # Every connection meets the front end first; it relays simple HTTP requests and hands the rest to aiohttp.
    server = await asyncio.get_running_loop().create_server(
        lambda: HttpFrontEnd(gateway, fallback), config.host or None, config.port,
        ssl=context, backlog=1024, reuse_address=True)
    port = server.sockets[0].getsockname()[1] if server.sockets else config.port
    scheme = "https/wss" if context else "http/ws"
    log.info("gateway listening on %s:%d (%s)", config.host, port, scheme)
    node_url = config.public_url or f"{'https' if context else 'http'}://{_url_host(config.host)}:{port}"
    if config.redis_url and not config.public_url and config.host in ("", "0.0.0.0", "::"):
        server.close()
        await runner.cleanup()
        raise ConfigError("a cluster node bound to every interface needs --public-url: the address other nodes' "
                          "senders make listeners open rendezvous sockets to")
    await gateway.start(node_url)
    for line in connection_strings(config, port):
        print(line, file=out)
    print(f"Gateway ready on {'https' if context else 'http'}://{_display_host(config.host)}:{port}/", file=out,
          flush=True)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        server.close()
        await runner.cleanup()
        await gateway.stop()


def run_gateway(config: GatewayConfig, extensions: Sequence[Callable[[Gateway], Extension]] = ()) -> int:
    """Blocking entry point for the command line. Ctrl-C or SIGTERM stops it cleanly.

    ``extensions`` are factories called with the gateway (the WCF-style relay layer is one).
    """
    gateway = Gateway(config)
    for factory in extensions:
        gateway.extensions.append(factory(gateway))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        await serve(gateway, stop=stop)

    asyncio.run(main())
    return 0
