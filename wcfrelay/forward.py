"""``wcfrelay forward --to URL --path PATH``: put an existing SOAP-over-HTTP service behind the relay, unchanged.

The command runs a :class:`~wcfrelay.service.host.RelayServiceHost` with one endpoint whose handler is a
:class:`~wcfrelay.service.forward.SoapForwarder`: it dials out to the gateway, and every request callers send to
``http(s)://gateway/PATH`` is forwarded to the service at ``--to`` and answered with the service's answer (WSDL
and XSD addresses rewritten to the relay's). ``--layer legacy`` (the default) uses a listener link with
``--binding`` (basicHttp: SOAP 1.1, ws2007Http: SOAP 1.2, webHttp: any HTTP); ``--layer hybrid`` listens on the
hybrid connection PATH (relayed HTTP streams both ways, and SOAP envelopes may also come over a hybrid WebSocket).

Two ways in:

* ``add_forward_parser(subparsers)`` adds ``forward`` to the ``wcfrelay`` parser; its handler raises
  :class:`~hybrid.errors.ConfigError` on bad input, which ``wcfrelay.cli.main`` turns into exit status 2.
* ``main(argv)`` (``python -m wcfrelay.forward …``) runs it on its own: 0 after Ctrl-C/SIGTERM, 1 when the host
  could not connect or gave up, 2 with a message on stderr for bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from hybrid.errors import ConfigError, RelayError

__all__ = ["ENV_VAR", "add_forward_parser", "build_parser", "main", "run_forward"]

ENV_VAR = "WCFRELAY_CONNECTION_STRING"
DESCRIPTION = ("Forward a relay endpoint to an existing SOAP-over-HTTP service (WCF or any other) without changing "
               "it: the host dials out to the gateway, and every request to http(s)://gateway/PATH goes to the "
               "service at --to; WSDL and XSD addresses in its answers are rewritten to the relay's.")
LEGACY_BINDINGS = ("basicHttp", "ws2007Http", "webHttp")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return value


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--to", required=True, metavar="URL",
                        help="the service's own address, e.g. http://localhost:8080/Service.svc")
    parser.add_argument("--path", required=True,
                        help="the relay path callers use (http(s)://gateway/PATH), or sb://host[:port]/PATH")
    parser.add_argument("--layer", choices=("legacy", "hybrid"), default="legacy",
                        help="legacy: a WCF-style relay binding (default); hybrid: the hybrid connection PATH")
    parser.add_argument("--binding", choices=LEGACY_BINDINGS, default="basicHttp",
                        help="the legacy binding: basicHttp (SOAP 1.1, default), ws2007Http (SOAP 1.2), webHttp")
    parser.add_argument("--connection-string", default=os.environ.get(ENV_VAR), metavar="CS",
                        help=f"Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=… with the Listen right "
                             f"(default: ${ENV_VAR})")
    parser.add_argument("--plaintext", action="store_true", help="ws:// to a local gateway without TLS")
    parser.add_argument("--public-url", metavar="URL",
                        help="the gateway's address as callers see it, for rewritten WSDLs on the hybrid layer "
                             "(default: the address each caller used)")
    parser.add_argument("--client-auth", choices=("relayAccessToken", "none"), default="relayAccessToken",
                        help="legacy layer: whether callers need a Send token (default relayAccessToken)")
    parser.add_argument("--discovery", choices=("private", "public"), default="private",
                        help="legacy layer: list the endpoint in the gateway's feed (default private)")
    parser.add_argument("--display-name", help="the title in the discovery feed (default: the last path segment)")
    parser.add_argument("--max-message", type=_positive_int, metavar="BYTES",
                        help="largest request or answer (default 16 MiB)")
    parser.add_argument("--timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                        help="how long to wait for the service's answer (default 60)")
    parser.add_argument("--soap-version", choices=("1.1", "1.2"),
                        help="SOAP version of the faults the forwarder writes when a request's content type names "
                             "none (default: the binding's)")
    parser.add_argument("--no-rewrite", action="store_true", help="pass WSDL/XSD documents through unchanged")
    parser.add_argument("--insecure-target", action="store_true",
                        help="do not verify the TLS certificate of an https:// service")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(func=run_forward)
    return parser


def add_forward_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``forward`` to a ``wcfrelay`` sub-command parser."""
    parser = subparsers.add_parser("forward", help="forward a relay endpoint to an existing SOAP/HTTP service",
                                   description=DESCRIPTION)
    return _configure(parser)


def build_parser() -> argparse.ArgumentParser:
    return _configure(argparse.ArgumentParser(prog="wcfrelay forward", description=DESCRIPTION))


def _probe(target: str, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to the service opens, else why not (a warning: it may come up later)."""
    parts = urlsplit(target)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def run_forward(args: argparse.Namespace) -> int:
    """Run the forwarder until Ctrl-C/SIGTERM. Raises ConfigError for bad input (nothing is started then)."""
    from wcfrelay.bindings import HybridConnectionRelayBinding, RelayBinding, ServiceRegistrySettings, binding_for
    from wcfrelay.service.forward import SoapForwarder, check_target
    from wcfrelay.service.host import RelayServiceHost

    target = check_target(args.to)
    if not args.connection_string:
        raise ConfigError(f"give --connection-string or set {ENV_VAR} (a connection string with the Listen right)")
    options = {"client_authentication": args.client_auth, "max_received_message_size": args.max_message}
    if args.layer == "hybrid":
        binding: RelayBinding = HybridConnectionRelayBinding(**options)  # type: ignore[arg-type]
        if args.discovery == "public":
            raise ConfigError("--discovery public: hybrid connections are never listed in the discovery feed")
    else:
        binding = binding_for(args.binding, **options)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    host = RelayServiceHost(args.connection_string, tls=False if args.plaintext else None,
                            public_url=args.public_url)
    forwarder = SoapForwarder(target, timeout=args.timeout, rewrite_metadata=not args.no_rewrite,
                              soap_version=args.soap_version, ssl=False if args.insecure_target else None)
    endpoint = host.add_endpoint(forwarder, args.path, binding,
                                 ServiceRegistrySettings(args.discovery, args.display_name or ""))

    def report(text: str):
        return lambda: print(f"status: {text}", flush=True)

    host.on_online, host.on_connecting, host.on_offline = report("Online"), report("Connecting"), report("Offline")
    print(f"forwarding {endpoint.http_url} ({binding.name}) -> {target}", flush=True)
    problem = _probe(target)
    if problem is not None:
        logging.getLogger("wcfrelay.forward").warning(
            "the service at %s cannot be reached now (%s); callers get a 502 fault until it can", target, problem)
    code = host.run()
    if code and host.last_error is not None:
        print(f"wcfrelay forward: error: {host.last_error}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wcfrelay.forward …`` (``argv`` may start with ``"forward"``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "forward":
        args_list = args_list[1:]
    args = build_parser().parse_args(args_list)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RelayError) as exc:
        print(f"wcfrelay forward: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
