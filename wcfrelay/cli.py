"""The ``wcfrelay`` command: ``gateway``, ``token``, ``listen``, ``send``."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from hybrid.auth import ConnectionString, build_token
from hybrid.errors import ConfigError, RelayError

__all__ = ["build_parser", "main"]


def _add_gateway_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="run a gateway node",
                       description="Run a relay gateway. With no --config it serves a development namespace whose "
                                   "root key is kept in --state-dir and printed as a connection string.")
    p.add_argument("--config", help="TOML configuration file (see docs/configuration.md)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default 9351)")
    p.add_argument("--public-url", help="address clients use to reach this node, e.g. https://relay.example.com")
    p.add_argument("--state-dir", help="where the development key and certificate live (default .wcfrelay)")
    p.add_argument("--tls-cert", help="PEM certificate chain for wss/https")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--dev-tls", action="store_true", default=None,
                   help="serve wss/https with a self-signed certificate for localhost (kept in --state-dir)")
    p.add_argument("--redis-url", "--redis", dest="redis_url", help="redis:// URL of the cluster directory")
    p.add_argument("--node-id", help="name of this node in a cluster")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--uvloop", action="store_true",
                   help="run on uvloop (pip install 'wcfrelay[speed]'): faster bulk relaying, see bench/results")
    p.set_defaults(func=_cmd_gateway)


def _cmd_gateway(args: argparse.Namespace) -> int:
    from hybrid.gateway.config import GatewayConfig, apply_overrides, ensure_dev_rules, load_config
    from hybrid.gateway.server import run_gateway

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    config = load_config(args.config) if args.config else GatewayConfig()
    config = apply_overrides(config, host=args.host, port=args.port, public_url=args.public_url,
                             state_dir=args.state_dir, tls_cert=args.tls_cert, tls_key=args.tls_key,
                             dev_tls=args.dev_tls, redis_url=args.redis_url, node_id=args.node_id)
    config = ensure_dev_rules(config)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            raise ConfigError("--uvloop needs the uvloop package: pip install 'wcfrelay[speed]'") from None
        uvloop.install()
    from .gateway import WcfRelayExtension

    return run_gateway(config, extensions=[WcfRelayExtension])


def _add_token_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="print a SAS token",
                       description="Print a Shared Access Signature token for a resource, signed with a rule's key.")
    p.add_argument("--connection-string", help="Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]")
    p.add_argument("--entity", help="hybrid connection (default: the connection string's EntityPath)")
    p.add_argument("--key-name", help="rule name (instead of a connection string)")
    p.add_argument("--key", help="rule key (instead of a connection string)")
    p.add_argument("--resource", help="audience URI, e.g. http://host:port/myhc (instead of a connection string)")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    p.set_defaults(func=_cmd_token)


def _cmd_token(args: argparse.Namespace) -> int:
    if args.ttl <= 0 or args.ttl > 10 * 365 * 86400:
        raise ConfigError("--ttl must be between 1 second and 10 years")
    if args.connection_string:
        cs = ConnectionString.parse(args.connection_string)
        if not cs.key_name or not cs.key:
            raise ConfigError("the connection string has no SharedAccessKeyName/SharedAccessKey")
        host = cs.endpoint.split("://", 1)[1].rstrip("/")
        entity = args.entity or cs.entity_path or ""
        resource = f"http://{host}/{entity}"
        key_name, key = cs.key_name, cs.key
    else:
        if not (args.key_name and args.key and args.resource):
            raise ConfigError("give --connection-string, or all of --key-name, --key and --resource")
        resource, key_name, key = args.resource, args.key_name, args.key
    print(build_token(resource, key_name, key, int(time.time()) + args.ttl))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wcfrelay", description="Self-hostable relay gateway and tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_gateway_parser(sub)
    _add_token_parser(sub)
    try:
        from . import cli_client
    except ImportError:  # pragma: no cover - the SDK commands are optional at import time
        cli_client = None  # type: ignore[assignment]
    if cli_client is not None:
        cli_client.add_listen_parser(sub)
        cli_client.add_send_parser(sub)
    from .forward import add_forward_parser
    from .migrate.cli import add_migrate_parser

    add_forward_parser(sub)
    add_migrate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RelayError) as exc:
        print(f"wcfrelay {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
