"""Configuration file loading, command-line overrides, the development namespace, and the JSON schema."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import tomllib
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from hybrid.auth import Right, SasRule
from hybrid.errors import ConfigError
from hybrid.gateway.config import (
    ROOT_RULE_NAME,
    GatewayConfig,
    HybridConnectionConfig,
    apply_overrides,
    ensure_dev_rules,
    load_config,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "gateway-config.schema.json").read_text())
DOCS = ROOT / "docs" / "configuration.md"

KEY_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa="
KEY_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb="
KEY_C = "cccccccccccccccccccccccccccccccccccccccccccc"


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> tuple[str, Path]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value), path


def schema_errors(text: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [e.message for e in validator.iter_errors(tomllib.loads(text))]


# ---------------------------------------------------------------------------------------------------------------
# Good files

FULL = f"""
[gateway]
host = "0.0.0.0"
port = 8443
public_url = "https://relay.example.test:8443/"
tls_cert = "certs/relay.pem"
tls_key = "/etc/relay/key.pem"
state_dir = "state"
request_timeout = 12
accept_timeout = 7.5
token_grace = 0
ping_interval = 15.0
failed_listen_limit = 0
max_connections = 100
max_soap_in_flight_bytes = 1048576
redis_url = "redis://:hunter2-secret@redis.local:6379/0"
node_id = "node-a"

[namespace]
dynamic = false
max_listeners_per_connection = 7

[[namespace.rules]]
name = "RootManageSharedAccessKey"
primary_key = "{KEY_A}"
secondary_key = "{KEY_B}"
rights = ["Listen", "Send", "Manage"]

[[hybrid_connections]]
name = "Orders/EU"
requires_client_authorization = false
max_listeners = 3

[[hybrid_connections.rules]]
name = "orders-listen"
primary_key = "{KEY_C}"
rights = ["Listen"]

