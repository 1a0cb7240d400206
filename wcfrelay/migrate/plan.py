"""The migration rules: from a WCF Relay configuration to this project's gateway and host configuration.

One :class:`EndpointPlan` per WCF endpoint (services and clients), saying where it goes (``layer`` ``"legacy"`` or
``"hybrid"``, or nowhere), with which of our bindings and settings, and, in words for the report, what maps directly,
what changes and what the user must do. :class:`MigrationPlan` adds the gateway side: SAS rules (keys carried over,
rights inferred from use) and the hybrid connections to declare.

The rules (``docs/migration.md`` explains them):

=============================  ===========================  =====================================================
WCF binding                    goes to                      notes
=============================  ===========================  =====================================================
basicHttpRelayBinding          legacy ``basicHttp``         security None/Transport; Message → manual
ws2007HttpRelayBinding         legacy ``ws2007Http``        security None/Transport; Message → manual
webHttpRelayBinding            legacy ``webHttp``
netOnewayRelayBinding          legacy ``netOneway``         callers switch to SOAP 1.2 over HTTP; ≤ 64 KB
netEventRelayBinding           legacy ``netEvent``          no Hybrid Connections counterpart (multicast)
netTcpRelayBinding             Hybrid Connections           binary framing has no legacy counterpart;
                                                            ``connectionMode="Hybrid"`` stays relayed
=============================  ===========================  =====================================================
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from hybrid.gateway.config import MAX_RULES_PER_SCOPE, validate_hc_name
from wcfrelay import link

from .appconfig import (
    RELAY_BINDINGS,
    STANDARD_BINDINGS,
    UNSUPPORTED_SERVICEBUS_BINDINGS,
    AcsCredential,
    BehaviorConfig,
    BindingConfig,
    EndpointConfig,
    Located,
    SasCredential,
    WcfConfig,
    read_app_config,
)
from .errors import MigrationError, Problem, Problems

__all__ = [
    "BINDING_MAP",
    "HYBRID_BINDING",
    "LAYERS",
    "EndpointPlan",
    "HybridConnectionPlan",
    "MigrationPlan",
    "RulePlan",
    "endpoints_from_app_config",
    "plan_migration",
]

#: our binding name for an endpoint that moves to Hybrid Connections: SOAP 1.2 envelopes over a hybrid connection
#: (one per WebSocket message, or one per relayed HTTP request)
HYBRID_BINDING = "hybridConnection"
LAYERS = ("legacy", "hybrid")
#: WCF relay binding → our legacy binding (None: moves to Hybrid Connections)
BINDING_MAP: dict[str, str | None] = {
    "basicHttpRelayBinding": link.Binding.BASIC_HTTP.value,
    "ws2007HttpRelayBinding": link.Binding.WS2007_HTTP.value,
    "webHttpRelayBinding": link.Binding.WEB_HTTP.value,
    "netOnewayRelayBinding": link.Binding.NET_ONEWAY.value,
    "netEventRelayBinding": link.Binding.NET_EVENT.value,
    "netTcpRelayBinding": None,
}
_HTTP_BINDINGS = ("basicHttpRelayBinding", "ws2007HttpRelayBinding", "webHttpRelayBinding")
_RULE_NAME = re.compile(r"[A-Za-z0-9._-]{1,256}")
_KEY_PROBLEM = ("the key cannot be used by the gateway: keys are 16-256 characters without whitespace, control "
                "characters or ';' (Azure's are 44). Generate one with "
                "python -c \"from hybrid.auth import generate_key; print(generate_key())\"")
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 256
#: What WCF calls the default when a binding has no <security> (EndToEndSecurityMode.Transport for the relay bindings)
DEFAULT_SECURITY_MODE = "Transport"
DEFAULT_GATEWAY_URL = "http://127.0.0.1:9351"


@dataclass
class EndpointPlan:
    """Where one WCF endpoint goes, and what the host needs to serve it.

    The host fields (those written to ``host.toml``) are ``path``, ``layer``, ``binding``, ``client_auth``,
    ``discovery``, ``display_name``, ``max_message``, ``service``, ``contract``, ``name`` and ``key_name``. The rest
    describes the migration. ``layer`` is None for an endpoint that is not migrated (``status`` "manual" or
    "skipped").
    """

    path: str
    layer: str | None
    binding: str | None
    client_auth: str = link.ClientAuth.RELAY_ACCESS_TOKEN.value
    discovery: str = link.Discovery.PRIVATE.value
    display_name: str = ""
    max_message: int | None = None
    service: str = ""
    contract: str = ""
    name: str = ""
    key_name: str | None = None
    # -- migration details -------------------------------------------------------------------------------------
    role: str = "service"  # "service" (hosted) or "client" (a caller)
    wcf_binding: str = ""
    binding_configuration: str = ""
    address: str = ""
    namespace_host: str = ""
    security_mode: str = ""
    connection_mode: str = ""
    #: "direct" (maps as it is), "changed" (migrated with changes), "manual" (not migrated: the user must act),
    #: "skipped" (not a relay endpoint)
    status: str = "direct"
    maps: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    source: str = ""
    line: int | None = None

    @property
    def hostable(self) -> bool:
        """True for a service endpoint a host serves (a migrated one)."""
        return self.role == "service" and self.layer is not None

    @property
    def one_way(self) -> bool:
        return self.binding in (link.Binding.NET_ONEWAY.value, link.Binding.NET_EVENT.value)

    @property
    def label(self) -> str:
        """``service endpoint "basic" (basicHttpRelayBinding, app.config line 31)``."""
        who = f'{self.role} endpoint "{self.name}"' if self.name else f"{self.role} endpoint"
        where = f"{self.source} line {self.line}" if self.line else self.source
        inner = ", ".join(x for x in (self.wcf_binding or self.binding or "", where) if x)
        return f"{who} ({inner})" if inner else who

    # -- for a service host ------------------------------------------------------------------------------------

    def registration(self) -> link.Registration:
        """The listener-link registration of a legacy-layer endpoint (the query of ``/$wcf/{path}``)."""
        if self.layer != "legacy" or self.binding is None:
            raise ValueError(f"{self.path}: only legacy-layer endpoints register a listener link")
        return link.Registration(
            binding=link.Binding(self.binding),
            client_auth=link.ClientAuth(self.client_auth),
            discovery=link.Discovery(self.discovery),
            display_name=self.display_name,
            max_message=self.max_message or 0,
        )

    def relay_binding(self) -> Any:
        """The :mod:`wcfrelay.bindings` object for a legacy-layer endpoint, for ``RelayServiceHost.add_endpoint``
        (:meth:`host_binding` covers hybrid endpoints too)."""
        if self.layer != "legacy" or self.binding is None:
            raise ValueError(f"{self.path}: a {self.layer} endpoint has no legacy relay binding")
        from wcfrelay.bindings import binding_for

        return binding_for(self.binding, client_authentication=self.client_auth,
                           max_received_message_size=self.max_message)

    def host_binding(self) -> Any:
        """The :mod:`wcfrelay.bindings` object to host this endpoint with, on either layer.

        Legacy endpoints get :meth:`relay_binding`; ``hybridConnection`` endpoints get
        :class:`wcfrelay.bindings.HybridConnectionRelayBinding` (relayed HTTP and SOAP over a hybrid WebSocket on
        the hybrid connection ``path``), so ``RelayServiceHost.add_endpoint(app, plan.path, plan.host_binding(),
        plan.registry_settings())`` serves both layers alike.
        """
        if self.layer == "legacy":
            return self.relay_binding()
        if self.layer != "hybrid" or self.binding != HYBRID_BINDING:
            raise ValueError(f"{self.path}: endpoint is not migrated (layer {self.layer!r}), so it has no binding")
        from wcfrelay.bindings import binding_for

        return binding_for(self.binding, client_authentication=self.client_auth,
                           max_received_message_size=self.max_message)

    def registry_settings(self) -> Any:
        """The :class:`wcfrelay.bindings.ServiceRegistrySettings` (discovery and display name)."""
        from wcfrelay.bindings import ServiceRegistrySettings

        return ServiceRegistrySettings(self.discovery, self.display_name)  # type: ignore[arg-type]


@dataclass
class RulePlan:
    """A namespace SAS rule for gateway.toml: key name, keys carried over, rights inferred from use."""

    name: str
    primary_key: str = field(repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    rights: set[str] = field(default_factory=set)
    origins: list[str] = field(default_factory=list)  # "appSettings Microsoft.ServiceBus.ConnectionString (line 4)"
    used_by: list[str] = field(default_factory=list)  # endpoint labels with the right they need

    @property
    def rights_list(self) -> list[str]:
        return [r for r in ("Listen", "Send", "Manage") if r in self.rights]


@dataclass
class HybridConnectionPlan:
    name: str
    requires_client_authorization: bool = True
    used_by: list[str] = field(default_factory=list)


@dataclass
class MigrationPlan:
    source: str
    endpoints: list[EndpointPlan] = field(default_factory=list)
    rules: list[RulePlan] = field(default_factory=list)
    hybrid_connections: list[HybridConnectionPlan] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    #: things every endpoint shares (namespace host, TLS, ACS, missing credentials), for the report
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    public_url: str | None = None
    tls_advised: bool = False

    @property
    def gateway_url(self) -> str:
        """The gateway's base URL as callers see it (``public_url``, else the generated gateway.toml's address)."""
        return (self.public_url or DEFAULT_GATEWAY_URL).rstrip("/")

    @property
    def services(self) -> list[EndpointPlan]:
        return [e for e in self.endpoints if e.role == "service"]

    @property
    def clients(self) -> list[EndpointPlan]:
        return [e for e in self.endpoints if e.role == "client"]

    @property
    def hostable(self) -> list[EndpointPlan]:
        return [e for e in self.endpoints if e.hostable]

    def count(self, status: str) -> int:
        return sum(1 for e in self.endpoints if e.status == status)


# ---------------------------------------------------------------------------------------------------------------


def _check_key(key: str) -> bool:
    return (MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH
            and not any(c.isspace() or c == ";" or ord(c) < 32 for c in key))


def _split_scheme(address: str) -> str:
    return address.split("://", 1)[0].lower() if "://" in address else ""


class _Planner:
    def __init__(self, config: WcfConfig, problems: Problems, public_url: str | None) -> None:
        self.config = config
        self.problems = problems
        self.plan = MigrationPlan(source=config.source, public_url=public_url)
        self._rules: dict[str, RulePlan] = {}
        self._rule_spelling: dict[str, tuple[str, Located]] = {}
        self._acs: list[tuple[EndpointPlan, AcsCredential]] = []
        self._no_credential: list[EndpointPlan] = []
        self._paths: dict[str, list[tuple[EndpointPlan, EndpointConfig]]] = {}

    def problem(self, item: Located, message: str) -> None:
        self.problems.add(item.source, item.line, item.element, message)

    # -- lookups -------------------------------------------------------------------------------------------------

    def binding_config(self, ep: EndpointConfig) -> BindingConfig | None:
        """The endpoint's binding configuration; an empty one (WCF defaults) when it names none."""
        name = ep.binding_configuration
        if name is None or not name.strip():
            default = self.config.bindings.get((ep.binding, ""))
            return default or BindingConfig(source=ep.source, line=ep.line, kind=ep.binding)
        found = self.config.bindings.get((ep.binding, name.strip().lower()))
        if found is None:
            defined = [n for n in self.config.binding_names.get(ep.binding, []) if n]
            elsewhere = [k for k, names in self.config.binding_names.items()
                         if k != ep.binding and name.strip().lower() in (n.lower() for n in names)]
            hint = f"; <{ep.binding}> defines {', '.join(repr(n) for n in defined)}" if defined else \
                f"; there is no <{ep.binding}> binding configuration at all"
            if elsewhere:
                hint += f" (a binding named {name.strip()!r} exists under <{elsewhere[0]}>)"
            self.problem(ep, f"bindingConfiguration={name.strip()!r} does not exist{hint}")
        return found

    def behavior(self, ep: EndpointConfig) -> BehaviorConfig | None:
        name = ep.behavior_configuration
        if name is None or not name.strip():
            return self.config.endpoint_behaviors.get("")
        found = self.config.endpoint_behaviors.get(name.strip().lower())
        if found is None:
            defined = sorted(b.name for b in self.config.endpoint_behaviors.values() if b.name)
            hint = f"; the endpoint behaviors are {', '.join(repr(n) for n in defined)}" if defined else \
                "; there are no endpoint behaviors"
            if name.strip().lower() in self.config.service_behaviors:
                hint += f" ({name.strip()!r} is a service behavior, which an endpoint cannot use)"
            self.problem(ep, f"behaviorConfiguration={name.strip()!r} does not exist{hint}")
        return found

    # -- addresses -----------------------------------------------------------------------------------------------

    def address(self, ep: EndpointConfig) -> tuple[str, str, str] | None:
        """``(scheme, host, path)`` of a relay endpoint's address, resolving relative ones against base addresses."""
        raw = ep.listen_uri or ep.address
        if "://" not in raw:
            bases = ep.service.base_addresses if ep.service is not None else []
            wanted = ("http", "https") if ep.binding in _HTTP_BINDINGS else ("sb",)
            base = next((b for b in bases if _split_scheme(b) in wanted), None)
            if base is None:
                what = f"the relative address {raw!r}" if raw else "an empty address"
                self.problem(ep, f"a relay endpoint address must be sb://<namespace>/<path> or "
                                 f"http(s)://<namespace>/<path>, but this endpoint has {what} and "
                                 f"{'its service has no ' + '/'.join(wanted) + ' base address' if ep.role == 'service' else 'a client address must be absolute'}"
                                 " (if the code sets the address, write it into the configuration to migrate it)")
                return None
            raw = base.rstrip("/") + "/" + raw.lstrip("/")
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            self.problem(ep, f"address {raw[:120]!r} is not a valid URI")
            return None
        scheme = parts.scheme.lower()
        if scheme not in ("sb", "http", "https"):
            self.problem(ep, f"a relay endpoint address must be sb://<namespace>/<path> or http(s)://<namespace>/"
                             f"<path>, not {raw[:120]!r}")
            return None
        if not parts.hostname:
            self.problem(ep, f"address {raw[:120]!r} names no namespace host")
            return None
        path = unquote(parts.path).strip("/")
        if not path:
            self.problem(ep, f"address {raw[:120]!r} names no path; a relay endpoint needs one "
                             f"(sb://{parts.hostname}/<path>)")
            return None
        reason = validate_hc_name(path)
        if reason:
            self.problem(ep, f"path {path!r} cannot be used on the gateway: {reason}")
            return None
        return scheme, parts.hostname, path

    # -- credentials -------------------------------------------------------------------------------------------

    def use_key(self, key_name: str, key: str, right: str, origin: str, item: Located, user: str | None) -> None:
        """Record that ``key_name``/``key`` is used with ``right`` (None user: the key is only carried over)."""
        if not _RULE_NAME.fullmatch(key_name):
            self.problem(item, f"key name {key_name[:60]!r} cannot be used by the gateway: names are 1-256 letters, "
                               "digits, '.', '_' or '-'")
            return
        if not _check_key(key):
            self.problem(item, _KEY_PROBLEM)
            return
        lower = key_name.lower()
        spelled = self._rule_spelling.get(lower)
        if spelled is not None and spelled[0] != key_name:
            self.problem(item, f"key name {key_name!r} differs only in case from {spelled[0]!r} "
                               f"({spelled[1].where}); the gateway treats them as one rule")
            return
        rule = self._rules.get(lower)
        if rule is None:
            if len(self._rules) >= MAX_RULES_PER_SCOPE:
                self.problem(item, f"more than {MAX_RULES_PER_SCOPE} different key names; a gateway namespace "
                                   f"holds at most {MAX_RULES_PER_SCOPE} rules")
                return
            rule = RulePlan(name=key_name, primary_key=key)
            self._rules[lower] = rule
            self._rule_spelling[lower] = (key_name, item)
        elif key not in (rule.primary_key, rule.secondary_key):
            if rule.secondary_key is None:
                rule.secondary_key = key
                self.plan.warnings.append(
                    f"key name `{key_name}` appears with two different keys ({rule.origins[0]} and {origin}); "
                    "the first is its primary_key, the second its secondary_key")
            else:
                self.problem(item, f"key name {key_name!r} appears with a third different key; a rule holds at most "
                                   "two (primary and secondary)")
                return
        if origin not in rule.origins:
            rule.origins.append(origin)
        if right:
            rule.rights.add(right)
        if user:
            rule.used_by.append(f"{user}: {right}")

    # -- one endpoint ----------------------------------------------------------------------------------------------

    def endpoint(self, ep: EndpointConfig) -> EndpointPlan:
        base: dict[str, Any] = {"name": ep.name, "contract": ep.contract, "role": ep.role, "wcf_binding": ep.binding or ep.kind,
                                "binding_configuration": ep.binding_configuration or "",
                                "address": ep.listen_uri or ep.address,
                                "service": ep.service.name if ep.service is not None else "", "source": ep.source,
                                "line": ep.line}
        if ep.binding in RELAY_BINDINGS:
            return self.relay_endpoint(ep, base)
        if ep.binding in UNSUPPORTED_SERVICEBUS_BINDINGS:
            plan = EndpointPlan(path="", layer=None, binding=None, status="manual", **base)
            plan.actions.append(f"`{ep.binding}` is not supported: {UNSUPPORTED_SERVICEBUS_BINDINGS[ep.binding]}")
            self.check_references(ep)
            return plan
        if not ep.binding and ep.kind:
            plan = EndpointPlan(path="", layer=None, binding=None, status="skipped", **base)
            plan.maps.append(f"standard endpoint `{ep.kind}`: not a relay endpoint, left as it is")
            return plan
        known = ep.binding in STANDARD_BINDINGS or ep.binding in self.config.extension_bindings
        if not known:
            options = sorted(set(RELAY_BINDINGS) | set(STANDARD_BINDINGS) | set(self.config.extension_bindings))
            hint = difflib.get_close_matches(ep.binding, options, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            if not ep.binding:
                self.problem(ep, "the endpoint has no binding attribute")
            else:
                self.problem(ep, f"unknown binding {ep.binding!r}{suggestion}; the relay bindings are "
                                 + ", ".join(RELAY_BINDINGS))
            return EndpointPlan(path="", layer=None, binding=None, status="skipped", **base)
        self.check_references(ep)
        address = ep.listen_uri or ep.address
        relay_looking = _split_scheme(address) == "sb" or ".servicebus." in address.lower()
        if ep.binding == "customBinding" and relay_looking:
            plan = EndpointPlan(path="", layer=None, binding=None, status="manual", **base)
            plan.actions.append("a `customBinding` on a relay address is probably built from relay transport "
                                "elements (tcpRelayTransport, httpRelayTransport): map it by hand to one of the "
                                "bindings below")
            return plan
        plan = EndpointPlan(path="", layer=None, binding=None, status="skipped", **base)
        plan.maps.append(f"`{ep.binding}` is not a relay binding: this endpoint is local to its host and is left "
                         "as it is")
        return plan

    def check_references(self, ep: EndpointConfig) -> None:
        """Named binding configurations and behaviors must exist, relay endpoint or not."""
        if ep.binding_configuration and ep.binding_configuration.strip():
            names = [n.lower() for n in self.config.binding_names.get(ep.binding, [])]
            if ep.binding in self.config.binding_names or ep.binding in RELAY_BINDINGS:
                if ep.binding_configuration.strip().lower() not in names:
                    self.binding_config(ep)  # reports it
            else:
                self.problem(ep, f"bindingConfiguration={ep.binding_configuration.strip()!r} does not exist; there "
                                 f"is no <{ep.binding}> binding configuration at all")
        if ep.behavior_configuration and ep.behavior_configuration.strip():
            self.behavior(ep)

    def relay_endpoint(self, ep: EndpointConfig, base: dict) -> EndpointPlan:
        kind = ep.binding
        cfg = self.binding_config(ep)
        behavior = self.behavior(ep)
        located = self.address(ep)
        cfg = cfg or BindingConfig(kind=kind)
        ours = BINDING_MAP[kind]
        plan = EndpointPlan(path=located[2] if located else "", layer="hybrid" if ours is None else "legacy",
                            binding=HYBRID_BINDING if ours is None else ours, **base)
        plan.namespace_host = located[1] if located else ""
        if located and located[1] not in self.plan.namespaces:
            self.plan.namespaces.append(located[1])
        service_side = ep.role == "service"
        gateway = self.plan.gateway_url

        # --- the binding itself
        if located:
            scheme = located[0]
            if kind in _HTTP_BINDINGS and scheme == "sb":
                self.plan.warnings.append(f"{plan.label}: `{kind}` with an sb:// address; WCF expects http(s):// "
                                          "for HTTP relay bindings (the path is used as it is)")
            if kind not in _HTTP_BINDINGS and scheme != "sb":
                self.plan.warnings.append(f"{plan.label}: `{kind}` with an {scheme}:// address; WCF expects sb:// "
                                          "for this binding (the path is used as it is)")
        security = cfg.security_mode or DEFAULT_SECURITY_MODE
        plan.security_mode = security
        if kind == "netTcpRelayBinding":
            plan.connection_mode = cfg.connection_mode or "Relayed"
        elif cfg.connection_mode:
            self.plan.warnings.append(f"{plan.label}: connectionMode applies to netTcpRelayBinding only; ignored")

        if kind == "basicHttpRelayBinding":
            plan.maps.append("SOAP 1.1 request/reply (WS-I Basic Profile): `basicHttpRelayBinding` → our "
                             "`basicHttp` on the legacy layer")
            if service_side:
                plan.actions.append("host the service with `RelayServiceHost`: a Spyne application built with "
                                    "`protocol=\"soap11\"` and `BasicHttpRelayBinding()`")
            else:
                plan.actions.append(f"call `{gateway}/{plan.path}` with any SOAP 1.1 client (WCF `BasicHttpBinding`, "
                                    "zeep, suds); `wcfrelay.client.relay_zeep_client` adds the token")
        elif kind == "ws2007HttpRelayBinding":
            plan.maps.append("SOAP 1.2 + WS-Addressing 1.0 request/reply: `ws2007HttpRelayBinding` → our "
                             "`ws2007Http` on the legacy layer")
            if service_side:
                plan.actions.append("host the service with `RelayServiceHost`: a Spyne application built with "
                                    "`protocol=\"soap12\"` and `WS2007HttpRelayBinding()` (replies carry WS-Addressing)")
            else:
                plan.actions.append(f"call `{gateway}/{plan.path}` with a SOAP 1.2 client that sends WS-Addressing "
                                    "headers (WCF `WS2007HttpBinding` with security None, zeep with "
                                    "`WsAddressingPlugin`)")
        elif kind == "webHttpRelayBinding":
            plan.maps.append("REST/POX operations: `webHttpRelayBinding` → our `webHttp` on the legacy layer")
            if service_side:
                plan.actions.append("re-express the `[WebGet]`/`[WebInvoke]` operations as a Spyne application built "
                                    "with `protocol=\"http\"` (query/form/JSON in, JSON out) and host it with "
                                    "`WebHttpRelayBinding()`")
            else:
                plan.actions.append(f"call `{gateway}/{plan.path}/<operation>` with any HTTP client")
        elif kind in ("netOnewayRelayBinding", "netEventRelayBinding"):
            ours_name = "netOneway" if kind == "netOnewayRelayBinding" else "netEvent"
            if kind == "netOnewayRelayBinding":
                plan.maps.append("one-way messages to one receiver: `netOnewayRelayBinding` → our `netOneway` on "
                                 "the legacy layer")
            else:
                plan.maps.append("multicast one-way messages to every host on the address (at most 25): "
                                 "`netEventRelayBinding` → our `netEvent` on the legacy layer")
                plan.changes.append("stays on the legacy layer: multicast publish/subscribe has no Hybrid Connections "
                                    "counterpart (a hybrid connection delivers each sender to one listener)")
            plan.changes.append("the wire changes from .NET binary framing over TCP to SOAP 1.2 over HTTP(S): callers "
                                f"POST one-way envelopes to `{gateway}/{plan.path}` and get HTTP 202 once a host has the "
                                "message")
            if service_side:
                plan.actions.append("host the service with `RelayServiceHost`: a Spyne application built with "
                                    f"`protocol=\"soap12\"` whose operations are one-way (`_is_async=True`) and "
                                    f"`{'NetOnewayRelayBinding' if ours_name == 'netOneway' else 'NetEventRelayBinding'}()`")
            else:
                plan.actions.append(f"replace the `{kind}` client: WCF's binary TCP channel cannot reach the gateway; "
                                    f"send SOAP 1.2 one-way messages over HTTP(S) to `{gateway}/{plan.path}` (zeep, "
                                    "or WCF with a plain HTTP binding)")
        else:  # netTcpRelayBinding
            plan.changes.append("moves to Hybrid Connections: the legacy layer has no counterpart for "
                                "NetTcpRelayBinding's binary .NET framing. The endpoint becomes hybrid connection "
                                f"`{plan.path}`: SOAP 1.2 envelopes over a hybrid WebSocket (one message each way "
                                "per call; duplex contracts via callback messages on the same WebSocket), or one "
                                "relayed HTTP request per call")
            if plan.connection_mode == "Hybrid":
                plan.changes.append("`connectionMode=\"Hybrid\"` (upgrade to a direct, NAT-traversed TCP connection) "
                                    "has no counterpart: all traffic stays relayed through the gateway")
            else:
                plan.maps.append("`connectionMode=\"Relayed\"`: all traffic goes through the gateway, as before")
            if service_side:
                plan.actions.append(f"listen on hybrid connection `{plan.path}` with "
                                    "`hybrid.client.HybridConnectionListener` and run the service's SOAP 1.2 "
                                    "application on each WebSocket message and relayed request "
                                    "(see `samples/migration/run_host.py`)")
            else:
                plan.actions.append("replace the NetTcpRelayBinding client: a Hybrid Connections sender "
                                    "(`hybrid.client.HybridConnectionClient`, or `HybridConnectionClient` of .NET's "
                                    "Microsoft.Azure.Relay) sends SOAP 1.2 envelopes to "
                                    f"`{gateway.replace('http', 'ws', 1)}/$hc/{plan.path}`; WCF NetTcpRelayBinding "
                                    "clients cannot talk to it")

        # --- security
        if security in ("Message", "TransportWithMessageCredential"):
            plan.status = "manual"
            plan.actions.insert(0, f"security mode `{security}` (WS-Security message security) is not supported: "
                                   "the endpoint is NOT migrated. Either switch it to security mode `None` or "
                                   "`Transport` (TLS on the gateway protects the wire; authenticate callers with "
                                   "relay tokens or in the service) and run the migration again, or keep it on WCF")
        elif security == "Transport":
            self.plan.tls_advised = True
            plan.maps.append("security mode `Transport` → TLS between callers and the gateway: serve the gateway "
                             "with TLS (`tls_cert`/`tls_key` in gateway.toml)")
        else:
            plan.maps.append("security mode `None`")

        # --- client authentication
        if cfg.client_auth == "None":
            plan.client_auth = link.ClientAuth.NONE.value
            if plan.layer == "hybrid":
                plan.maps.append("`relayClientAuthenticationType=\"None\"` → `requires_client_authorization = "
                                 "false`: senders need no token; the service does its own access control")
            else:
                plan.maps.append("`relayClientAuthenticationType=\"None\"` → `client_auth = \"none\"`: anyone may "
                                 "call; the service does its own access control")
        else:
            plan.maps.append("`relayClientAuthenticationType=\"RelayAccessToken\"` (the default): callers need a "
                             "Send token, as before")

        # --- message size
        self.message_size(plan, cfg)

        # --- discovery (service side only)
        if behavior is not None and behavior.discovery == "Public":
            if not service_side:
                self.plan.notes.append(f"{plan.label}: serviceRegistrySettings only matter on the service side; "
                                       "ignored")
            elif plan.layer == "legacy":
                plan.discovery = link.Discovery.PUBLIC.value
                plan.display_name = behavior.display_name or ""
                shown = plan.display_name or plan.path.split("/")[-1]
                plan.maps.append(f"`discoveryMode=\"Public\"` → `discovery = \"public\"`: listed in the gateway's "
                                 f"Atom feed (`GET {gateway}/`) as \"{shown}\"")
            else:
                plan.changes.append("`discoveryMode=\"Public\"` has no counterpart for a hybrid connection: it is not "
                                    "listed in the gateway's discovery feed")
        elif behavior is not None and behavior.display_name and service_side and plan.layer == "legacy":
            plan.display_name = behavior.display_name
        # --- credentials
        self.credentials(plan, ep, behavior)

        if plan.status != "manual":
            plan.status = "changed" if plan.changes else "direct"
        else:
            plan.layer = None
            plan.binding = None
        if located:
            self._paths.setdefault(plan.path.lower(), []).append((plan, ep))
        return plan

    def message_size(self, plan: EndpointPlan, cfg: BindingConfig) -> None:
        sizes = [s for s in (cfg.max_received_message_size, cfg.max_buffer_size) if s is not None]
        if not sizes:
            if plan.one_way:
                plan.maps.append(f"message size: the {link.ONEWAY_MAX_MESSAGE // 1024} KB limit of one-way "
                                 "messages, as in WCF Relay")
            return
        size = min(sizes)
        if cfg.max_received_message_size and cfg.max_buffer_size \
                and cfg.max_received_message_size != cfg.max_buffer_size:
            plan.changes.append(f"maxReceivedMessageSize ({cfg.max_received_message_size}) and maxBufferSize "
                                f"({cfg.max_buffer_size}) differ: the smaller, {size} bytes, is the limit")
        if cfg.transfer_mode and cfg.transfer_mode != "Buffered" and plan.layer == "legacy":
            plan.changes.append(f"transferMode `{cfg.transfer_mode}`: the legacy layer buffers each message (up to "
                                "`max_message`); use Hybrid Connections for unbounded streams")
        if plan.layer == "hybrid":
            plan.max_message = size
            plan.maps.append(f"message size limit {size} bytes (the host enforces it; hybrid connections stream "
                             "without a gateway limit)")
            return
        limit = link.ONEWAY_MAX_MESSAGE if plan.one_way else link.DEFAULT_MAX_MESSAGE
        if size > limit:
            plan.max_message = limit
            if plan.one_way:
                text = (f"maxReceivedMessageSize {size} is over the 64 KB limit of `{plan.binding}` messages (as in "
                        f"WCF Relay): clipped to {limit}; larger messages are refused with 413")
            else:
                text = (f"maxReceivedMessageSize {size} is over the legacy layer's {limit // (1024 * 1024)} MiB "
                        f"limit per request: clipped to {limit}; move large transfers to Hybrid Connections")
            plan.changes.append(text)
            self.plan.warnings.append(f"{plan.label}: {text}")
        else:
            plan.max_message = size
            plan.maps.append(f"maxReceivedMessageSize {size} → `max_message = {size}`")

    def credentials(self, plan: EndpointPlan, ep: EndpointConfig, behavior: BehaviorConfig | None) -> None:
        right = "Listen" if ep.role == "service" else "Send"
        needs_token = ep.role == "service" or plan.client_auth != link.ClientAuth.NONE.value
        sas: SasCredential | None = behavior.sas if behavior is not None else None
        acs: AcsCredential | None = behavior.acs if behavior is not None else None
        origin = ""
        if sas is not None:
            origin = f"endpoint behavior \"{behavior.name}\" ({sas.where})" if behavior is not None and behavior.name \
                else f"default endpoint behavior ({sas.where})"
        if plan.status == "manual":
            if sas is not None:  # still a key the user has; carried over if a migrated endpoint needs it
                self.use_key(sas.key_name, sas.key, "", origin, sas, None)
            return
        if sas is not None:
            plan.key_name = sas.key_name
            self.use_key(sas.key_name, sas.key, right if needs_token else "", origin, sas,
                         plan.label if needs_token else None)
            plan.maps.append(f"SAS key name `{sas.key_name}` → gateway rule `{sas.key_name}` (same key; "
                             f"{right})")
        elif acs is not None:
            issuer = f" (issuer `{acs.issuer}`)" if acs.issuer else ""
            plan.changes.append(f"its `{acs.kind}` credential (Access Control Service) is not carried over")
            plan.actions.append(f"the `{acs.kind}` credential{issuer} ({acs.where}) is Access Control Service (ACS) "
                                "authentication, retired by Azure and not supported: create a SAS rule in "
                                f"gateway.toml with the {right} right and give the "
                                f"{'host' if ep.role == 'service' else 'caller'} its connection string")
            self._acs.append((plan, acs))
        elif needs_token:
            self._no_credential.append(plan)

    # -- the whole file ---------------------------------------------------------------------------------------

    def run(self) -> MigrationPlan:
        for service in self.config.services:
            name = service.behavior_configuration
            if name and name.strip() and name.strip().lower() not in self.config.service_behaviors:
                defined = sorted(b.name for b in self.config.service_behaviors.values() if b.name)
                hint = f"; the service behaviors are {', '.join(repr(n) for n in defined)}" if defined else \
                    "; there are no service behaviors"
                if name.strip().lower() in self.config.endpoint_behaviors:
                    hint += f" ({name.strip()!r} is an endpoint behavior, which a service cannot use)"
                self.problem(service, f"behaviorConfiguration={name.strip()!r} does not exist{hint}")
        for ep in self.config.endpoints:
            self.plan.endpoints.append(self.endpoint(ep))
        relay = [e for e in self.plan.endpoints if e.wcf_binding in RELAY_BINDINGS]
        if not relay and not self.problems:
            found = sorted({e.wcf_binding for e in self.plan.endpoints if e.wcf_binding})
            self.problems.add(self.config.source, self.config.root_line, "<system.serviceModel>",
                              "no relay endpoint to migrate: no service or client endpoint uses a relay binding ("
                              + ", ".join(RELAY_BINDINGS) + ")" + (f"; found {', '.join(found)}" if found else ""))
        self.check_paths()
        self.connection_strings()
        self.unused_keys()
        self.hybrid_connections()
        self.general()
        self.plan.rules = [r for r in self._rules.values() if r.rights]
        return self.plan

    def check_paths(self) -> None:
        for uses in self._paths.values():
            services = [(p, e) for p, e in uses if p.role == "service" and p.layer is not None]
            for (first, _), (other, ep) in itertools.pairwise(services):
                self.problem(ep, f"path {other.path!r} is already used by {first.label}; each relay path has one "
                                 "endpoint")
            layers = {p.layer for p, _ in uses if p.layer is not None}
            if len(layers) > 1 and len(services) < 2:
                legacy = next(p for p, _ in uses if p.layer == "legacy")
                hybrid, ep = next((p, e) for p, e in uses if p.layer == "hybrid")
                self.problem(ep, f"path {hybrid.path!r} would be a hybrid connection, but {legacy.label} uses it on "
                                 "the legacy layer; the gateway cannot serve both on one path")
            bindings = {p.wcf_binding for p, _ in uses if p.layer is not None}
            if len(bindings) > 1 and len(layers) == 1:
                labels = ", ".join(p.label for p, _ in uses)
                self.plan.warnings.append(f"path `{uses[0][0].path}` is used with different bindings: {labels}")
        # The gateway routes plain HTTP to the longest *legacy* path first, so a hybrid connection nested under a
        # legacy endpoint's path loses its relayed HTTP requests to that endpoint (its /$hc/ WebSockets still work).
        legacy_paths = {p.path.lower(): p for uses in self._paths.values() for p, _ in uses if p.layer == "legacy"}
        hybrid_paths = {p.path.lower(): p for uses in self._paths.values() for p, _ in uses if p.layer == "hybrid"}
        for h_path, h_plan in hybrid_paths.items():
            h_segments = h_path.split("/")
            for n in range(len(h_segments) - 1, 0, -1):
                outer = legacy_paths.get("/".join(h_segments[:n]))
                if outer is None:
                    continue
                text = (f"hybrid connection `{h_plan.path}` is nested under legacy endpoint `{outer.path}`: the "
                        f"gateway routes plain HTTP requests for `/{h_plan.path}` to `{outer.path}` (WebSocket "
                        f"senders on `/$hc/{h_plan.path}` are not affected). Give the hybrid connection a path "
                        f"outside `{outer.path}/` if callers use relayed HTTP")
                self.plan.warnings.append(text)
                for uses in self._paths.values():
                    for p, _ in uses:
                        if p.layer == "hybrid" and p.path.lower() == h_path:
                            p.changes.append(text)
                break

    def connection_strings(self) -> None:
        with_key = [cs for cs in self.config.connection_strings if cs.value is not None and cs.value.key_name]
        for cs in self.config.connection_strings:
            value = cs.value
            if value is None:
                continue
            host = urlsplit(value.endpoint).hostname or ""
            if host and host not in self.plan.namespaces:
                self.plan.namespaces.append(host)
            if value.shared_access_signature and not value.key_name:
                self.plan.actions.append(f"the connection string in {cs.setting or 'a setting'} ({cs.where}) holds a "
                                         "ready-made SharedAccessSignature, which cannot be carried over: issue "
                                         "tokens from a gateway rule instead")
        if not with_key:
            if self._no_credential:
                self.missing_credentials(self._no_credential)
            return
        primary = next((cs for cs in with_key if cs.setting.lower() == "microsoft.servicebus.connectionstring"),
                       with_key[0])
        hosts = [p for p in self._no_credential if p.role == "service"]
        callers = [p for p in self._no_credential if p.role == "client"]
        assert primary.value is not None and primary.value.key_name and primary.value.key
        for cs in with_key:
            value = cs.value
            assert value is not None and value.key_name and value.key
            origin = f"connection string {cs.setting or '(unnamed)'} ({cs.where})"
            used = False
            if cs is primary:
                for plan in hosts:
                    plan.key_name = value.key_name
                    self.use_key(value.key_name, value.key, "Listen", origin, cs, plan.label)
                    plan.maps.append(f"no token provider in its behavior: the host uses the connection string's key "
                                     f"name `{value.key_name}` (Listen)")
                    used = True
                for plan in callers:
                    plan.key_name = value.key_name
                    self.use_key(value.key_name, value.key, "Send", origin, cs, plan.label)
                    plan.maps.append(f"no token provider in its behavior: callers use the connection string's key "
                                     f"name `{value.key_name}` (Send)")
                    used = True
            if not used:
                # Used by code we cannot see: grant what the configuration's roles suggest.
                rights = []
                if any(p.hostable for p in self.plan.endpoints):
                    rights.append("Listen")
                if any(p.role == "client" and p.layer is not None for p in self.plan.endpoints):
                    rights.append("Send")
                for right in rights or ["Listen", "Send"]:
                    self.use_key(value.key_name, value.key, right, origin, cs, None)
                self.plan.notes.append(f"the key name `{value.key_name}` of {origin} is not tied to an endpoint in "
                                       f"the configuration (the code uses it); its rule gets "
                                       f"{' and '.join(rights or ['Listen', 'Send'])}")

    def missing_credentials(self, plans: list[EndpointPlan]) -> None:
        for plan in plans:
            right = "Listen" if plan.role == "service" else "Send"
            who = "the host" if plan.role == "service" else "callers"
            plan.actions.append(f"no credential for this endpoint in the configuration (the code probably sets one): "
                                f"give {who} a connection string for a gateway rule with the {right} right")

    def unused_keys(self) -> None:
        """SAS keys in behaviors no migrated endpoint uses: carried over only if some endpoint referenced them."""
        used_behaviors = set()
        for ep in self.config.endpoints:
            name = (ep.behavior_configuration or "").strip().lower()
            used_behaviors.add(name)
        for key, behavior in self.config.endpoint_behaviors.items():
            if behavior.sas is not None and key not in used_behaviors:
                self.plan.notes.append(f"endpoint behavior \"{behavior.name}\" ({behavior.where}) holds key name "
                                       f"`{behavior.sas.key_name}` but no endpoint uses it: not carried over")
        for rule in self._rules.values():
            if not rule.rights:
                self.plan.notes.append(f"key name `{rule.name}` is needed by no migrated endpoint: not carried over")

    def hybrid_connections(self) -> None:
        seen: dict[str, HybridConnectionPlan] = {}
        for plan in self.plan.endpoints:
            if plan.layer != "hybrid":
                continue
            hc = seen.get(plan.path.lower())
            requires = plan.client_auth != link.ClientAuth.NONE.value
            if hc is None:
                hc = HybridConnectionPlan(name=plan.path, requires_client_authorization=requires)
                seen[plan.path.lower()] = hc
                self.plan.hybrid_connections.append(hc)
            elif plan.role == "service" and hc.requires_client_authorization != requires:
                hc.requires_client_authorization = requires
            elif hc.requires_client_authorization != requires:
                self.plan.warnings.append(f"{plan.label}: its relayClientAuthenticationType differs from the "
                                          f"service's for `{plan.path}`; the service's setting is used")
            hc.used_by.append(plan.label)

    def general(self) -> None:
        plan = self.plan
        for host in plan.namespaces:
            plan.actions.append(f"point clients at your gateway instead of `{host}`: the same paths, under "
                                f"`{plan.gateway_url}/` (HTTP bindings), `{plan.gateway_url.replace('http', 'ws', 1)}"
                                "/$hc/` (hybrid connections)")
        if len(plan.namespaces) > 1:
            plan.warnings.append("endpoints come from several namespaces (" + ", ".join(plan.namespaces) + "); they all "
                                 "move to the one namespace of the gateway")
        if plan.tls_advised:
            plan.actions.append("endpoints used security mode `Transport` (TLS to the relay): give the gateway a "
                                "certificate (`tls_cert`/`tls_key` in gateway.toml, or `--dev-tls` for a test) and "
                                "set `public_url` to its https:// address")
        if self._acs:
            plan.actions.append("Access Control Service credentials (sharedSecret, issuer/secret) were found; ACS is "
                                "retired and not supported: every endpoint that used one needs a SAS rule (see the "
                                "endpoints below)")
        if not any(r.rights for r in self._rules.values()):
            plan.notes.append("no usable SAS key was found: gateway.toml declares no rule, so the gateway keeps a "
                              "development root key in its state folder (printed at start-up); add "
                              "[[namespace.rules]] for production")
        if any(r.name == "RootManageSharedAccessKey" for r in self._rules.values() if r.rights):
            plan.notes.append("`RootManageSharedAccessKey` had the Manage right on Azure; its gateway rule gets only "
                              "the rights this configuration uses (add \"Manage\" to its rights if the code manages "
                              "the namespace)")


def plan_migration(path: str | os.PathLike[str], *, public_url: str | None = None,
                   display: str | None = None) -> MigrationPlan:
    """Read a WCF ``app.config``/``web.config`` and work out the migration. Raises :class:`MigrationError` listing
    every problem (each naming the file, line and element)."""
    problems = Problems()
    config = read_app_config(path, problems, display=display)
    # References (bindingConfiguration, behaviorConfiguration, addresses) are checked even when the structure had
    # problems, so one run reports everything.
    plan = _Planner(config, problems, public_url).run()
    if problems:
        raise MigrationError(_unique(problems.items))
    return plan


def _unique(items: Iterable[Problem]) -> list[Problem]:
    seen: set[Problem] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return sorted(out, key=lambda p: (p.source, p.line or 0))


def endpoints_from_app_config(path: str | os.PathLike[str], *, include_all: bool = False) -> list[EndpointPlan]:
    """The endpoints a service host can serve, read straight from a WCF ``app.config``/``web.config``.

    By default only migrated service endpoints (``plan.hostable``: layer ``"legacy"`` or ``"hybrid"``); with
    ``include_all`` every endpoint, callers and unmigrated ones included (see ``status``). Raises
    :class:`MigrationError`.
    """
    plan = plan_migration(path)
    return list(plan.endpoints) if include_all else plan.hostable
