"""Gateway configuration: one TOML file, command-line overrides, and the development namespace.

Everything is validated up front so a typo or an out-of-range value stops the gateway at start-up with a message
naming the file, the key path and the problem, instead of surfacing later as a confusing runtime failure.
Keys never appear in messages or reprs.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..auth import Right, SasRule, generate_key
from ..errors import ConfigError

__all__ = [
    "MAX_HC_NAME_LENGTH",
    "MAX_RULES_PER_SCOPE",
    "ROOT_RULE_NAME",
    "STATE_FILE_NAME",
    "GatewayConfig",
    "HybridConnectionConfig",
    "apply_overrides",
    "ensure_dev_rules",
    "load_config",
    "toml_type_name",
    "validate_hc_name",
]

ROOT_RULE_NAME = "RootManageSharedAccessKey"
STATE_FILE_NAME = "namespace.json"
STATE_FILE_VERSION = 1
MAX_RULES_PER_SCOPE = 12  # Azure's limit per namespace and per entity (spec §3.4)
MAX_HC_NAME_LENGTH = 260
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 256
MAX_LISTENERS_RANGE = (1, 1000)
MAX_SECONDS = 86400.0  # one day: larger timeouts are almost surely a unit mistake (ms for s)

_HC_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_RULE_NAME = re.compile(r"[A-Za-z0-9._-]{1,256}")
_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_RIGHT_NAMES = ("Listen", "Send", "Manage")


@dataclass
class HybridConnectionConfig:
    """One hybrid connection. ``rules`` are entity-scoped (``SasRule.entity == name``); ``declared`` is False
    for connections the gateway created on first listen in a dynamic namespace."""

    name: str
    requires_client_authorization: bool = True
    max_listeners: int = 25
    rules: list[SasRule] = field(default_factory=list)
    declared: bool = True
    # True when max_listeners came from the namespace default, so a --max-listeners-per-connection flag updates it.
    inherits_max_listeners: bool = field(default=False, repr=False, compare=False)


@dataclass
class GatewayConfig:
    """The whole gateway configuration. ``hybrid_connections`` is keyed by the lower-cased name because entity
    names are case-insensitive; ``HybridConnectionConfig.name`` keeps the declared spelling."""

    host: str = "127.0.0.1"
    port: int = 9351
    public_url: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    dev_tls: bool = False
    state_dir: str = ".wcfrelay"
    dynamic: bool = True
    max_listeners_per_connection: int = 25
    request_timeout: float = 60.0
    accept_timeout: float = 30.0
    token_grace: float = 300.0
    ping_interval: float = 30.0
    #: failed listen attempts per client address per 10 s before the gateway answers 429; 0 disables the limit
    failed_listen_limit: int = 20
    max_connections: int = 5000
    #: bytes of SOAP messages all WCF-style calls in flight may hold together (each body counts twice: as read, and
    #: inside its link message); past it callers get 503 at once
    max_soap_in_flight_bytes: int = 256 * 1024 * 1024
    redis_url: str | None = None
    node_id: str | None = None
    rules: list[SasRule] = field(default_factory=list)
    hybrid_connections: dict[str, HybridConnectionConfig] = field(default_factory=dict)
    #: path of the file this configuration came from, None for pure defaults
    source: str | None = None

    def __repr__(self) -> str:
        # Hand-written so a password inside redis_url never reaches a log line.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "redis_url" and value:
                value = _mask_url_password(value)
            parts.append(f"{f.name}={value!r}")
        return f"GatewayConfig({', '.join(parts)})"

    __str__ = __repr__


def _mask_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


# ---------------------------------------------------------------------------------------------------------------
# Problem collection: report every problem at once, one line each, so a user fixes a file in one pass.


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("\n".join(self.lines))


class _Invalid(Exception):
    """Raised by a value checker; the caller adds the file and key path."""


def toml_type_name(value: Any) -> str:
    """The TOML word for a parsed value's type, for error messages (that is what the user wrote)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _check_int(low: int, high: int, what: str = "an integer") -> Callable[[Any], int]:
    def check(value: Any) -> int:
        # bool is an int subclass in Python; `port = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            shown = repr(value) if numeric else toml_type_name(value)
            raise _Invalid(f"must be {what} between {low} and {high}, got {shown}")
        return value

    return check


