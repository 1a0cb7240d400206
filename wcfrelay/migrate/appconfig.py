"""Read the WCF parts of an ``app.config`` / ``web.config`` into plain data, with file and line on everything.

Only what a relay migration needs is read:

* ``system.serviceModel``: ``services/service`` (+ ``host/baseAddresses``) and their ``endpoint`` elements,
  ``client/endpoint``, ``bindings/<kind>/binding`` of the six relay bindings (``connectionMode``, ``security``
  ``mode`` and ``relayClientAuthenticationType``, ``maxReceivedMessageSize``, ``maxBufferSize``, ``transferMode``),
  ``behaviors/endpointBehaviors`` (``transportClientEndpointBehavior`` token providers, ``serviceRegistrySettings``),
  the names of ``behaviors/serviceBehaviors``, and ``extensions/bindingExtensions``;
* ``appSettings/add key="Microsoft.ServiceBus.ConnectionString"`` and ``connectionStrings/add`` entries that hold a
  Service Bus connection string.

Sections may sit in ``<location>`` elements (web.config) and may be moved to other files with ``configSource=`` as .NET
allows. Problems found while reading (unknown binding sections, bad attribute values, a SAS element without its key,
...) are collected in a :class:`~wcfrelay.migrate.errors.Problems`; references between elements (an endpoint's
``bindingConfiguration``) are checked by :mod:`wcfrelay.migrate.plan`.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from hybrid.auth import ConnectionString
from hybrid.errors import ConfigError

from .errors import MigrationError, Problem, Problems, describe, local_name, source_of
from .xmlsafe import read_xml, resolve_include

__all__ = [
    "CONNECTION_STRING_SETTING",
    "RELAY_BINDINGS",
    "SECURITY_MODES",
    "STANDARD_BINDINGS",
    "AcsCredential",
    "BehaviorConfig",
    "BindingConfig",
    "ConnectionStringSetting",
    "EndpointConfig",
    "SasCredential",
    "ServiceConfig",
    "WcfConfig",
    "read_app_config",
]

#: the relay bindings of Microsoft.ServiceBus, as spelled in configuration
RELAY_BINDINGS = (
    "basicHttpRelayBinding",
    "ws2007HttpRelayBinding",
    "webHttpRelayBinding",
    "netTcpRelayBinding",
    "netOnewayRelayBinding",
    "netEventRelayBinding",
)
#: relay-era bindings that exist in Microsoft.ServiceBus but that this project does not provide
UNSUPPORTED_SERVICEBUS_BINDINGS = {
    "wsHttpRelayBinding": "the WS-Security flavour of the HTTP relay binding; move to ws2007HttpRelayBinding with "
                          "security mode None",
    "ws2007FederationHttpRelayBinding": "federated (WS-Federation) message security is not provided",
    "netMessagingBinding": "Service Bus queues and topics (brokered messaging), not the relay",
}
#: the bindings .NET's WCF ships; endpoints using them are local (not relayed) and are left alone
STANDARD_BINDINGS = (
    "basicHttpBinding", "basicHttpsBinding", "wsHttpBinding", "ws2007HttpBinding", "wsDualHttpBinding",
    "wsFederationHttpBinding", "ws2007FederationHttpBinding", "netTcpBinding", "netNamedPipeBinding",
    "netMsmqBinding", "netPeerTcpBinding", "msmqIntegrationBinding", "webHttpBinding", "customBinding",
    "mexHttpBinding", "mexHttpsBinding", "mexTcpBinding", "mexNamedPipeBinding", "netHttpBinding",
    "netHttpsBinding", "udpBinding",
)
SECURITY_MODES = ("None", "Transport", "Message", "TransportWithMessageCredential")
CONNECTION_MODES = ("Relayed", "Hybrid")
CLIENT_AUTH_TYPES = ("RelayAccessToken", "None")
DISCOVERY_MODES = ("Public", "Private")
TRANSFER_MODES = ("Buffered", "Streamed", "StreamedRequest", "StreamedResponse")
CONNECTION_STRING_SETTING = "Microsoft.ServiceBus.ConnectionString"
#: WCF's own bound on a message size attribute (Int64 in .NET; nobody configures more than this)
MAX_SIZE_ATTRIBUTE = 2**63 - 1


@dataclass
class Located:
    """Where something was written: file (as given) and line."""

    source: str = ""
    line: int | None = None
    element: str = ""

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}" if self.line else self.source


@dataclass
class BindingConfig(Located):
    """A ``<binding>`` of one relay binding kind. ``name`` "" is .NET 4's default configuration for the kind."""

    kind: str = ""
    name: str = ""
    connection_mode: str | None = None
    security_mode: str | None = None
    client_auth: str | None = None
    max_received_message_size: int | None = None
    max_buffer_size: int | None = None
    transfer_mode: str | None = None


