"""``host.toml``: which endpoints a service host serves, on which layer, with which binding and settings.

Written by ``wcfrelay migrate`` (or by hand) and described by ``schemas/host-config.schema.json``::

    version = 1
    source = "app.config"                       # optional: where it came from

    [host]                                      # optional
    endpoint = "http://127.0.0.1:9351/"         # the gateway the host dials (sb://, http(s)://, ws(s)://)
    connection_string_env = "WCFRELAY_CONNECTION_STRING"

    [[endpoints]]
    name = "basic"                              # optional: the WCF endpoint name
    service = "Samples.CalculatorService"       # optional: the WCF service type
    contract = "Samples.ICalculator"            # optional
    path = "calculator"                         # required
    layer = "legacy"                            # required: "legacy" or "hybrid"
    binding = "basicHttp"                       # required: basicHttp, ws2007Http, webHttp, netOneway, netEvent
                                                #   (legacy) or hybridConnection (hybrid)
    wcf_binding = "basicHttpRelayBinding"       # optional, informational
    client_auth = "relayAccessToken"            # or "none"; default relayAccessToken
    discovery = "public"                        # or "private" (the default); hybrid endpoints are always private
    display_name = "Calculator"                 # optional, at most 256 printable characters
    max_message = 65536                         # optional bytes; legacy: at most 64 KB one-way, 16 MiB otherwise
    key_name = "RootManageSharedAccessKey"      # optional: the gateway rule whose connection string the host uses

:func:`load_host_config` checks everything (unknown keys, types, values, duplicate paths) and raises
:class:`~wcfrelay.migrate.errors.MigrationError` with one line per problem, each naming the file and key.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hybrid.gateway.config import toml_type_name, validate_hc_name
from wcfrelay import link

from .errors import MigrationError, Problem
from .plan import HYBRID_BINDING, LAYERS, EndpointPlan
from .render import CONNECTION_STRING_ENV, HOST_CONFIG_VERSION

__all__ = ["HostConfig", "load_host_config", "parse_host_config"]

LEGACY_BINDINGS = tuple(b.value for b in link.Binding)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_RULE_NAME = re.compile(r"[A-Za-z0-9._-]{1,256}")
MAX_HYBRID_MESSAGE = 2**31 - 1
_TOP_KEYS = ("version", "source", "host", "endpoints")
_HOST_KEYS = ("endpoint", "connection_string_env")
_ENDPOINT_KEYS = ("name", "service", "contract", "path", "layer", "binding", "wcf_binding", "client_auth",
                  "discovery", "display_name", "max_message", "key_name")


@dataclass
class HostConfig:
    """A loaded host.toml. ``endpoints`` are :class:`EndpointPlan` objects, as
    :func:`~wcfrelay.migrate.endpoints_from_app_config` returns, so a host consumes either the same way."""

    endpoints: list[EndpointPlan] = field(default_factory=list)
    endpoint: str | None = None
    connection_string_env: str = CONNECTION_STRING_ENV
    version: int = HOST_CONFIG_VERSION
    source: str = ""
    path: str = ""

    @property
    def legacy(self) -> list[EndpointPlan]:
        return [e for e in self.endpoints if e.layer == "legacy"]

    @property
    def hybrid(self) -> list[EndpointPlan]:
        return [e for e in self.endpoints if e.layer == "hybrid"]

    def connection_string(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The host's connection string from the environment variable ``connection_string_env`` names."""
        return (environ if environ is not None else os.environ).get(self.connection_string_env)


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[Problem] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(Problem(self.source, None, key, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise MigrationError(self.items)




def _unknown(table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str, problems: _Problems) -> None:
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            problems.add(prefix + key, "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint
                                                        else f"; expected one of {', '.join(allowed)}"))


def _string(value: Any, *, empty_ok: bool = False, limit: int = 1024) -> str:
    # Checkers raise ValueError for every kind of wrong value; the caller turns it into a problem line.
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {toml_type_name(value)}")  # noqa: TRY004
    if not empty_ok and not value.strip():
        raise ValueError("must not be empty")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters")
    if any(not c.isprintable() for c in value):
        raise ValueError("must not contain control characters")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            shown = repr(value) if isinstance(value, str) else toml_type_name(value)
            raise ValueError(f"must be one of {', '.join(repr(o) for o in options)}, got {shown}")
        return value

    return check


def _url(value: Any) -> str:
    text = _string(value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("sb", "http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"must look like sb://host[:port]/ or http(s)://host[:port]/, got {text!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must not contain credentials, a query or a fragment")
    return text


def _env_name(value: Any) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise ValueError("must be an environment variable name (letters, digits and '_', not starting with a digit)")
    return value


def _path(value: Any) -> str:
    text = _string(value)
    reason = validate_hc_name(text)
    if reason:
        raise ValueError(reason)
    return text


def _rule_name(value: Any) -> str:
    if not isinstance(value, str) or not _RULE_NAME.fullmatch(value):
        raise ValueError("must be a rule name: 1-256 letters, digits, '.', '_' or '-'")
    return value


def _display_name(value: Any) -> str:
    return _string(value, empty_ok=True, limit=256)


_ENDPOINT_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": lambda v: _string(v, limit=256),
    "service": lambda v: _string(v, limit=1024),
    "contract": lambda v: _string(v, limit=1024),
    "path": _path,
    "layer": _choice(LAYERS),
    "wcf_binding": lambda v: _string(v, limit=256),
    "client_auth": _choice(tuple(c.value for c in link.ClientAuth)),
    "discovery": _choice(tuple(d.value for d in link.Discovery)),
    "display_name": _display_name,
    "key_name": _rule_name,
}


def _endpoint(item: Any, where: str, problems: _Problems, source: str) -> EndpointPlan | None:
    if not isinstance(item, dict):
        problems.add(where, f"must be a table ([[endpoints]]), got {toml_type_name(item)}")
        return None
    _unknown(item, _ENDPOINT_KEYS, f"{where}.", problems)
    values: dict[str, Any] = {}
    ok = True
    for key, check in _ENDPOINT_CHECKS.items():
        if key in item:
            try:
                values[key] = check(item[key])
            except ValueError as exc:
                problems.add(f"{where}.{key}", str(exc))
                ok = False
    for key in ("path", "layer", "binding"):
        if key not in item:
            problems.add(f"{where}.{key}", "is required")
            ok = False
    layer = values.get("layer")
    binding = item.get("binding")
    if "binding" in item:
        if layer == "legacy" and binding not in LEGACY_BINDINGS:
            shown = repr(binding) if isinstance(binding, str) else toml_type_name(binding)
            problems.add(f"{where}.binding", f"a legacy-layer endpoint's binding must be one of "
                                             f"{', '.join(LEGACY_BINDINGS)}, got {shown}")
            ok = False
        elif layer == "hybrid" and binding != HYBRID_BINDING:
            shown = repr(binding) if isinstance(binding, str) else toml_type_name(binding)
            problems.add(f"{where}.binding", f"a hybrid endpoint's binding must be {HYBRID_BINDING!r}, got {shown}")
            ok = False
        elif layer is None and not isinstance(binding, str):
            problems.add(f"{where}.binding", f"must be a string, got {toml_type_name(binding)}")
            ok = False
    if layer == "hybrid" and values.get("discovery") == link.Discovery.PUBLIC.value:
        problems.add(f"{where}.discovery", "a hybrid connection is never listed in the discovery feed; use "
                                           "'private' (or leave it out)")
        ok = False
    if "max_message" in item:
        size = item["max_message"]
        if layer == "legacy" and binding in LEGACY_BINDINGS:
            limit = link.ONEWAY_MAX_MESSAGE if link.Binding(binding).one_way else link.DEFAULT_MAX_MESSAGE
        else:
            limit = MAX_HYBRID_MESSAGE
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= limit:
            shown = repr(size) if isinstance(size, (int, float)) and not isinstance(size, bool) else toml_type_name(size)
            problems.add(f"{where}.max_message", f"must be an integer between 1 and {limit} (bytes), got {shown}")
            ok = False
        else:
            values["max_message"] = size
    if not ok:
        return None
    return EndpointPlan(
        path=values["path"], layer=layer, binding=binding,
        client_auth=values.get("client_auth", link.ClientAuth.RELAY_ACCESS_TOKEN.value),
        discovery=values.get("discovery", link.Discovery.PRIVATE.value),
        display_name=values.get("display_name", ""), max_message=values.get("max_message"),
        service=values.get("service", ""), contract=values.get("contract", ""), name=values.get("name", ""),
        key_name=values.get("key_name"), role="service", wcf_binding=values.get("wcf_binding", ""),
        status="direct", source=source,
    )


def parse_host_config(data: Mapping[str, Any], source: str = "host.toml") -> HostConfig:
    """Validate an already parsed host configuration (a dict as ``tomllib`` returns it)."""
    problems = _Problems(source)
    if not isinstance(data, Mapping):
        problems.add("", f"must be a table, got {toml_type_name(data)}")
        problems.raise_if_any()
    _unknown(data, _TOP_KEYS, "", problems)
    config = HostConfig(source="", path=source)
    version = data.get("version")
    if "version" not in data:
        problems.add("version", f"is required (version = {HOST_CONFIG_VERSION})")
    elif isinstance(version, bool) or not isinstance(version, int) or version != HOST_CONFIG_VERSION:
        shown = repr(version) if isinstance(version, int) and not isinstance(version, bool) else toml_type_name(version)
        problems.add("version", f"must be {HOST_CONFIG_VERSION}, got {shown}")
    if "source" in data:
        try:
            config.source = _string(data["source"], empty_ok=True)
        except ValueError as exc:
            problems.add("source", str(exc))
    host = data.get("host", {})
    if not isinstance(host, dict):
        problems.add("host", f"must be a table ([host]), got {toml_type_name(host)}")
        host = {}
    _unknown(host, _HOST_KEYS, "host.", problems)
    if "endpoint" in host:
        try:
            config.endpoint = _url(host["endpoint"])
        except ValueError as exc:
            problems.add("host.endpoint", str(exc))
    if "connection_string_env" in host:
        try:
            config.connection_string_env = _env_name(host["connection_string_env"])
        except ValueError as exc:
            problems.add("host.connection_string_env", str(exc))
    endpoints = data.get("endpoints", [])
    if not isinstance(endpoints, list):
        problems.add("endpoints", f"must be an array of [[endpoints]] tables, got {toml_type_name(endpoints)}")
        endpoints = []
    seen: dict[str, int] = {}
    for index, item in enumerate(endpoints):
        where = f"endpoints[{index}]"
        plan = _endpoint(item, where, problems, source)
        if plan is None:
            continue
        first = seen.get(plan.path.lower())
        if first is not None:
            problems.add(f"{where}.path", f"{plan.path!r} is already used by endpoints[{first}]")
            continue
        seen[plan.path.lower()] = index
        config.endpoints.append(plan)
    problems.raise_if_any()
    return config


def load_host_config(path: str | os.PathLike[str]) -> HostConfig:
    """Read and validate a host.toml. Raises :class:`MigrationError` (a ``ConfigError``) naming file and key."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except FileNotFoundError:
        raise MigrationError(Problem(source, None, "", "file not found")) from None
    except IsADirectoryError:
        raise MigrationError(Problem(source, None, "", "is a directory, expected a TOML file")) from None
    except OSError as exc:
        raise MigrationError(Problem(source, None, "", f"cannot read file: {exc.strerror or exc}")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MigrationError(Problem(source, line, "", "not valid UTF-8")) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
        if match:
            raise MigrationError(Problem(source, int(match[1]), "", f"column {match[2]}: TOML syntax error: "
                                                                     f"{message[: match.start()]}")) from None
        raise MigrationError(Problem(source, None, "", f"TOML syntax error: {message}")) from None
    return parse_host_config(data, source)
