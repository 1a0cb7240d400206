"""``wcfrelay migrate`` end to end, in a subprocess: outputs, summary, refusal to overwrite, exit 2 on errors."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys

import pytest

from hybrid.gateway.config import load_config
from wcfrelay.migrate import load_host_config
from wcfrelay.migrate.cli import add_migrate_parser, main

from . import ROOT, SAMPLE, config, keys_in

#: the entry point until the lead wires `migrate` into wcfrelay/cli.py
MAIN = "import sys; from wcfrelay.migrate.cli import main; sys.exit(main(sys.argv[1:]))"


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd or ROOT,
                          env=env, check=False)


def wired() -> bool:
    from wcfrelay import cli

    try:
        cli.build_parser().parse_args(["migrate", "x.config"])
    except SystemExit:
        return False
    return True


def test_cli_writes_the_three_files_and_a_summary(tmp_path):
    out = tmp_path / "out"
    result = run("-c", MAIN, "migrate", str(SAMPLE), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {"gateway.toml", "host.toml", "MIGRATION.md"}
    assert stat.S_IMODE((out / "gateway.toml").stat().st_mode) == 0o600
    load_config(out / "gateway.toml")
    assert len(load_host_config(out / "host.toml").endpoints) == 5
    lines = result.stdout.splitlines()
    assert lines[0] == f"Read {SAMPLE}: 6 service endpoints, 2 client endpoints."
    assert any("calculator-tcp" in line and "netTcpRelayBinding" in line and "Hybrid Connections" in line
               for line in lines)
    assert any("calculator/events" in line and "legacy netEvent" in line for line in lines)
    assert "Point clients at your gateway instead of contoso-calc.servicebus.windows.net." in lines
    assert any(line.startswith("warning:") and "clipped" in line for line in lines)
    assert lines[-1].startswith("Wrote ") and "mode 0600" in lines[-1]
    for key in keys_in(SAMPLE):
        assert key not in result.stdout + result.stderr


def test_cli_without_the_command_word_and_default_out(tmp_path):
    result = run("-c", MAIN, str(SAMPLE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "MIGRATION.md").exists()


def test_cli_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "out"
    assert run("-c", MAIN, str(SAMPLE), "--out", str(out)).returncode == 0
    before = (out / "host.toml").read_text()
    (out / "host.toml").write_text("# edited by hand\n")
    again = run("-c", MAIN, str(SAMPLE), "--out", str(out))
    assert again.returncode == 2
    assert "already exists; use --force to overwrite" in again.stderr
    assert again.stderr.startswith("wcfrelay migrate: error: ")
    assert (out / "host.toml").read_text() == "# edited by hand\n"
    forced = run("-c", MAIN, str(SAMPLE), "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "host.toml").read_text() == before


def test_cli_errors_exit_2_with_the_element_and_line(tmp_path):
    result = run("-c", MAIN, str(config("broken_missing_behavior.config")), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "wcfrelay migrate: error: " in result.stderr
    assert "<endpoint name=\"a\">: behaviorConfiguration='lisen' does not exist" in result.stderr
    assert "line 14" in result.stderr and "line 13" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written on error


def test_cli_bad_public_url(tmp_path):
    result = run("-c", MAIN, str(SAMPLE), "--out", str(tmp_path), "--public-url", "ftp://x")
    assert result.returncode == 2 and "--public-url" in result.stderr


def test_python_dash_m_wcfrelay_migrate_module(tmp_path):
    result = run("-m", "wcfrelay.migrate", str(config("nettcp.config")), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    load_config(tmp_path / "gateway.toml")


@pytest.mark.skipif(not wired(), reason="`migrate` is not wired into wcfrelay/cli.py yet")
def test_python_dash_m_wcfrelay_migrate(tmp_path):
    result = run("-m", "wcfrelay", "migrate", str(SAMPLE), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "MIGRATION.md").exists()
    broken = run("-m", "wcfrelay", "migrate", str(config("broken_malformed.config")), "--out", str(tmp_path / "x"))
    assert broken.returncode == 2 and "malformed XML" in broken.stderr


def test_add_migrate_parser_fits_a_wcfrelay_style_parser(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="wcfrelay")
    sub = parser.add_subparsers(dest="command", required=True)
    add_migrate_parser(sub)
    args = parser.parse_args(["migrate", str(SAMPLE), "--out", str(tmp_path), "--force"])
    assert args.func(args) == 0
    assert "Wrote" in capsys.readouterr().out
    # Errors propagate as ConfigError so wcfrelay's main prints them and exits 2.
    args = parser.parse_args(["migrate", str(config("broken_no_servicemodel.config")), "--out", str(tmp_path)])
    from hybrid.errors import ConfigError

    with pytest.raises(ConfigError):
        args.func(args)


def test_main_in_process(tmp_path, capsys):
    assert main(["migrate", str(config("broken_doctype.config")), "--out", str(tmp_path)]) == 2
    assert "document type declarations" in capsys.readouterr().err
