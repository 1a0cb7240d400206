"""Start a real gateway process on a free loopback port and tell tests how to reach it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hybrid.auth import build_token

#: Scale every wait in the tests on slow machines: WCFRELAY_TIMEOUT_FACTOR=3 pytest …
TIMEOUT_FACTOR = float(os.environ.get("WCFRELAY_TIMEOUT_FACTOR", "1"))

_ENDPOINT_LINE = re.compile(
    r"^Endpoint=sb://(?P<host>[^:/]+):(?P<port>\d+)/;SharedAccessKeyName=(?P<name>[^;]+);SharedAccessKey=(?P<key>\S+)$"
)


@dataclass
class GatewayProcess:
    """A gateway started as ``python -m wcfrelay gateway``; the first printed rule is the root rule."""

    proc: subprocess.Popen
    host: str
    port: int
    key_name: str
    key: str
    tls: bool = False
    rules: dict[str, str] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    #: the thread that keeps appending the gateway's output lines to ``output``
    reader: threading.Thread | None = None

    @property
    def ws_base(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}"

    @property
    def http_base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"sb://{self.host}:{self.port}/"

    def connection_string(self, entity: str | None = None, *, key_name: str | None = None) -> str:
        name = key_name or self.key_name
        text = f"Endpoint={self.endpoint};SharedAccessKeyName={name};SharedAccessKey={self.rules.get(name, self.key)}"
        return text + (f";EntityPath={entity}" if entity else "")

    def token(self, entity: str = "", *, ttl: int = 3600, key_name: str | None = None, key: str | None = None,
              expiry: int | None = None) -> str:
        """A SAS token for ``http://host:port/entity`` signed with the root rule (or the one named)."""
        name = key_name or self.key_name
        audience = f"http://{self.host}:{self.port}/{entity}"
        return build_token(audience, name, key or self.rules.get(name, self.key),
                           expiry if expiry is not None else int(time.time()) + ttl)

    def listen_url(self, entity: str) -> str:
        return f"{self.ws_base}/$hc/{entity}?sb-hc-action=listen"

    def connect_url(self, entity: str, suffix: str = "", query: str = "") -> str:
        q = (query + "&" if query else "") + "sb-hc-action=connect"
        return f"{self.ws_base}/$hc/{entity}{suffix}?{q}"

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop_and_read(self) -> str:
        """Stop the gateway and return everything it wrote (its log included), to the last line."""
        self.stop()
        if self.reader is not None:
            self.reader.join(10 * TIMEOUT_FACTOR)
        return "\n".join(self.output)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10 * TIMEOUT_FACTOR)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_gateway(state_dir: Path, *extra: str, env: dict | None = None, tls: bool = False,
                  timeout: float = 20.0) -> GatewayProcess:
    """Run the gateway and wait for its connection-string lines (it prints them once it is listening)."""
    args = [sys.executable, "-m", "wcfrelay", "gateway", "--host", "127.0.0.1", "--port", "0",
            "--state-dir", str(state_dir), *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    lines: list[str] = []
    rules: dict[str, str] = {}
    first = None
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        m = _ENDPOINT_LINE.match(line.strip())
        if m:
            rules[m["name"]] = m["key"]
            first = first or m
        elif first is not None:
            break  # the block of endpoint lines has ended: the gateway is serving
    if first is None:
        proc.kill()
        raise RuntimeError("gateway did not start:\n" + "\n".join(lines))
    gw = GatewayProcess(proc, first["host"], int(first["port"]), first["name"], first["key"], tls=tls,
                        rules=rules, output=lines)
    # Keep draining the pipe so the gateway never blocks on a full stdout.
    gw.reader = threading.Thread(target=lambda: [gw.output.append(x.rstrip("\n")) for x in proc.stdout], daemon=True)
    gw.reader.start()
    return gw