@dataclass
class SasCredential(Located):
    """``tokenProvider/sharedAccessSignature keyName= key=`` (the key is kept only to be written to gateway.toml)."""

    key_name: str = ""
    key: str = field(default="", repr=False)


@dataclass
class AcsCredential(Located):
    """An Access Control Service credential (``sharedSecret``, ``windowsAuthentication``, ``samlAssertion``, ...):
    retired by Azure in 2018 and not supported here. ``issuer`` is the issuer name when there is one."""

    kind: str = ""
    issuer: str = ""


@dataclass
class BehaviorConfig(Located):
    """An ``endpointBehaviors/behavior`` (or a service behavior, whose contents are not needed)."""

    name: str = ""
    kind: str = "endpoint"  # or "service"
    sas: SasCredential | None = None
    acs: AcsCredential | None = None
    discovery: str | None = None  # "Public" / "Private"
    display_name: str | None = None
    registry_line: int | None = None
    other: list[str] = field(default_factory=list)  # other behaviour elements, for the report


@dataclass
class EndpointConfig(Located):
    """A service ``<endpoint>`` or a ``client/endpoint``."""

    role: str = "service"  # or "client"
    name: str = ""
    address: str = ""
    listen_uri: str = ""
    binding: str = ""
    binding_configuration: str | None = None
    contract: str = ""
    behavior_configuration: str | None = None
    kind: str = ""
    service: ServiceConfig | None = field(default=None, repr=False)


@dataclass
class ServiceConfig(Located):
    name: str = ""
    behavior_configuration: str | None = None
    base_addresses: list[str] = field(default_factory=list)
    endpoints: list[EndpointConfig] = field(default_factory=list)


@dataclass
class ConnectionStringSetting(Located):
    """A Service Bus connection string found in ``appSettings`` or ``connectionStrings``."""

    setting: str = ""
    value: ConnectionString | None = field(default=None, repr=False)


@dataclass
class WcfConfig:
    """Everything read from one configuration file (and the files its ``configSource`` attributes name)."""

    source: str
    root_line: int | None = None
    services: list[ServiceConfig] = field(default_factory=list)
    clients: list[EndpointConfig] = field(default_factory=list)
    #: (kind, lower-cased name) -> binding; name "" is the kind's default configuration
    bindings: dict[tuple[str, str], BindingConfig] = field(default_factory=dict)
    #: binding sections present, relay or not (kind -> names), for messages
    binding_names: dict[str, list[str]] = field(default_factory=dict)
    extension_bindings: dict[str, int | None] = field(default_factory=dict)
    endpoint_behaviors: dict[str, BehaviorConfig] = field(default_factory=dict)
    service_behaviors: dict[str, BehaviorConfig] = field(default_factory=dict)
    connection_strings: list[ConnectionStringSetting] = field(default_factory=list)

    @property
    def endpoints(self) -> list[EndpointConfig]:
        return [e for s in self.services for e in s.endpoints] + list(self.clients)


# ---------------------------------------------------------------------------------------------------------------


def _children(el: etree._Element, name: str | None = None) -> list[etree._Element]:
    """Element children (comments and processing instructions skipped), optionally only those named ``name``."""
    return [c for c in el if isinstance(c.tag, str) and (name is None or local_name(c) == name)]


def _clean(value: str | None) -> str:
    """A name as written, with control characters (a newline from ``&#10;``) turned into spaces."""
    return "".join(c if c.isprintable() else " " for c in (value or "")).strip()


def _loc(el: etree._Element) -> dict:
    return {"source": source_of(el), "line": el.sourceline, "element": describe(el)}


