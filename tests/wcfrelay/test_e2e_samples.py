"""The Calculator sample as a person runs it: a gateway, ``samples.calculator.host`` and
``samples.calculator.caller`` as separate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    seen: list[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if line.strip() == marker:
            return seen
    raise AssertionError(f"never saw {marker!r}; output: {seen!r}")


def test_sample_host_and_caller(gateway: GatewayProcess) -> None:
    host = subprocess.Popen([sys.executable, "-m", "samples.calculator.host", "--plaintext", "--log-level", "ERROR"],
                            cwd=REPO, env=_env(WCFRELAY_CONNECTION_STRING=gateway.connection_string()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _read_until(host, "status: Online", 30)
        assert f"endpoint {gateway.http_base}/calculator (BasicHttpRelayBinding)" in lines
        caller = subprocess.run([sys.executable, "-m", "samples.calculator.caller", gateway.connection_string(),
                                 "--plaintext"], cwd=REPO, env=_env(), capture_output=True, text=True,
                                timeout=60 * TIMEOUT_FACTOR, check=False)
        assert caller.returncode == 0, caller.stderr
        out = caller.stdout.splitlines()
        assert "Add(2, 40) = 42" in out
        assert "Echo('hello') = hello" in out
        assert any(line.startswith("Fail -> SOAP fault") and line.endswith("on purpose") for line in out)
        assert "WS2007 Add(20, 22) = 42" in out
        host.send_signal(signal.SIGINT)
        rest = _read_until(host, "status: Offline", 15)
        assert host.wait(15 * TIMEOUT_FACTOR) == 0, rest
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(10)


def test_sample_host_without_a_connection_string_explains(tmp_path) -> None:
    env = _env()
    env.pop("WCFRELAY_CONNECTION_STRING", None)
    result = subprocess.run([sys.executable, "-m", "samples.calculator.host"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "WCFRELAY_CONNECTION_STRING" in result.stderr
