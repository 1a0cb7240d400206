"""The written files: gateway.toml loads with the gateway's own loader and its rules verify tokens for the right
rights; keys appear in gateway.toml only (mode 0600); nothing is overwritten without force."""

from __future__ import annotations

import stat
import time
import tomllib

import pytest

from hybrid.auth import Right, build_token, check_token
from hybrid.errors import AuthenticationError, AuthorizationError
from hybrid.gateway.config import load_config
from wcfrelay.migrate import (
    MigrationError,
    load_host_config,
    plan_migration,
    render_gateway_toml,
    render_host_toml,
    render_report,
    write_outputs,
)

from . import SAMPLE, config, keys_in

GOOD = ["basic_http_public.config", "ws2007_security.config", "web_http_anonymous.config", "oneway_event.config",
        "nettcp.config", "web.config", "acs_legacy.config", "two_keys.config"]


def migrate(tmp_path, path, **kwargs):
    plan = plan_migration(path, **kwargs)
    outputs = write_outputs(plan, tmp_path / "out")
    return plan, outputs


def token(entity: str, key_name: str, key: str) -> str:
    return build_token(f"http://127.0.0.1:9351/{entity}", key_name, key, int(time.time()) + 600)


@pytest.mark.parametrize("name", GOOD)
def test_every_generated_gateway_config_loads(tmp_path, name):
    plan, outputs = migrate(tmp_path, config(name))
    gateway = load_config(outputs.gateway)
    assert gateway.dynamic is False
    assert {r.name for r in gateway.rules} == {r.name for r in plan.rules}
    assert set(gateway.hybrid_connections) == {hc.name.lower() for hc in plan.hybrid_connections}


def test_sample_rules_verify_tokens_for_the_right_rights(tmp_path):
    _plan, outputs = migrate(tmp_path, SAMPLE)
    gateway = load_config(outputs.gateway)
    listen_key, _, send_key, root_key = keys_in(SAMPLE)
    now = time.time()

    # The host's key (a behavior on the service endpoints) listens, and cannot send.
    listen = token("calculator", "calculator-listen", listen_key)
    assert check_token(listen, entity="calculator", needed=Right.LISTEN, rules=gateway.rules, now=now).name == \
        "calculator-listen"
    with pytest.raises(AuthorizationError):
        check_token(listen, entity="calculator", needed=Right.SEND, rules=gateway.rules, now=now)

    # The callers' key (a behavior on the client endpoints) sends, and cannot listen.
    send = token("calculator-tcp", "calculator-send", send_key)
    check_token(send, entity="calculator-tcp", needed=Right.SEND, rules=gateway.rules, now=now)
    with pytest.raises(AuthorizationError):
        check_token(send, entity="calculator-tcp", needed=Right.LISTEN, rules=gateway.rules, now=now)

    # The connection string's root key, used by no endpoint, gets what the configuration's roles need, not Manage.
    root = token("", "RootManageSharedAccessKey", root_key)
    for right in (Right.LISTEN, Right.SEND):
        check_token(root, entity="calculator/ws", needed=right, rules=gateway.rules, now=now)
    with pytest.raises(AuthorizationError):
        check_token(root, entity="calculator/ws", needed=Right.MANAGE, rules=gateway.rules, now=now)

    # A wrong key fails as it would on Azure.
    with pytest.raises(AuthenticationError):
        check_token(token("calculator", "calculator-listen", send_key), entity="calculator", needed=Right.LISTEN,
                    rules=gateway.rules, now=now)


def test_secondary_key_verifies_too(tmp_path):
    _, outputs = migrate(tmp_path, config("two_keys.config"))
    gateway = load_config(outputs.gateway)
    primary, secondary = keys_in(config("two_keys.config"))
    for key in (primary, secondary):
        check_token(token("a", "app", key), entity="a", needed=Right.SEND, rules=gateway.rules, now=time.time())


def test_hybrid_connections_for_net_tcp(tmp_path):
    _, outputs = migrate(tmp_path, config("nettcp.config"))
    gateway = load_config(outputs.gateway)
    assert gateway.hybrid_connections["chat"].requires_client_authorization is True
    assert gateway.hybrid_connections["lobby"].requires_client_authorization is False
    assert "orders" not in gateway.hybrid_connections  # a legacy endpoint: never declared as a hybrid connection
    # The listen key (a namespace rule) listens on the hybrid connection; the callers' key sends.
    listen_key, send_key = keys_in(config("nettcp.config"))
    check_token(token("chat", "tcp-listen", listen_key), entity="chat", needed=Right.LISTEN, rules=gateway.rules,
                now=time.time())
    check_token(token("chat", "callers", send_key), entity="chat", needed=Right.SEND, rules=gateway.rules,
                now=time.time())


def test_no_key_means_no_rule_and_the_development_namespace(tmp_path):
    _, outputs = migrate(tmp_path, config("acs_legacy.config"))
    gateway = load_config(outputs.gateway)
    assert gateway.rules == []
    text = outputs.gateway.read_text()
    assert "development root key" in text
    for secret in keys_in(config("acs_legacy.config")):
        assert secret not in text  # ACS issuer secrets are not carried over anywhere


