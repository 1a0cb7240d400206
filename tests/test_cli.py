"""The `wcfrelay` command as a person or a script uses it: real processes, real output."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time

import aiohttp
import pytest
import websockets

from hybrid.auth import ConnectionString, parse_token
from tests.support.gateway_process import TIMEOUT_FACTOR, start_gateway
from tests.support.raw_listener import RawListener


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wcfrelay", *args], capture_output=True, text=True,
                          timeout=timeout * TIMEOUT_FACTOR, check=False)


def test_port_zero_prints_the_real_port_and_restarts_keep_the_key(tmp_path):
    first = start_gateway(tmp_path / "state")
    try:
        assert first.port != 0
        line = next(x for x in first.output if x.startswith("Endpoint="))
        cs = ConnectionString.parse(line)
        assert cs.endpoint == f"sb://127.0.0.1:{first.port}/"
        assert cs.key_name == "RootManageSharedAccessKey" and len(cs.key or "") >= 40
    finally:
        first.stop()
    second = start_gateway(tmp_path / "state")
    try:
        assert second.key == first.key  # kept in the state file
    finally:
        second.stop()
    assert oct((tmp_path / "state" / "namespace.json").stat().st_mode & 0o777) == "0o600"


def test_two_fresh_state_dirs_get_different_keys(tmp_path):
    a, b = start_gateway(tmp_path / "a"), start_gateway(tmp_path / "b")
    try:
        assert a.key != b.key
    finally:
        a.stop()
        b.stop()


def test_token_command_signs_for_the_connection_string_entity(tmp_path):
    cs = "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=Root;SharedAccessKey=abcdefghijklmnop0123;EntityPath=hc"
    out = run_cli("token", "--connection-string", cs, "--ttl", "60")
    assert out.returncode == 0, out.stderr
    token = parse_token(out.stdout.strip())
    assert token.key_name == "Root" and token.resource == "http://127.0.0.1:9/hc"
    assert 0 < token.expiry - time.time() <= 61


@pytest.mark.parametrize("args,needle", [
    (["token", "--connection-string", "nonsense"], "Endpoint"),
    (["token", "--connection-string", "Endpoint=sb://h/;SharedAccessKeyName=x"], "SharedAccessKey"),
    (["token", "--key-name", "x"], "--resource"),
    (["token", "--connection-string", "Endpoint=sb://h/;SharedAccessKeyName=x;SharedAccessKey=y", "--ttl", "-5"],
     "--ttl"),
    (["gateway", "--config", "/nonexistent/gw.toml"], "gw.toml"),
    (["gateway", "--port", "70000"], "port"),
])
def test_bad_command_lines_fail_with_a_clear_message(args, needle):
    out = run_cli(*args)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_names_file_and_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[gateway]\nrequest_timeout = "soon"\n')
    out = run_cli("gateway", "--config", str(cfg))
    assert out.returncode == 2
    assert "bad.toml" in out.stderr and "gateway.request_timeout" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_flag_is_refused():
    out = run_cli("gateway", "--no-such-flag")
    assert out.returncode == 2 and "--no-such-flag" in out.stderr


def test_binding_beyond_loopback_without_tls_warns_loudly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "wcfrelay", "gateway", "--host", "0.0.0.0", "--port", "0",
                             "--state-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines = []
        deadline = time.monotonic() + 20 * TIMEOUT_FACTOR
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("Gateway ready"):
                break
        text = "".join(lines)
        assert "WITHOUT TLS" in text and "WARNING" in text
    finally:
        proc.terminate()
        proc.wait(10)


def test_default_event_loop_is_asyncio(gateway):
    assert any("event loop asyncio" in line for line in gateway.output), gateway.output


def test_loopback_without_tls_does_not_warn(gateway):
    assert not any("WITHOUT TLS" in line for line in gateway.output)


def test_keys_never_appear_in_logs(gateway):
    # Only the connection-string lines on stdout carry the key; no log line does.
    log_lines = [x for x in gateway.output if " INFO " in x or " WARNING " in x or " ERROR " in x]
    assert log_lines and not any(gateway.key in x for x in log_lines)


async def test_dev_tls_serves_wss_and_https_with_a_trustable_certificate(tmp_path):
    state = tmp_path / "tls-state"
    gw = start_gateway(state, "--dev-tls", tls=True)
    try:
        cert = state / "dev-cert.pem"
        assert cert.exists()
        context = ssl.create_default_context(cafile=str(cert))
        gw.host = "localhost"  # the certificate names localhost
        async with RawListener(gw.listen_url("secure"), gw.token("secure"), ssl=context) as listener:
            async with websockets.connect(gw.connect_url("secure"), ssl=context, compression=None,
                                          additional_headers={"ServiceBusAuthorization": gw.token("secure")}) as ws:
                await ws.send("over tls")
                assert await ws.recv() == "over tls"
            assert listener.accepts[0]["address"].startswith("wss://localhost:")
            async with aiohttp.ClientSession() as s:
                async with s.post(f"{gw.http_base}/secure", data=b"x", ssl=context,
                                  headers={"ServiceBusAuthorization": gw.token("secure")}) as r:
                    assert r.status == 200 and await r.read() == b"echo:x"
                    assert listener.requests[0]["address"].startswith("wss://")
        # A client that does not trust the certificate is refused by TLS itself.
        with pytest.raises(ssl.SSLCertVerificationError):
            await websockets.connect(gw.connect_url("secure"), ssl=ssl.create_default_context())
    finally:
        gw.stop()


async def test_gateway_runs_on_uvloop_when_asked(tmp_path):
    pytest.importorskip("uvloop", reason="uvloop is in the speed extra, installed by make test")
    gw = start_gateway(tmp_path / "uv", "--uvloop")
    try:
        assert any("event loop uvloop" in line for line in gw.output), gw.output
        async with RawListener(gw.listen_url("uv"), gw.token("uv")):
            async with websockets.connect(gw.connect_url("uv"), compression=None,
                                          additional_headers={"ServiceBusAuthorization": gw.token("uv")}) as ws:
                await ws.send("on uvloop")
                assert await ws.recv() == "on uvloop"
    finally:
        gw.stop()