def _enum(el: etree._Element, attr: str, allowed: tuple[str, ...], problems: Problems) -> str | None:
    """An enumeration attribute, matched case-insensitively and returned in its canonical spelling."""
    raw = el.get(attr)
    if raw is None:
        return None
    value = raw.strip()
    for option in allowed:
        if value.lower() == option.lower():
            return option
    shown = value[:60]
    problems.at(el, f"{attr}={shown!r} is not valid; expected one of {', '.join(allowed)}")
    return None


def _size(el: etree._Element, attr: str, problems: Problems) -> int | None:
    raw = el.get(attr)
    if raw is None:
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_SIZE_ATTRIBUTE:
        problems.at(el, f"{attr}={text[:30]!r} must be a positive number of bytes")
        return None
    return int(text)


class _Reader:
    def __init__(self, source: str, real_path: Path, problems: Problems) -> None:
        self.config = WcfConfig(source=source)
        self.real_path = real_path
        self.problems = problems
        self._included: set[Path] = {real_path.resolve()}
        #: display name of every file read -> its real path (configSource paths are relative to the holder)
        self._real_paths: dict[str, Path] = {source: real_path}

    # -- configSource ------------------------------------------------------------------------------------

    def section(self, el: etree._Element) -> etree._Element | None:
        """The section itself, or the root of the file its ``configSource`` names (same element name)."""
        reference = el.get("configSource")
        if reference is None:
            return el
        if _children(el):
            self.problems.at(el, "a section with configSource= must be empty")
            return None
        # configSource paths are relative to the file that holds the attribute.
        holder_real = self._real_of(el)
        try:
            target = resolve_include(str(holder_real), reference)
        except ValueError as exc:
            self.problems.at(el, f"configSource={reference[:100]!r} {exc}")
            return None
        if target in self._included:
            self.problems.at(el, f"configSource={reference[:100]!r} includes a file already read")
            return None
        self._included.add(target)
        display = os.path.join(os.path.dirname(source_of(el)), reference)
        try:
            root = read_xml(target, display)
        except MigrationError as exc:
            self.problems.items.extend(exc.problems)
            return None
        self._real_paths[display] = target
        if local_name(root) != local_name(el):
            self.problems.at(root, f"the file named by configSource must hold a <{local_name(el)}> element, "
                                   f"not <{local_name(root)}>")
            return None
        return root

    def _real_of(self, el: etree._Element) -> Path:
        return self._real_paths.get(source_of(el), self.real_path)

    # -- the file ------------------------------------------------------------------------------------------

    def read(self, root: etree._Element) -> WcfConfig:
        self.config.root_line = root.sourceline
        if local_name(root) != "configuration":
            self.problems.at(root, "the root element must be <configuration> (an app.config or web.config file)")
            return self.config
        scopes = [root] + _children(root, "location")
        models = [m for scope in scopes for m in _children(scope, "system.serviceModel")]
        for scope in scopes:
            for settings in _children(scope, "appSettings"):
                self.app_settings(settings)
            for strings in _children(scope, "connectionStrings"):
                self.connection_strings(strings)
        if not models:
            self.problems.at(root, "no <system.serviceModel> section: there is no WCF configuration to migrate")
            return self.config
        # Extensions first: they decide which binding sections are known.
        for model in models:
            for ext in _children(model, "extensions"):
                ext = self.section(ext)
                if ext is not None:
                    self.extensions(ext)
        for model in models:
            for child in _children(model):
                name = local_name(child)
                if name not in ("bindings", "behaviors", "services", "client"):
                    continue
                sec = self.section(child)
                if sec is None:
                    continue
                getattr(self, name)(sec)
        return self.config

    def extensions(self, el: etree._Element) -> None:
        for group in _children(el, "bindingExtensions"):
            for add in _children(group, "add"):
                name = add.get("name", "").strip()
                if name:
                    self.config.extension_bindings[name] = add.sourceline

    # -- settings ------------------------------------------------------------------------------------------

    def app_settings(self, el: etree._Element) -> None:
        sec = self.section(el)
        if sec is None:
            return
        for add in _children(sec, "add"):
            key = (add.get("key") or "").strip()
            if key.lower() == CONNECTION_STRING_SETTING.lower():
                self.connection_string(add, key, add.get("value"))

    def connection_strings(self, el: etree._Element) -> None:
        sec = self.section(el)
        if sec is None:
            return
        for add in _children(sec, "add"):
            value = add.get("connectionString") or ""
            if value.strip().lower().startswith("endpoint=sb://"):
                self.connection_string(add, (add.get("name") or "").strip(), value)

    def connection_string(self, add: etree._Element, setting: str, value: str | None) -> None:
        if not value or not value.strip():
            self.problems.at(add, "the Service Bus connection string is empty")
            return
        try:
            parsed = ConnectionString.parse(value)
        except ConfigError as exc:  # its messages never echo the value
            self.problems.at(add, str(exc))
            return
        self.config.connection_strings.append(ConnectionStringSetting(**_loc(add), setting=setting, value=parsed))

    # -- bindings --------------------------------------------------------------------------------------------

    def bindings(self, el: etree._Element) -> None:
        known = set(RELAY_BINDINGS) | set(STANDARD_BINDINGS) | set(UNSUPPORTED_SERVICEBUS_BINDINGS) \
            | set(self.config.extension_bindings)
        for section in _children(el):
            kind = local_name(section)
            if kind not in known:
                hint = difflib.get_close_matches(kind, sorted(known), n=1)
                suggestion = f" (did you mean <{hint[0]}>?)" if hint else ""
                self.problems.at(section, f"unknown binding element <{kind}>{suggestion}; the relay bindings are "
                                          + ", ".join(RELAY_BINDINGS))
                continue
            names = self.config.binding_names.setdefault(kind, [])
            for binding in _children(section):
                if local_name(binding) in ("clear", "remove"):
                    continue
                if local_name(binding) != "binding":
                    self.problems.at(binding, f"unexpected element in <{kind}>; expected <binding>")
                    continue
                name = (binding.get("name") or "").strip()
                if name.lower() in (n.lower() for n in names):
                    self.problems.at(binding, f"a <{kind}> binding named {name!r} is already defined")
                    continue
                names.append(name)
                if kind in RELAY_BINDINGS:
                    self.config.bindings[(kind, name.lower())] = self.relay_binding(kind, name, binding)

    def relay_binding(self, kind: str, name: str, el: etree._Element) -> BindingConfig:
        problems = self.problems
        config = BindingConfig(**_loc(el), kind=kind, name=name)
        config.connection_mode = _enum(el, "connectionMode", CONNECTION_MODES, problems)
        config.max_received_message_size = _size(el, "maxReceivedMessageSize", problems)
        config.max_buffer_size = _size(el, "maxBufferSize", problems)
        config.transfer_mode = _enum(el, "transferMode", TRANSFER_MODES, problems)
        securities = _children(el, "security")
        if len(securities) > 1:
            problems.at(securities[1], "only one <security> element is allowed in a binding")
        if securities:
            security = securities[0]
            config.security_mode = _enum(security, "mode", SECURITY_MODES, problems)
            config.client_auth = _enum(security, "relayClientAuthenticationType", CLIENT_AUTH_TYPES, problems)
        return config

    # -- behaviors -------------------------------------------------------------------------------------------

    def behaviors(self, el: etree._Element) -> None:
        for group in _children(el):
            kind = {"endpointBehaviors": "endpoint", "serviceBehaviors": "service"}.get(local_name(group))
            if kind is None:
                continue
            table = self.config.endpoint_behaviors if kind == "endpoint" else self.config.service_behaviors
            for behavior in _children(group, "behavior"):
                name = (behavior.get("name") or "").strip()
                if name.lower() in table:
                    self.problems.at(behavior, f"an {kind} behavior named {name!r} is already defined")
                    continue
                config = BehaviorConfig(**_loc(behavior), name=name, kind=kind)
                if kind == "endpoint":
                    self.endpoint_behavior(behavior, config)
                table[name.lower()] = config

    def endpoint_behavior(self, el: etree._Element, config: BehaviorConfig) -> None:
        for child in _children(el):
            name = local_name(child)
            if name == "transportClientEndpointBehavior":
                self.transport_client(child, config)
            elif name == "serviceRegistrySettings":
                config.discovery = _enum(child, "discoveryMode", DISCOVERY_MODES, self.problems)
                display = child.get("displayName")
                if display is not None:
                    if len(display) > 256 or not display.isprintable():
                        self.problems.at(child, "displayName must be at most 256 printable characters")
                    else:
                        config.display_name = display
                config.registry_line = child.sourceline
            else:
                config.other.append(name)

    def transport_client(self, el: etree._Element, config: BehaviorConfig) -> None:
        providers = [p for holder in _children(el) if local_name(holder) in ("tokenProvider", "clientCredentials")
                     for p in _children(holder)]
        if not providers:
            if el.get("credentialType"):
                self.problems.at(el, f"credentialType={el.get('credentialType', '')[:40]!r} without a "
                                     "<clientCredentials> element")
            return
        for provider in providers:
            kind = local_name(provider)
            if kind == "sharedAccessSignature":
                self.sas(provider, config)
            elif kind in ("sharedSecret", "windowsAuthentication", "samlAssertion", "simpleWebToken"):
                issuer = (provider.get("issuerName") or "").strip()
                if config.acs is None:
                    config.acs = AcsCredential(**_loc(provider), kind=kind, issuer=issuer)
            else:
                self.problems.at(provider, f"unknown token provider <{kind}>; expected <sharedAccessSignature keyName="
                                           "\"…\" key=\"…\">")

    def sas(self, el: etree._Element, config: BehaviorConfig) -> None:
        if config.sas is not None:
            self.problems.at(el, "a behavior can hold only one <sharedAccessSignature>")
            return
        key_name = (el.get("keyName") or "").strip()
        key = el.get("key")
        missing = [a for a, v in (("keyName", key_name), ("key", key)) if not v or not v.strip()]
        if missing:
            self.problems.at(el, f"the shared access signature has no {' and no '.join(missing)}; a SAS token "
                                 "provider needs keyName and key")
            return
        config.sas = SasCredential(**_loc(el), key_name=key_name, key=(key or "").strip())

    # -- services and clients --------------------------------------------------------------------------------

    def services(self, el: etree._Element) -> None:
        for service in _children(el, "service"):
            config = ServiceConfig(**_loc(service), name=_clean(service.get("name")),
                                   behavior_configuration=service.get("behaviorConfiguration"))
            if not config.name:
                self.problems.at(service, "a <service> needs a name (the service type)")
            for host in _children(service, "host"):
                for group in _children(host, "baseAddresses"):
                    for add in _children(group, "add"):
                        base = (add.get("baseAddress") or "").strip()
                        if base:
                            config.base_addresses.append(base)
            for endpoint in _children(service, "endpoint"):
                ep = self.endpoint(endpoint, "service")
                ep.service = config
                config.endpoints.append(ep)
            self.config.services.append(config)

    def client(self, el: etree._Element) -> None:
        for endpoint in _children(el, "endpoint"):
            self.config.clients.append(self.endpoint(endpoint, "client"))

    def endpoint(self, el: etree._Element, role: str) -> EndpointConfig:
        def opt(attr: str) -> str | None:
            value = el.get(attr)
            return None if value is None else value.strip()

        return EndpointConfig(
            **_loc(el), role=role, name=_clean(opt("name")), address=(opt("address") or ""),
            listen_uri=(opt("listenUri") or ""), binding=(opt("binding") or ""),
            binding_configuration=opt("bindingConfiguration"), contract=_clean(opt("contract")),
            behavior_configuration=opt("behaviorConfiguration"), kind=(opt("kind") or ""),
        )


def read_app_config(path: str | os.PathLike[str], problems: Problems | None = None,
                    display: str | None = None) -> WcfConfig:
    """Read ``path``. Problems go to ``problems`` (raised at once when none is given); a file that cannot be
    parsed at all raises :class:`MigrationError` immediately."""
    own = problems is None
    problems = problems if problems is not None else Problems()
    shown = display or os.fspath(path)
    root = read_xml(path, shown)
    reader = _Reader(shown, Path(path), problems)
    config = reader.read(root)
    if own:
        problems.raise_if_any()
    return config


def problem_at(item: Located, message: str) -> Problem:
    return Problem(item.source, item.line, item.element, message)