def _check_seconds(*, allow_zero: bool) -> Callable[[Any], float]:
    bound = "0 or more" if allow_zero else "greater than 0"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"must be a number of seconds, {bound} and at most {MAX_SECONDS:g}, got {toml_type_name(value)}")
        number = float(value)
        ok = math.isfinite(number) and (number >= 0 if allow_zero else number > 0) and number <= MAX_SECONDS
        if not ok:
            raise _Invalid(f"must be a number of seconds, {bound} and at most {MAX_SECONDS:g}, got {value!r}")
        return number

    return check


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {toml_type_name(value)}")
    return value


def _check_text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {toml_type_name(value)}")
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _check_public_url(value: Any) -> str:
    text = _check_text(value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise _Invalid(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https", "ws", "wss", "sb") or not parts.hostname:
        raise _Invalid(f"must look like https://host[:port]/ (http, https, ws, wss or sb), got {text!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise _Invalid("must not contain credentials, a query or a fragment")
    return text


def _check_redis_url(value: Any) -> str:
    text = _check_text(value)
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        # Never echo the URL: it may carry a password.
        raise _Invalid("must start with redis://, rediss:// or unix://")
    return text


def _check_node_id(value: Any) -> str:
    if not isinstance(value, str) or not _NODE_ID.fullmatch(value):
        shown = repr(value) if isinstance(value, str) else toml_type_name(value)
        raise _Invalid(f"must be 1-64 characters of letters, digits, '.', '_' or '-', got {shown}")
    return value


# Checkers for the keys of [gateway] (and the namespace scalars), shared by the file loader and apply_overrides.
_GATEWAY_CHECKS: dict[str, Callable[[Any], Any]] = {
    "host": _check_text,
    "port": _check_int(0, 65535),
    "public_url": _check_public_url,
    "tls_cert": _check_text,
    "tls_key": _check_text,
    "dev_tls": _check_bool,
    "state_dir": _check_text,
    "request_timeout": _check_seconds(allow_zero=False),
    "accept_timeout": _check_seconds(allow_zero=False),
    "token_grace": _check_seconds(allow_zero=True),
    "ping_interval": _check_seconds(allow_zero=False),
    "failed_listen_limit": _check_int(0, 1_000_000),
    "max_connections": _check_int(1, 1_000_000),
    "max_soap_in_flight_bytes": _check_int(64 * 1024, 2**40),
    "redis_url": _check_redis_url,
    "node_id": _check_node_id,
}
_NAMESPACE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "dynamic": _check_bool,
    "max_listeners_per_connection": _check_int(*MAX_LISTENERS_RANGE),
}
_NAMESPACE_KEYS = (*_NAMESPACE_CHECKS, "rules")
_RULE_KEYS = ("name", "primary_key", "secondary_key", "rights")
_HC_KEYS = ("name", "requires_client_authorization", "max_listeners", "rules")
_TOP_KEYS = ("gateway", "namespace", "hybrid_connections")
_PATH_KEYS = ("tls_cert", "tls_key", "state_dir")


def _unknown_keys(table: Mapping[str, Any], allowed: tuple[str, ...] | Mapping[str, Any], prefix: str,
                  problems: _Problems) -> None:
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, list(allowed), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else f"; expected one of {', '.join(allowed)}"
            problems.add(f"{prefix}{key}", f"unknown key{suggestion}")


def validate_hc_name(name: Any) -> str | None:
    """Why ``name`` cannot name a hybrid connection, or None if it can. Shared with the gateway for dynamic names."""
    if not isinstance(name, str):
        return f"must be a string, got {toml_type_name(name)}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_HC_NAME_LENGTH:
        return f"must be at most {MAX_HC_NAME_LENGTH} characters, got {len(name)}"
    for segment in name.split("/"):
        if not segment:
            return f"{name!r}: segments separated by '/' must not be empty"
        if segment in (".", ".."):
            return f"{name!r}: segments '.' and '..' are not allowed"
        if not _HC_SEGMENT.fullmatch(segment):
            return f"{name!r}: segments may contain only letters, digits, '.', '_' and '-'"
    return None


def _check_key(value: Any) -> str:
    # Never include the value in a message: it is a secret.
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {toml_type_name(value)}")
    if not value:
        raise _Invalid("must not be empty")
    if len(value) < MIN_KEY_LENGTH:
        raise _Invalid(f"must be at least {MIN_KEY_LENGTH} characters, got {len(value)}")
    if len(value) > MAX_KEY_LENGTH:
        raise _Invalid(f"must be at most {MAX_KEY_LENGTH} characters, got {len(value)}")
    if any(c.isspace() or c == ";" or ord(c) < 32 for c in value):
        # A connection string splits on ';' and strips spaces, so such a key could never be presented.
        raise _Invalid("must not contain whitespace, control characters or ';'")
    return value


def _parse_rules(value: Any, path: str, entity: str | None, problems: _Problems,
                 *, what: str = "[[...rules]] tables") -> list[SasRule]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.add(path, f"must be an array of {what}, got {toml_type_name(value)}")
        return []
    if len(value) > MAX_RULES_PER_SCOPE:
        problems.add(path, f"at most {MAX_RULES_PER_SCOPE} rules per scope, got {len(value)}")
    rules: list[SasRule] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        _unknown_keys(item, _RULE_KEYS, f"{where}.", problems)
        ok = True
        name = item.get("name")
        if name is None:
            problems.add(f"{where}.name", "is required")
            ok = False
        elif not isinstance(name, str) or not _RULE_NAME.fullmatch(name):
            shown = repr(name) if isinstance(name, str) else toml_type_name(name)
            problems.add(f"{where}.name", f"must be 1-256 characters of letters, digits, '.', '_' or '-', got {shown}")
            ok = False
        else:
            # Key names pick the rule for a token (skn); two rules with one name would make that ambiguous.
            first = seen.setdefault(name.lower(), index)
            if first != index:
                problems.add(f"{where}.name", f"duplicate rule name {name!r} (also {path}[{first}])")
                ok = False
        keys: dict[str, str | None] = {}
        for key_field in ("primary_key", "secondary_key"):
            raw = item.get(key_field)
            if raw is None:
                if key_field == "primary_key":
                    problems.add(f"{where}.primary_key", "is required")
                    ok = False
                keys[key_field] = None
                continue
            try:
                keys[key_field] = _check_key(raw)
            except _Invalid as exc:
                problems.add(f"{where}.{key_field}", str(exc))
                ok = False
        rights = _parse_rights(item.get("rights"), f"{where}.rights", problems)
        if rights is None:
            ok = False
        if ok:
            assert isinstance(name, str) and keys["primary_key"] and rights is not None
            rules.append(SasRule(name=name, primary_key=keys["primary_key"], rights=rights,
                                 secondary_key=keys["secondary_key"], entity=entity))
    return rules


def _parse_rights(value: Any, path: str, problems: _Problems) -> Right | None:
    if value is None:
        problems.add(path, 'is required, e.g. rights = ["Listen", "Send"]')
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(path, f'must be an array of strings such as ["Listen", "Send"], got {toml_type_name(value)}')
        return None
    if not value:
        problems.add(path, "must name at least one of Listen, Send, Manage")
        return None
    result = Right.NONE
    for name in value:
        # Exact spelling, as Azure writes them, so the JSON schema's enum and this loader agree.
        if name not in _RIGHT_NAMES:
            problems.add(path, f"unknown right {name!r}: expected Listen, Send or Manage")
            return None
        flag = Right[name.upper()]
        if flag in result:
            problems.add(path, f"{name!r} is listed twice")
            return None
        result |= flag
    return result


def _parse_hybrid_connections(value: Any, namespace_max: int, namespace_rule_names: set[str],
                              problems: _Problems) -> dict[str, HybridConnectionConfig]:
    path = "hybrid_connections"
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.add(path, f"must be an array of [[hybrid_connections]] tables, got {toml_type_name(value)}")
        return {}
    result: dict[str, HybridConnectionConfig] = {}
    first_index: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        _unknown_keys(item, _HC_KEYS, f"{where}.", problems)
        name = item.get("name")
        if name is None:
            problems.add(f"{where}.name", "is required")
            continue
        reason = validate_hc_name(name)
        if reason:
            problems.add(f"{where}.name", reason)
            continue
        first = first_index.setdefault(name.lower(), index)
        if first != index:
            problems.add(f"{where}.name", f"duplicate hybrid connection {name!r} (names are case-insensitive; "
                                          f"also {path}[{first}])")
            continue
        hc = HybridConnectionConfig(name=name, max_listeners=namespace_max, inherits_max_listeners=True)
        if "requires_client_authorization" in item:
            try:
                hc.requires_client_authorization = _check_bool(item["requires_client_authorization"])
            except _Invalid as exc:
                problems.add(f"{where}.requires_client_authorization", str(exc))
        if "max_listeners" in item:
            try:
                hc.max_listeners = _check_int(*MAX_LISTENERS_RANGE)(item["max_listeners"])
                hc.inherits_max_listeners = False
            except _Invalid as exc:
                problems.add(f"{where}.max_listeners", str(exc))
        if "rules" in item:
            hc.rules = _parse_rules(item["rules"], f"{where}.rules", name, problems,
                                    what="[[hybrid_connections.rules]] tables")
            for r_index, rule in enumerate(hc.rules):
                # The gateway looks a token's skn up among namespace and entity rules together; a shared name
                # would let one rule's key silently shadow the other's.
                if rule.name.lower() in namespace_rule_names:
                    problems.add(f"{where}.rules[{r_index}].name",
                                 f"rule name {rule.name!r} is already used by a namespace rule")
        result[name.lower()] = hc
    return result


def _resolve_path(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path))


def _cross_checks(values: Mapping[str, Any], problems: _Problems, prefix: str,
                  spell: Callable[[str], str]) -> None:
    """Checks that involve several keys; ``spell`` turns a field name into the user's spelling of it."""
    if values.get("tls_cert") and not values.get("tls_key"):
        problems.add(prefix + spell("tls_cert"), f"is set but {spell('tls_key')} is not; both are needed")
    if values.get("tls_key") and not values.get("tls_cert"):
        problems.add(prefix + spell("tls_key"), f"is set but {spell('tls_cert')} is not; both are needed")
    if values.get("dev_tls") and values.get("tls_cert"):
        problems.add(prefix + spell("dev_tls"), f"cannot be combined with {spell('tls_cert')}; pick one")


# ---------------------------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate one TOML configuration file. Raises ConfigError listing every problem found."""
    source = os.fspath(path)
    problems = _Problems(source)
    try:
        data_bytes = Path(source).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, expected a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read file: {exc.strerror or exc}") from None
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data_bytes[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}: line {line}: not valid UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {_describe_toml_error(exc)}") from None
    config = _from_mapping(data, problems, base=Path(source).resolve().parent)
    problems.raise_if_any()
    config.source = source
    return config


def _describe_toml_error(exc: tomllib.TOMLDecodeError) -> str:
    # Python 3.11's TOMLDecodeError has no lineno attribute; the position is only in the message.
    message = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
    if match:
        return f"line {match[1]}, column {match[2]}: TOML syntax error: {message[: match.start()]}"
    match = re.search(r"\s*\(at end of document\)\s*$", message)
    if match:
        return f"end of file: TOML syntax error: {message[: match.start()]}"
    return f"TOML syntax error: {message}"


def _from_mapping(data: Mapping[str, Any], problems: _Problems, *, base: Path) -> GatewayConfig:
    _unknown_keys(data, _TOP_KEYS, "", problems)
    values: dict[str, Any] = {}

    gateway = data.get("gateway", {})
    if not isinstance(gateway, dict):
        problems.add("gateway", f"must be a table ([gateway]), got {toml_type_name(gateway)}")
        gateway = {}
    _unknown_keys(gateway, _GATEWAY_CHECKS, "gateway.", problems)
    for key, check in _GATEWAY_CHECKS.items():
        if key in gateway:
            try:
                values[key] = check(gateway[key])
            except _Invalid as exc:
                problems.add(f"gateway.{key}", str(exc))
    for key in _PATH_KEYS:
        # Paths in a file mean "next to this file", whatever directory the gateway was started from.
        if key in values:
            values[key] = _resolve_path(values[key], base)
    _cross_checks(values, problems, "gateway.", lambda name: name)

    namespace = data.get("namespace", {})
    if not isinstance(namespace, dict):
        problems.add("namespace", f"must be a table ([namespace]), got {toml_type_name(namespace)}")
        namespace = {}
    _unknown_keys(namespace, _NAMESPACE_KEYS, "namespace.", problems)
    for key, check in _NAMESPACE_CHECKS.items():
        if key in namespace:
            try:
                values[key] = check(namespace[key])
            except _Invalid as exc:
                problems.add(f"namespace.{key}", str(exc))
    if "rules" in namespace:
        values["rules"] = _parse_rules(namespace["rules"], "namespace.rules", None, problems,
                                       what="[[namespace.rules]] tables")
    namespace_max = values.get("max_listeners_per_connection", GatewayConfig.max_listeners_per_connection)
    if "hybrid_connections" in data:
        names = {rule.name.lower() for rule in values.get("rules", [])}
        values["hybrid_connections"] = _parse_hybrid_connections(data["hybrid_connections"], namespace_max, names,
                                                                 problems)
    return GatewayConfig(**values)


# ---------------------------------------------------------------------------------------------------------------


def apply_overrides(config: GatewayConfig, **flags: Any) -> GatewayConfig:
    """A copy of ``config`` with command-line values applied; a flag whose value is None was not given.

    Flag names are GatewayConfig field names (``tls_cert``, not ``--tls-cert``). Values are validated like the
    file's; relative paths resolve against the current directory. ``config`` itself is not changed.
    """
    problems = _Problems("command line")
    known = {f.name for f in fields(GatewayConfig)}
    given = {name: value for name, value in flags.items() if value is not None}

    def spell(name: str) -> str:
        return "--" + name.replace("_", "-")

    changes: dict[str, Any] = {}
    for name, value in given.items():
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known), n=1)
            problems.add(spell(name), "unknown option" + (f" (did you mean {spell(hint[0])}?)" if hint else ""))
            continue
        check = _GATEWAY_CHECKS.get(name) or _NAMESPACE_CHECKS.get(name)
        try:
            if check is not None:
                value = check(value)
            elif name == "rules":
                value = _check_rule_objects(value, entity=None)
            elif name == "hybrid_connections":
                value = _check_hc_objects(value)
            elif name == "source":
                value = os.fspath(value)
        except _Invalid as exc:
            problems.add(spell(name), str(exc))
            continue
        if name in _PATH_KEYS:
            value = str(Path(os.fspath(value)).expanduser().absolute())
        changes[name] = value
    problems.raise_if_any()

    merged = {f.name: getattr(config, f.name) for f in fields(GatewayConfig)} | changes
    # Name the file key when the file set it, else the flag: that is what the user has to change or add.
    where = {n: (spell(n) if n in changes or not merged[n] else n) for n in ("tls_cert", "tls_key", "dev_tls")}
    _cross_checks(merged, problems, "", lambda name: where[name])
    problems.raise_if_any()

    if "max_listeners_per_connection" in changes and "hybrid_connections" not in changes:
        # Connections that never set max_listeners follow the namespace default, as they would had the file said so.
        limit = changes["max_listeners_per_connection"]
        merged["hybrid_connections"] = {
            key: replace(hc, max_listeners=limit) if hc.inherits_max_listeners else hc
            for key, hc in config.hybrid_connections.items()
        }
    # Fresh containers so the caller can change the result without touching the input.
    merged["hybrid_connections"] = dict(merged["hybrid_connections"])
    merged["rules"] = list(merged["rules"])
    return replace(config, **{k: merged[k] for k in {*changes, "hybrid_connections", "rules"}})


