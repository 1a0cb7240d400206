"""``wcfrelay migrate APP_CONFIG [--out DIR] [--force] [--public-url URL]``.

Two ways in:

* ``add_migrate_parser(subparsers)`` adds the ``migrate`` command to the ``wcfrelay`` parser. Its handler raises
  :class:`~hybrid.errors.ConfigError` on bad input, which ``wcfrelay.cli.main`` turns into exit status 2.
* ``main(argv)`` runs the command on its own (``argv`` may start with ``"migrate"`` or not) and returns the exit
  status: 0 on success, 2 with a message on stderr for any error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hybrid.errors import ConfigError

from .output import write_outputs
from .plan import MigrationPlan, plan_migration

__all__ = ["add_migrate_parser", "build_parser", "main", "run_migrate", "summary"]

DESCRIPTION = ("Read a WCF app.config or web.config that uses the Azure Relay bindings and write this project's "
               "configuration: gateway.toml (SAS rules with the keys found, mode 0600, and the hybrid connections to "
               "declare), host.toml (the service host's endpoints) and MIGRATION.md (endpoint by endpoint: what maps "
               "directly, what changes and what you must do).")


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("app_config", metavar="APP_CONFIG", help="the WCF app.config or web.config to read")
    parser.add_argument("--out", "-o", default=".", metavar="DIR",
                        help="folder for gateway.toml, host.toml and MIGRATION.md (default: the current folder)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--public-url", metavar="URL",
                        help="the gateway's address as clients see it (written to gateway.toml, used in the report)")
    parser.set_defaults(func=run_migrate)
    return parser


def add_migrate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``migrate`` to a ``wcfrelay`` sub-command parser."""
    parser = subparsers.add_parser("migrate", help="migrate a WCF Relay app.config/web.config",
                                   description=DESCRIPTION)
    return _configure(parser)


def build_parser() -> argparse.ArgumentParser:
    return _configure(argparse.ArgumentParser(prog="wcfrelay migrate", description=DESCRIPTION))


def _check_public_url(value: str | None) -> str | None:
    if value is None:
        return None
    from hybrid.gateway.config import GatewayConfig, apply_overrides

    # The gateway's own check, so whatever is accepted here loads in gateway.toml too.
    return apply_overrides(GatewayConfig(), public_url=value).public_url


def summary(plan: MigrationPlan) -> list[str]:
    """The short summary printed after a migration (no keys)."""
    services, clients = plan.services, plan.clients
    head = (f"Read {plan.source}: {len(services)} service endpoint{'s' if len(services) != 1 else ''}, "
            f"{len(clients)} client endpoint{'s' if len(clients) != 1 else ''}.")
    lines = [head]
    width = max((len(e.path) for e in plan.endpoints), default=0)
    for ep in plan.endpoints:
        if ep.layer == "legacy":
            target = f"legacy {ep.binding}"
        elif ep.layer == "hybrid":
            target = "Hybrid Connections"
        else:
            target = "MANUAL ACTION (not migrated)" if ep.status == "manual" else "not a relay endpoint (left alone)"
        extra = " (changed)" if ep.status == "changed" else ""
        path = ep.path or "-"
        lines.append(f"  {ep.role:<7} {path:<{width}}  {ep.wcf_binding:<24} -> {target}{extra}")
    counts = [f"{plan.count('direct')} map directly", f"{plan.count('changed')} with changes"]
    if plan.count("manual"):
        counts.append(f"{plan.count('manual')} need manual action")
    if plan.count("skipped"):
        counts.append(f"{plan.count('skipped')} left alone")
    lines.append("Endpoints: " + ", ".join(counts) + ".")
    rules = ", ".join(f"{r.name} ({'/'.join(r.rights_list)})" for r in plan.rules) or "none (development key)"
    lines.append(f"Gateway rules: {rules}; hybrid connections: {len(plan.hybrid_connections)}.")
    for warning in plan.warnings:
        lines.append(f"warning: {_plain(warning)}")
    for host in plan.namespaces:
        lines.append(f"Point clients at your gateway instead of {host}.")
    return lines


def _plain(text: str) -> str:
    return text.replace("`", "")


def run_migrate(args: argparse.Namespace) -> int:
    """The ``migrate`` command; raises ConfigError (MigrationError) on bad input."""
    public_url = _check_public_url(args.public_url)
    plan = plan_migration(args.app_config, public_url=public_url)
    outputs = write_outputs(plan, args.out, force=args.force)
    for line in summary(plan):
        print(line)
    print(f"Wrote {outputs.gateway} (mode 0600: it holds the keys), {outputs.host}, {outputs.report}.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``migrate`` on its own: ``main(["app.config", "--out", "out"])`` or ``main(["migrate", "app.config"])``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "migrate":
        args_list = args_list[1:]
    args = build_parser().parse_args(args_list)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"wcfrelay migrate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