[[hybrid_connections]]
name = "echo"
"""


def test_full_file_is_read_into_typed_config(tmp_path):
    path = write(tmp_path, FULL)
    config = load_config(path)

    assert (config.host, config.port, config.public_url) == ("0.0.0.0", 8443, "https://relay.example.test:8443/")
    # Relative paths are relative to the file, absolute ones stay as written.
    assert config.tls_cert == str(tmp_path / "certs" / "relay.pem")
    assert config.tls_key == "/etc/relay/key.pem"
    assert config.state_dir == str(tmp_path / "state")
    assert config.request_timeout == 12.0 and isinstance(config.request_timeout, float)
    assert (config.accept_timeout, config.token_grace, config.ping_interval) == (7.5, 0.0, 15.0)
    assert (config.failed_listen_limit, config.max_connections) == (0, 100)
    assert config.max_soap_in_flight_bytes == 1048576
    assert config.redis_url == "redis://:hunter2-secret@redis.local:6379/0"
    assert config.node_id == "node-a"
    assert config.dynamic is False and config.max_listeners_per_connection == 7
    assert config.source == str(path)

    [root] = config.rules
    assert root == SasRule(ROOT_RULE_NAME, KEY_A, Right.LISTEN | Right.SEND | Right.MANAGE, KEY_B, None)

    # Keyed by lower-cased name; the declared spelling is kept and scopes the entity's rules.
    assert set(config.hybrid_connections) == {"orders/eu", "echo"}
    orders = config.hybrid_connections["orders/eu"]
    assert orders.name == "Orders/EU" and orders.declared
    assert orders.requires_client_authorization is False and orders.max_listeners == 3
    assert orders.rules == [SasRule("orders-listen", KEY_C, Right.LISTEN, None, "Orders/EU")]
    echo = config.hybrid_connections["echo"]
    # Not set on the connection: the namespace default applies.
    assert (echo.requires_client_authorization, echo.max_listeners, echo.rules) == (True, 7, [])


def test_empty_file_gives_defaults(tmp_path):
    path = write(tmp_path, "# nothing here\n")
    assert load_config(path) == replace(GatewayConfig(), source=str(path))
    assert GatewayConfig().port == 9351 and GatewayConfig().dynamic is True


def test_empty_tables_are_fine(tmp_path):
    config = load_config(write(tmp_path, "hybrid_connections = []\n[gateway]\n[namespace]\nrules = []\n"))
    assert config.rules == [] and config.hybrid_connections == {}


def test_port_zero_and_boundaries_accepted(tmp_path):
    text = "[gateway]\nport = 0\n[namespace]\nmax_listeners_per_connection = 1000\n"
    config = load_config(write(tmp_path, text))
    assert config.port == 0 and config.max_listeners_per_connection == 1000


def test_hybrid_connection_names_with_slashes_dots_and_dashes(tmp_path):
    names = ["a", "orders/eu", "a.b-c_d/e.f", "x" * 260, "v1.0/..x/x.."]
    text = "".join(f'[[hybrid_connections]]\nname = "{n}"\n' for n in names)
    config = load_config(write(tmp_path, text))
    assert [hc.name for hc in config.hybrid_connections.values()] == names


def test_repr_and_str_never_show_keys_or_redis_password(tmp_path):
    config = load_config(write(tmp_path, FULL))
    for text in (repr(config), str(config), repr(config.hybrid_connections), repr(config.rules)):
        for secret in (KEY_A, KEY_B, KEY_C, "hunter2-secret"):
            assert secret not in text
    assert "redis.local" in repr(config)  # still useful for debugging


# ---------------------------------------------------------------------------------------------------------------
# Bad files. Each case: (toml text, key path named in the message, fragment of the reason, schema also rejects).

def rule(name: str = "r", key: str = KEY_A, rights: str = '["Send"]', extra: str = "") -> str:
    return f'name = "{name}"\nprimary_key = "{key}"\nrights = {rights}\n{extra}'


def ns_rule(**kw: str) -> str:
    return "[[namespace.rules]]\n" + rule(**kw)


def hc(name: str = "hc", extra: str = "") -> str:
    return f'[[hybrid_connections]]\nname = "{name}"\n{extra}'


BAD_CASES = [
    # unknown keys (typos)
    ("gatway = 1\n", "gatway", "unknown key (did you mean 'gateway'?)", True),
    ("[gateway]\nprot = 80\n", "gateway.prot", "unknown key (did you mean 'port'?)", True),
    ("[namespace]\ndynamc = true\n", "namespace.dynamc", "did you mean 'dynamic'?", True),
    (hc(extra="max_listner = 3\n"), "hybrid_connections[0].max_listner", "did you mean 'max_listeners'?", True),
    ("[[namespace.rules]]\n" + rule(extra='right = ["Send"]\n'), "namespace.rules[0].right", "did you mean 'rights'?",
     True),
    ("[gateway]\nzzz = 1\n", "gateway.zzz", "unknown key; expected one of host, port", True),
    # wrong types and ranges in [gateway]
    ('[gateway]\nport = "80"\n', "gateway.port", "must be an integer between 0 and 65535, got string", True),
    ("[gateway]\nport = 70000\n", "gateway.port", "must be an integer between 0 and 65535, got 70000", True),
    ("[gateway]\nport = -1\n", "gateway.port", "got -1", True),
    ("[gateway]\nport = true\n", "gateway.port", "got boolean", True),
    ("[gateway]\nport = 80.5\n", "gateway.port", "got 80.5", True),
    ('[gateway]\nhost = ""\n', "gateway.host", "must not be empty", True),
    ("[gateway]\nhost = 5\n", "gateway.host", "must be a string, got integer", True),
    ("[gateway]\nrequest_timeout = 0\n", "gateway.request_timeout", "greater than 0", True),
    ("[gateway]\naccept_timeout = -1.5\n", "gateway.accept_timeout", "greater than 0", True),
    ("[gateway]\nping_interval = inf\n", "gateway.ping_interval", "got inf", True),
    ("[gateway]\nping_interval = nan\n", "gateway.ping_interval", "got nan", False),  # NaN defeats JSON Schema bounds
    ("[gateway]\ntoken_grace = -1\n", "gateway.token_grace", "0 or more", True),
    ('[gateway]\nrequest_timeout = "60s"\n', "gateway.request_timeout", "got string", True),
    ("[gateway]\nrequest_timeout = 90000\n", "gateway.request_timeout", "at most 86400", True),
    ("[gateway]\nmax_connections = 0\n", "gateway.max_connections", "between 1 and 1000000, got 0", True),
    ("[gateway]\nfailed_listen_limit = -1\n", "gateway.failed_listen_limit", "between 0 and 1000000", True),
    ("[gateway]\nmax_soap_in_flight_bytes = 65535\n", "gateway.max_soap_in_flight_bytes",
     "between 65536 and 1099511627776, got 65535", True),
    ("[gateway]\nmax_soap_in_flight_bytes = 1099511627777\n", "gateway.max_soap_in_flight_bytes", "got 1099511627777",
     True),
    ('[gateway]\nmax_soap_in_flight_bytes = "256MiB"\n', "gateway.max_soap_in_flight_bytes", "got string", True),
    ("[gateway]\nmax_soap_in_flight_bytes = 1.5\n", "gateway.max_soap_in_flight_bytes", "got 1.5", True),
    ("[gateway]\nmax_soap_in_flight_bytes = true\n", "gateway.max_soap_in_flight_bytes", "got boolean", True),
    ('[gateway]\ndev_tls = "yes"\n', "gateway.dev_tls", "must be true or false, got string", True),
    ('[gateway]\npublic_url = "ftp://x.test/"\n', "gateway.public_url", "must look like", True),
    ('[gateway]\npublic_url = "https://u:p@x.test/"\n', "gateway.public_url", "credentials", True),
    ('[gateway]\nredis_url = "http://x:pw@r.test"\n', "gateway.redis_url", "must start with redis://", True),
    ('[gateway]\nnode_id = "a b"\n', "gateway.node_id", "1-64 characters", True),
    ('[gateway]\ntls_cert = "c.pem"\n', "gateway.tls_cert", "tls_key is not", True),
    ('[gateway]\ntls_key = "k.pem"\n', "gateway.tls_key", "tls_cert is not", True),
    ('[gateway]\ndev_tls = true\ntls_cert = "c.pem"\ntls_key = "k.pem"\n', "gateway.dev_tls", "cannot be combined",
     True),
    # tables of the wrong kind
    ("gateway = 5\n", "gateway", "must be a table", True),
    ("namespace = []\n", "namespace", "must be a table", True),
    ("[namespace.rules]\nname = 'x'\n", "namespace.rules", "must be an array of [[namespace.rules]] tables", True),
    ("[hybrid_connections]\nname = 'x'\n", "hybrid_connections", "must be an array of [[hybrid_connections]]", True),
    ('hybrid_connections = ["x"]\n', "hybrid_connections", "must be an array", True),
    # [namespace]
    ("[namespace]\ndynamic = 1\n", "namespace.dynamic", "must be true or false, got integer", True),
    ("[namespace]\nmax_listeners_per_connection = 0\n", "namespace.max_listeners_per_connection",
     "between 1 and 1000, got 0", True),
    # rules
    (ns_rule(key=""), "namespace.rules[0].primary_key", "must not be empty", True),
    (ns_rule(key="short"), "namespace.rules[0].primary_key", "at least 16 characters, got 5", True),
    (ns_rule(key="x" * 15), "namespace.rules[0].primary_key", "at least 16 characters, got 15", True),
    (ns_rule(key="x" * 257), "namespace.rules[0].primary_key", "at most 256 characters", True),
    (ns_rule(key="with space 1234567890"), "namespace.rules[0].primary_key", "must not contain whitespace", True),
    (ns_rule(key="semi;colon1234567890"), "namespace.rules[0].primary_key", "';'", True),
    (ns_rule(extra='secondary_key = "tiny"\n'), "namespace.rules[0].secondary_key", "at least 16", True),
    (ns_rule(extra="secondary_key = 12\n"), "namespace.rules[0].secondary_key", "must be a string, got integer", True),
    ('[[namespace.rules]]\nname = "r"\nrights = ["Send"]\n', "namespace.rules[0].primary_key", "is required", True),
    (f'[[namespace.rules]]\nprimary_key = "{KEY_A}"\nrights = ["Send"]\n', "namespace.rules[0].name", "is required",
     True),
    (ns_rule(name="has space"), "namespace.rules[0].name", "letters, digits", True),
    (f'[[namespace.rules]]\nname = "r"\nprimary_key = "{KEY_A}"\n', "namespace.rules[0].rights", "is required", True),
    (ns_rule(rights='["Lisen"]'), "namespace.rules[0].rights", "unknown right 'Lisen': expected Listen, Send or Manage",
     True),
    (ns_rule(rights='["listen"]'), "namespace.rules[0].rights", "unknown right 'listen'", True),
    (ns_rule(rights="[]"), "namespace.rules[0].rights", "at least one", True),
    (ns_rule(rights='["Send", "Send"]'), "namespace.rules[0].rights", "listed twice", True),
    (ns_rule(rights='"Send"'), "namespace.rules[0].rights", "must be an array of strings", True),
    ("".join(ns_rule(name=f"r{i}") for i in range(13)), "namespace.rules", "at most 12 rules per scope, got 13", True),
    (ns_rule(name="dup") + ns_rule(name="DUP"), "namespace.rules[1].name", "duplicate rule name 'DUP'", False),
    # hybrid connections
    (hc(extra="max_listeners = 0\n"), "hybrid_connections[0].max_listeners",
     "must be an integer between 1 and 1000, got 0", True),
    (hc(extra="max_listeners = 1001\n"), "hybrid_connections[0].max_listeners", "got 1001", True),
    (hc(extra="requires_client_authorization = 1\n"), "hybrid_connections[0].requires_client_authorization",
     "must be true or false", True),
    ("[[hybrid_connections]]\nmax_listeners = 2\n", "hybrid_connections[0].name", "is required", True),
    (hc(name=""), "hybrid_connections[0].name", "must not be empty", True),
    ("[[hybrid_connections]]\nname = 5\n", "hybrid_connections[0].name", "must be a string, got integer", True),
    (hc(name="a//b"), "hybrid_connections[0].name", "must not be empty", True),
    (hc(name="/lead"), "hybrid_connections[0].name", "must not be empty", True),
    (hc(name="trail/"), "hybrid_connections[0].name", "must not be empty", True),
    (hc(name="a/./b"), "hybrid_connections[0].name", "'.' and '..' are not allowed", True),
    (hc(name=".."), "hybrid_connections[0].name", "'.' and '..' are not allowed", True),
    (hc(name="../etc"), "hybrid_connections[0].name", "'.' and '..' are not allowed", True),
    (hc(name="a b"), "hybrid_connections[0].name", "only letters, digits", True),
    (hc(name="$hc"), "hybrid_connections[0].name", "only letters, digits", True),
    (hc(name="x" * 261), "hybrid_connections[0].name", "at most 260 characters, got 261", True),
    (hc(name="orders") + hc(name="ORDERS"), "hybrid_connections[1].name", "duplicate hybrid connection 'ORDERS'",
     False),
    (hc(name="a") + hc(name="b", extra="max_listeners = 0\n"), "hybrid_connections[1].max_listeners",
     "must be an integer between 1 and 1000, got 0", True),
    (hc() + hc(name="b") + "[[hybrid_connections.rules]]\n" + rule(rights='["Sned"]'),
     "hybrid_connections[1].rules[0].rights", "unknown right 'Sned'", True),
    (hc() + "".join("[[hybrid_connections.rules]]\n" + rule(name=f"r{i}") for i in range(13)),
     "hybrid_connections[0].rules", "at most 12 rules per scope", True),
    (hc() + "[[hybrid_connections.rules]]\n" + rule(name="x") + "[[hybrid_connections.rules]]\n" + rule(name="x"),
     "hybrid_connections[0].rules[1].name", "duplicate rule name", False),
    (ns_rule(name="shared") + hc() + "[[hybrid_connections.rules]]\n" + rule(name="Shared"),
     "hybrid_connections[0].rules[0].name", "already used by a namespace rule", False),
]


@pytest.mark.parametrize("text,key_path,reason,_schema", BAD_CASES, ids=[c[1] + ":" + c[2][:30] for c in BAD_CASES])
def test_bad_file_names_file_key_and_problem(tmp_path, text, key_path, reason, _schema):
    message, path = load_error(tmp_path, text)
    # The message starts with the file, then the key path, then the reason.
    assert f"{path}: {key_path}: " in message, message
    line = next(ln for ln in message.splitlines() if f"{path}: {key_path}: " in ln)
    assert reason in line, message


def test_brief_example_message_is_exact(tmp_path):
    message, path = load_error(tmp_path, hc(name="a") + hc(name="b", extra="max_listeners = 0\n"))
    assert message == f"{path}: hybrid_connections[1].max_listeners: must be an integer between 1 and 1000, got 0"


def test_key_text_never_appears_in_errors(tmp_path):
    secret = "SuperSecret;123456789"
    message, _ = load_error(tmp_path, ns_rule(key=secret) + ns_rule(name="r2", key="tinysecret"))
    assert secret not in message and "tinysecret" not in message
    assert "namespace.rules[0].primary_key" in message and "namespace.rules[1].primary_key" in message


def test_every_problem_is_reported_at_once(tmp_path):
    message, path = load_error(tmp_path, "[gateway]\nport = -1\nprot = 1\n" + hc(extra="max_listeners = 0\n"))
    lines = message.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}: ") for line in lines)
    keys = {line.split(": ")[1] for line in lines}
    assert keys == {"gateway.port", "gateway.prot", "hybrid_connections[0].max_listeners"}


def test_toml_syntax_error_reports_line(tmp_path):
    message, path = load_error(tmp_path, '[gateway]\nport = 1\nhost = = "x"\n')
    assert message.startswith(f"{path}: line 3, column ")
    assert "TOML syntax error" in message


def test_toml_duplicate_key_is_a_syntax_error(tmp_path):
    message, path = load_error(tmp_path, "[gateway]\nport = 1\nport = 2\n")
    assert message.startswith(f"{path}: line ") and "TOML syntax error" in message


def test_non_utf8_file(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_bytes(b"[gateway]\nhost = \"\xff\"\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line 2: not valid UTF-8")):
        load_config(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: file not found")):
        load_config(path)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: is a directory")):
        load_config(tmp_path)


def test_unreadable_path(tmp_path):
    # A regular file used as a folder fails for every user, root included.
    blocker = write(tmp_path, "", name="plain")
    path = blocker / "gateway.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read file: ")):
        load_config(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a mode-000 file")
def test_unreadable_file_permissions(tmp_path):
    path = write(tmp_path, "")
    path.chmod(0)
    try:
        with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read file: Permission denied")):
            load_config(path)
    finally:
        path.chmod(0o600)


# ---------------------------------------------------------------------------------------------------------------
# Command-line overrides


def test_flags_override_file_values_and_none_means_not_given(tmp_path):
    config = load_config(write(tmp_path, FULL))
    result = apply_overrides(config, port=0, host=None, dynamic=True, request_timeout=5, redis_url=None)
    assert (result.port, result.dynamic, result.request_timeout) == (0, True, 5.0)
    assert result.host == "0.0.0.0" and result.redis_url == config.redis_url  # not given: file value kept
    assert config.port == 8443 and config.dynamic is False  # the input is not changed
    assert result.rules == config.rules and result.source == config.source


def test_flag_false_overrides_true(tmp_path):
    config = load_config(write(tmp_path, "[gateway]\ndev_tls = true\n"))
    assert apply_overrides(config, dev_tls=False).dev_tls is False


@pytest.mark.parametrize("flags,flag,reason", [
    ({"port": 70000}, "--port", "must be an integer between 0 and 65535, got 70000"),
    ({"port": "80"}, "--port", "got string"),
    ({"request_timeout": 0}, "--request-timeout", "greater than 0"),
    ({"max_listeners_per_connection": 0}, "--max-listeners-per-connection", "between 1 and 1000"),
    ({"dev_tls": "yes"}, "--dev-tls", "must be true or false"),
    ({"prot": 1}, "--prot", "unknown option (did you mean --port?)"),
    ({"tls_cert": "c.pem"}, "--tls-cert", "--tls-key is not"),
    ({"node_id": ""}, "--node-id", "1-64 characters"),
    ({"rules": [SasRule("r", "short", Right.SEND)]}, "--rules", "at least 16 characters"),
    ({"rules": [SasRule("r", KEY_A, Right.SEND), SasRule("R", KEY_B, Right.SEND)]}, "--rules", "duplicate"),
])
def test_bad_flags_are_named(flags, flag, reason):
    with pytest.raises(ConfigError) as info:
        apply_overrides(GatewayConfig(), **flags)
    assert str(info.value).startswith(f"command line: {flag}: ")
    assert reason in str(info.value)


def test_flag_conflicting_with_file_is_refused(tmp_path):
    config = load_config(write(tmp_path, '[gateway]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'))
    with pytest.raises(ConfigError, match=r"^command line: --dev-tls: cannot be combined with tls_cert"):
        apply_overrides(config, dev_tls=True)


def test_tls_flags_resolve_against_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = apply_overrides(GatewayConfig(), tls_cert="c.pem", tls_key="sub/k.pem", state_dir="st")
    assert config.tls_cert == str(tmp_path / "c.pem")
    assert config.tls_key == str(tmp_path / "sub" / "k.pem")
    assert config.state_dir == str(tmp_path / "st")


def test_max_listeners_flag_updates_only_inheriting_connections(tmp_path):
    text = "[namespace]\nmax_listeners_per_connection = 5\n" + hc(name="inherits") + hc(name="own",
                                                                                          extra="max_listeners = 9\n")
    config = apply_overrides(load_config(write(tmp_path, text)), max_listeners_per_connection=40)
    assert config.max_listeners_per_connection == 40
    assert config.hybrid_connections["inherits"].max_listeners == 40
    assert config.hybrid_connections["own"].max_listeners == 9


def test_hybrid_connections_override_is_validated():
    bad = {"x": HybridConnectionConfig(name="a//b")}
    with pytest.raises(ConfigError, match=r"^command line: --hybrid-connections: .*must not be empty"):
        apply_overrides(GatewayConfig(), hybrid_connections=bad)
    good = {"whatever": HybridConnectionConfig(name="Orders")}
    assert set(apply_overrides(GatewayConfig(), hybrid_connections=good).hybrid_connections) == {"orders"}


# ---------------------------------------------------------------------------------------------------------------
# Development namespace


def dev_config(tmp_path: Path, **kw) -> GatewayConfig:
    return GatewayConfig(state_dir=str(tmp_path / "state"), **kw)


def test_dev_rules_created_with_mode_0600_and_kept_across_restarts(tmp_path):
    first = ensure_dev_rules(dev_config(tmp_path))
    state_file = tmp_path / "state" / "namespace.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700

    [root] = first.rules
    assert root.name == ROOT_RULE_NAME and root.entity is None
    assert root.rights == Right.LISTEN | Right.SEND | Right.MANAGE
    assert len(root.primary_key) == 44 and len(root.secondary_key or "") == 44
    assert root.primary_key != root.secondary_key

    stored = json.loads(state_file.read_text())
    assert stored["rules"][0]["primary_key"] == root.primary_key

    # A "restart": a fresh config object reads the same keys back.
    second = ensure_dev_rules(dev_config(tmp_path))
    assert second.rules == first.rules
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["namespace.json"]  # no temp files left


def test_dev_rules_keep_the_rest_of_the_config(tmp_path):
    base = dev_config(tmp_path, port=1234, hybrid_connections={"a": HybridConnectionConfig("a")})
    result = ensure_dev_rules(base)
    assert result.port == 1234 and result.hybrid_connections == base.hybrid_connections
    assert base.rules == []  # input untouched


def test_dev_rules_not_used_when_namespace_rules_exist(tmp_path):
    config = dev_config(tmp_path, rules=[SasRule("mine", KEY_A, Right.SEND)])
    assert ensure_dev_rules(config) is config
    assert not (tmp_path / "state").exists()


def test_dev_rules_never_appear_in_repr(tmp_path):
    config = ensure_dev_rules(dev_config(tmp_path))
    assert config.rules[0].primary_key not in repr(config)
    assert config.rules[0].secondary_key not in str(config)


@pytest.mark.parametrize("content,fragment", [
    (b"{not json", "corrupt development namespace file"),
    (b"", "corrupt development namespace file"),
    (b"[]", "corrupt development namespace file"),
    (b'{"version": 1, "rules": []}', "holds no rule"),
    (b'{"version": 2, "rules": []}', "version: expected 1"),
    (json.dumps({"version": 1, "rules": [{"name": "R", "primary_key": "short", "rights": ["Send"]}]}).encode(),
     "rules[0].primary_key: must be at least 16 characters"),
    (json.dumps({"version": 1, "rules": [{"name": "R", "primary_key": KEY_A, "rights": ["Sned"]}]}).encode(),
     "rules[0].rights: unknown right"),
    (b"\xff\xfe", "corrupt development namespace file"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_corrupt_state_file_is_an_error_and_keys_are_not_regenerated(tmp_path, content, fragment):
    state = tmp_path / "state"
    state.mkdir()
    state_file = state / "namespace.json"
    state_file.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        ensure_dev_rules(dev_config(tmp_path))
    assert str(state_file) in str(info.value)
    assert fragment in str(info.value)
    assert state_file.read_bytes() == content


def test_state_file_that_cannot_be_read(tmp_path):
    (tmp_path / "state" / "namespace.json").mkdir(parents=True)
    with pytest.raises(ConfigError, match="namespace.json: cannot read"):
        ensure_dev_rules(dev_config(tmp_path))


def test_state_dir_that_cannot_be_created(tmp_path):
    write(tmp_path, "", name="state")  # a file where the folder should be
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "state"))):
        ensure_dev_rules(dev_config(tmp_path))


def test_entity_rule_named_like_the_root_rule_is_refused(tmp_path):
    hc_cfg = HybridConnectionConfig("a", rules=[SasRule(ROOT_RULE_NAME, KEY_A, Right.SEND, entity="a")])
    with pytest.raises(ConfigError, match="clashes with the development namespace rule"):
        ensure_dev_rules(dev_config(tmp_path, hybrid_connections={"a": hc_cfg}))


def test_concurrent_first_starts_agree_on_one_key(tmp_path):
    results: list[GatewayConfig] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(ensure_dev_rules(dev_config(tmp_path)))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert len({r.rules[0].primary_key for r in results}) == 1
    assert ensure_dev_rules(dev_config(tmp_path)).rules == results[0].rules


# ---------------------------------------------------------------------------------------------------------------
# JSON schema: valid samples pass, invalid fail, and it agrees with load_config


def test_schema_is_valid_draft_2020_12():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["additionalProperties"] is False


def docs_example() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks, "docs/configuration.md has no toml example"
    return blocks[0]


GOOD_SAMPLES = {
    "empty": "",
    "full": FULL,
    "docs-example": None,  # filled in from docs/configuration.md
    "dev-tls": "[gateway]\ndev_tls = true\nport = 0\n",
    "minimal-hc": hc(name="orders/eu"),
    "twelve-rules": "".join(ns_rule(name=f"r{i}") for i in range(12)),
    "all-rights-orders": ns_rule(rights='["Manage", "Listen"]'),
}


@pytest.mark.parametrize("name", sorted(GOOD_SAMPLES))
def test_good_samples_pass_schema_and_loader(tmp_path, name):
    text = GOOD_SAMPLES[name] if GOOD_SAMPLES[name] is not None else docs_example()
    assert schema_errors(text) == []
    load_config(write(tmp_path, text))  # does not raise


@pytest.mark.parametrize("text,key_path,reason,schema_rejects", BAD_CASES,
                         ids=[c[1] + ":" + c[2][:30] for c in BAD_CASES])
def test_schema_agrees_with_loader_on_bad_files(tmp_path, text, key_path, reason, schema_rejects):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pytest.fail("bad cases must be valid TOML so the schema can judge them")
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    if schema_rejects:
        assert errors, f"schema accepted a file load_config rejects: {text!r}"
    else:
        # Documented limits of JSON Schema (duplicates across items, NaN); load_config is authoritative there.
        assert not errors, f"case marked loader-only but the schema rejects it: {errors[0].message}"