def _check_rule_objects(value: Any, *, entity: str | None) -> list[SasRule]:
    if not isinstance(value, list) or not all(isinstance(r, SasRule) for r in value):
        raise _Invalid("must be a list of SasRule")
    if len(value) > MAX_RULES_PER_SCOPE:
        raise _Invalid(f"at most {MAX_RULES_PER_SCOPE} rules per scope, got {len(value)}")
    names = [r.name.lower() for r in value]
    if len(set(names)) != len(names):
        raise _Invalid("duplicate rule names")
    for rule in value:
        for key in rule.keys():  # noqa: SIM118 - SasRule.keys() returns its keys, not a dict view
            try:
                _check_key(key)
            except _Invalid as exc:
                raise _Invalid(f"rule {rule.name!r}: key {exc}") from None
        if rule.entity != entity:
            raise _Invalid(f"rule {rule.name!r} has the wrong scope")
    return list(value)


def _check_hc_objects(value: Any) -> dict[str, HybridConnectionConfig]:
    if not isinstance(value, dict) or not all(isinstance(v, HybridConnectionConfig) for v in value.values()):
        raise _Invalid("must be a dict of HybridConnectionConfig")
    result: dict[str, HybridConnectionConfig] = {}
    for hc in value.values():
        reason = validate_hc_name(hc.name)
        if reason:
            raise _Invalid(reason)
        if hc.name.lower() in result:
            raise _Invalid(f"duplicate hybrid connection {hc.name!r}")
        _check_int(*MAX_LISTENERS_RANGE)(hc.max_listeners)
        _check_rule_objects(hc.rules, entity=hc.name)
        result[hc.name.lower()] = hc
    return result