@pytest.mark.parametrize("name", [*GOOD])
def test_keys_only_in_the_gateway_file_and_it_is_private(tmp_path, name):
    source = config(name)
    plan, outputs = migrate(tmp_path, source)
    assert stat.S_IMODE(outputs.gateway.stat().st_mode) == 0o600
    gateway_text = outputs.gateway.read_text()
    for secret in keys_in(source) + keys_in(config("relay-bindings.config")):
        assert secret not in outputs.host.read_text()
        assert secret not in outputs.report.read_text()
    for rule in plan.rules:
        assert rule.primary_key in gateway_text
        assert rule.primary_key not in repr(plan)


def test_public_url_goes_to_gateway_toml_and_the_report(tmp_path):
    _plan, outputs = migrate(tmp_path, SAMPLE, public_url="https://relay.example.com/")
    assert load_config(outputs.gateway).public_url == "https://relay.example.com/"
    report = outputs.report.read_text()
    assert "https://relay.example.com/calculator" in report
    assert "wss://relay.example.com/$hc/calculator-tcp" in report
    assert tomllib.loads(outputs.host.read_text())["host"]["endpoint"] == "https://relay.example.com/"


def test_nothing_is_overwritten_without_force(tmp_path):
    plan = plan_migration(SAMPLE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "host.toml").write_text("mine\n")
    with pytest.raises(MigrationError) as info:
        write_outputs(plan, out)
    assert "host.toml: already exists; use --force" in str(info.value)
    assert (out / "host.toml").read_text() == "mine\n"
    assert not (out / "gateway.toml").exists()  # checked before anything is written
    write_outputs(plan, out, force=True)
    assert (out / "host.toml").read_text() != "mine\n"
    assert stat.S_IMODE((out / "gateway.toml").stat().st_mode) == 0o600
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_force_tightens_an_existing_gateway_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "gateway.toml").write_text("# old\n")
    (out / "gateway.toml").chmod(0o644)
    write_outputs(plan_migration(SAMPLE), out, force=True)
    assert stat.S_IMODE((out / "gateway.toml").stat().st_mode) == 0o600


def test_toml_strings_survive_hostile_names(tmp_path):
    # Quotes and backslashes are escaped; control characters in names (a newline from &#10;, DEL) become spaces, so
    # the host file still loads with load_host_config.
    path = tmp_path / "app.config"
    path.write_text(
        '<configuration><system.serviceModel><behaviors><endpointBehaviors>'
        '<behavior name="b"><serviceRegistrySettings discoveryMode="Public" displayName="Say &quot;hi&quot; \\ [x]"/>'
        '</behavior></endpointBehaviors></behaviors><services>'
        '<service name="A&quot;B\\C\x7f"><endpoint name="e&#10;x" address="https://ns.servicebus.windows.net/p" '
        'binding="basicHttpRelayBinding" contract="I = 1 # no comment" behaviorConfiguration="b"/></service>'
        '</services></system.serviceModel></configuration>', encoding="utf-8")
    _plan, outputs = migrate(tmp_path, path)
    host = tomllib.loads(outputs.host.read_text())
    [ep] = host["endpoints"]
    assert ep["service"] == 'A"B\\C' and ep["name"] == "e x" and ep["contract"] == "I = 1 # no comment"
    assert ep["display_name"] == 'Say "hi" \\ [x]'
    [loaded] = load_host_config(outputs.host).endpoints
    assert (loaded.service, loaded.name, loaded.display_name) == ('A"B\\C', "e x", 'Say "hi" \\ [x]')
    load_config(outputs.gateway)


def test_a_display_name_with_control_characters_is_refused(tmp_path):
    path = tmp_path / "app.config"
    path.write_text('<configuration><system.serviceModel><behaviors><endpointBehaviors><behavior name="b">\n'
                    '<serviceRegistrySettings discoveryMode="Public" displayName="a&#10;b"/>\n'
                    '</behavior></endpointBehaviors></behaviors></system.serviceModel></configuration>')
    problem = pytest.raises(MigrationError, plan_migration, path).value.problems[0]
    assert problem.line == 2 and "displayName" in problem.message


def test_gateway_toml_is_deterministic():
    assert render_gateway_toml(plan_migration(SAMPLE)) == render_gateway_toml(plan_migration(SAMPLE))


def test_committed_sample_outputs_are_current():
    """samples/migration/out/ is what `wcfrelay migrate samples/migration/app.config` writes today."""
    out = SAMPLE.parent / "out"
    plan = plan_migration(SAMPLE, display="samples/migration/app.config")
    assert (out / "gateway.toml").read_text(encoding="utf-8") == render_gateway_toml(plan)
    assert (out / "host.toml").read_text(encoding="utf-8") == render_host_toml(plan)
    assert (out / "MIGRATION.md").read_text(encoding="utf-8") == render_report(plan)
