"""Migration from WCF Relay configurations: ``wcfrelay migrate app.config``.

Reads a WCF ``app.config``/``web.config`` (hardened XML parsing: no DTD, no entities, no network) and works out
where each relay endpoint goes: the legacy layer's bindings (basicHttp, ws2007Http, webHttp, netOneway, netEvent) or
Hybrid Connections (NetTcpRelayBinding). It writes the gateway's configuration (``gateway.toml``: SAS rules with the
keys found, hybrid connections), the host's (``host.toml``) and a Markdown report. See ``docs/migration.md``.

Public API::

    plan = plan_migration("app.config")            # MigrationPlan: endpoints, rules, hybrid connections, report text
    endpoints = endpoints_from_app_config("app.config")   # list[EndpointPlan] a service host can serve
    host = load_host_config("host.toml")           # HostConfig; host.endpoints is list[EndpointPlan] too
    write_outputs(plan, "out/")                    # gateway.toml (0600), host.toml, MIGRATION.md

A host consumes an :class:`EndpointPlan` the same way whichever source it came from: for ``layer == "legacy"``,
``plan.relay_binding()`` and ``plan.registry_settings()`` are the arguments of ``RelayServiceHost.add_endpoint``
(``plan.registration()`` is the listener link's registration); for ``layer == "hybrid"`` the host listens on the
hybrid connection ``plan.path``. Errors are :class:`MigrationError` (a :class:`hybrid.errors.ConfigError`), each
problem naming the file, the line and the element.
"""

from __future__ import annotations

from .errors import MigrationError, Problem
from .hostconfig import HostConfig, load_host_config, parse_host_config
from .output import Outputs, write_outputs
from .plan import (
    BINDING_MAP,
    HYBRID_BINDING,
    EndpointPlan,
    HybridConnectionPlan,
    MigrationPlan,
    RulePlan,
    endpoints_from_app_config,
    plan_migration,
)
from .render import render_gateway_toml, render_host_toml, render_report

__all__ = [
    "BINDING_MAP",
    "HYBRID_BINDING",
    "EndpointPlan",
    "HostConfig",
    "HybridConnectionPlan",
    "MigrationError",
    "MigrationPlan",
    "Outputs",
    "Problem",
    "RulePlan",
    "endpoints_from_app_config",
    "load_host_config",
    "parse_host_config",
    "plan_migration",
    "render_gateway_toml",
    "render_host_toml",
    "render_report",
    "write_outputs",
]