# ---------------------------------------------------------------------------------------------------------------
# Development namespace


def ensure_dev_rules(config: GatewayConfig) -> GatewayConfig:
    """If ``config`` has no namespace rules, a copy with the root rule kept in ``<state_dir>/namespace.json``.

    The file is created on first use (keys from ``generate_key()``, mode 0600, written atomically) and read on every
    later start so clients keep working across restarts. A corrupt file is an error, never a reason to make new keys.
    """
    if config.rules:
        return config
    for hc in config.hybrid_connections.values():
        for rule in hc.rules:
            if rule.name.lower() == ROOT_RULE_NAME.lower():
                raise ConfigError(f"{config.source or 'configuration'}: hybrid connection {hc.name!r}: rule name "
                                  f"{rule.name!r} clashes with the development namespace rule {ROOT_RULE_NAME!r}")
    state_dir = Path(config.state_dir)
    state_file = state_dir / STATE_FILE_NAME
    rules = _read_state(state_file)
    if rules is None:
        rules = _create_state(state_dir, state_file)
    return replace(config, rules=rules)


def _read_state(state_file: Path) -> list[SasRule] | None:
    """The rules in the state file, None if it does not exist."""
    try:
        raw = state_file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{state_file}: cannot read the development namespace file: {exc.strerror or exc}") from None
    hint = "fix or delete it (deleting it creates new keys, and clients must be given them)"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{state_file}: corrupt development namespace file ({exc}); {hint}") from None
    except RecursionError:
        raise ConfigError(f"{state_file}: corrupt development namespace file (nested too deeply); {hint}") from None
    problems = _Problems(str(state_file))
    if not isinstance(data, dict):
        problems.add("", f"corrupt development namespace file: expected a JSON object; {hint}")
        problems.raise_if_any()
    _unknown_keys(data, ("version", "rules"), "", problems)
    if type(data.get("version")) is not int or data["version"] != STATE_FILE_VERSION:
        problems.add("version", f"expected {STATE_FILE_VERSION}, got {data.get('version')!r}")
    rules = _parse_rules(data.get("rules"), "rules", None, problems, what="rule objects")
    if not problems.lines and not rules:
        problems.add("rules", "holds no rule")
    if problems.lines:
        problems.add("", f"corrupt development namespace file; {hint}")
    problems.raise_if_any()
    return rules


