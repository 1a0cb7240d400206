"""MIGRATION.md: every endpoint is in it, with the right outcome and the action the user must take."""

from __future__ import annotations

import re

from wcfrelay.migrate import plan_migration, render_report

from . import SAMPLE, config, keys_in


def sections(report: str) -> dict[str, str]:
    """Endpoint sections by their heading line."""
    parts = re.split(r"^### ", report, flags=re.MULTILINE)
    return {p.split("\n", 1)[0]: p for p in parts[1:]}


def section_for(report: str, needle: str) -> str:
    found = [body for head, body in sections(report).items() if needle in head]
    assert len(found) == 1, (needle, list(sections(report)))
    return found[0].split("\n## ", 1)[0]


def test_sample_report_mentions_every_endpoint_with_its_outcome():
    plan = plan_migration(SAMPLE)
    report = render_report(plan)
    heads = list(sections(report))
    assert len(heads) == len(plan.endpoints) == 8
    basic = section_for(report, 'service endpoint "basic"')
    assert "maps directly" in basic and "legacy layer, binding `basicHttp`" in basic
    assert "`https://contoso-calc.servicebus.windows.net/calculator` → `http://127.0.0.1:9351/calculator`" in basic
    assert 'discovery = "public"' in basic and "Calculator (BasicHttp)" in basic
    assert "RelayServiceHost" in basic and 'protocol="soap11"' in basic

    ws = section_for(report, 'service endpoint "ws"')
    assert "maps directly" in ws and "`ws2007Http`" in ws and "security mode `None`" in ws

    log = section_for(report, 'service endpoint "log"')
    assert "migrated with changes" in log and "clipped to 65536" in log and "HTTP 202" in log

    events = section_for(report, 'service endpoint "events"')
    assert "no Hybrid Connections counterpart" in events and 'client_auth = "none"' in events

    tcp = section_for(report, 'service endpoint "tcp"')
    assert "Hybrid Connections, hybrid connection `calculator-tcp`" in tcp
    assert "SOAP 1.2 envelopes over a hybrid WebSocket" in tcp and "callback" in tcp
    assert 'connectionMode="Hybrid"' in tcp and "stays relayed" in tcp
    assert "HybridConnectionListener" in tcp
    assert "`ws://127.0.0.1:9351/$hc/calculator-tcp`" in tcp

    tcp_client = section_for(report, 'client endpoint "calculatorTcpClient"')
    assert "HybridConnectionClient" in tcp_client and "cannot talk to it" in tcp_client

    mex = section_for(report, "mexHttpBinding")
    assert "not a relay endpoint" in mex


def test_report_carries_the_namespace_note_credentials_and_no_keys():
    report = render_report(plan_migration(SAMPLE))
    assert "point clients at your gateway instead of `contoso-calc.servicebus.windows.net`" in report
    assert "| `calculator-listen` | Listen |" in report
    assert "| `calculator-send` | Send |" in report
    assert "| `RootManageSharedAccessKey` | Listen, Send |" in report
    assert "tls_cert" in report  # Transport security → TLS on the gateway
    for key in keys_in(SAMPLE):
        assert key not in report


def test_manual_actions_are_prominent():
    report = render_report(plan_migration(config("ws2007_security.config")))
    assert "| **need manual action (not migrated)** | 2 |" in report
    signed = section_for(report, 'service endpoint "signed"')
    assert "manual action needed: not migrated" in signed
    assert "security mode `Message`" in signed and "NOT migrated" in signed
    plain = section_for(report, 'service endpoint "plain"')
    assert "maps directly" in plain


def test_acs_and_missing_credentials_in_the_report():
    report = render_report(plan_migration(config("acs_legacy.config")))
    echo = section_for(report, 'service endpoint "echo"')
    assert "Access Control Service" in echo and "issuer `owner`" in echo and "not supported" in echo
    assert "No usable SAS key was found" in report
    for secret in keys_in(config("acs_legacy.config")):
        assert secret not in report


def test_report_explains_the_mapping_rules():
    report = render_report(plan_migration(config("nettcp.config")))
    rules = report.split("## The mapping rules", 1)[1]
    for wcf in ("basicHttpRelayBinding", "ws2007HttpRelayBinding", "webHttpRelayBinding", "netOnewayRelayBinding",
                "netEventRelayBinding", "netTcpRelayBinding"):
        assert f"`{wcf}`" in rules
    assert "## Hybrid connections declared" in report
    assert "| `lobby` | no |" in report and "| `chat` | yes |" in report
    assert "## Warnings" in report and "nested under legacy endpoint `orders`" in report


def test_markdown_table_cells_are_escaped(tmp_path):
    path = tmp_path / "app.config"
    path.write_text('<configuration><system.serviceModel><services><service name="A|B">'
                    '<endpoint name="x|y" address="https://ns.servicebus.windows.net/p" binding="basicHttpRelayBinding"'
                    ' contract="I`J"/></service></services></system.serviceModel></configuration>')
    report = render_report(plan_migration(path))
    row = next(line for line in report.splitlines() if line.startswith("| 1 |"))
    assert "x\\|y" in row and row.count(" | ") == 5
    assert "`I'J`" in report  # a backtick cannot end the code span early