def _create_state(state_dir: Path, state_file: Path) -> list[SasRule]:
    rule = SasRule(name=ROOT_RULE_NAME, primary_key=generate_key(), secondary_key=generate_key(),
                   rights=Right.LISTEN | Right.SEND | Right.MANAGE)
    document = {
        "version": STATE_FILE_VERSION,
        "rules": [{"name": rule.name, "primary_key": rule.primary_key, "secondary_key": rule.secondary_key,
                   "rights": rule.rights.names()}],
    }
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".namespace-", suffix=".tmp", dir=state_dir)  # mkstemp uses 0600
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(f"{state_dir}: cannot create the development namespace state: {reason}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            # link() refuses to replace an existing file, so when two gateways start together on one state dir
            # only one set of keys wins and both end up serving it.
            os.link(tmp, state_file)
        except FileExistsError:
            existing = _read_state(state_file)
            if existing is None:  # deleted between link and read; extremely unlikely
                raise ConfigError(f"{state_file}: vanished while being created; start again") from None
            return existing
        except OSError:
            # File systems without hard links: fall back to an atomic rename.
            os.replace(tmp, state_file)
        _fsync_dir(state_dir)
    except OSError as exc:
        raise ConfigError(f"{state_file}: cannot write the development namespace file: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return [rule]


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; not every platform lets a directory be opened, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
