"""A real redis-server and gateway nodes in separate processes, sharing one namespace."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess, start_gateway

ROOT_KEY = "cluster-root-key-0123456789abcdef"
CONFIG = f"""
[[namespace.rules]]
name = "RootManageSharedAccessKey"
primary_key = "{ROOT_KEY}"
rights = ["Listen", "Send", "Manage"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10 * TIMEOUT_FACTOR
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Cluster:
    redis: RedisServer
    config: Path
    tmp: Path
    nodes: list[GatewayProcess] = field(default_factory=list)

    def start_node(self, index: int, *extra: str) -> GatewayProcess:
        node = start_gateway(self.tmp / f"node{index}", "--config", str(self.config), "--redis", self.redis.url,
                             "--node-id", f"node{index}", *extra)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server") and not Path("/usr/bin/redis-server").exists():
        pytest.fail("redis-server is not installed (scripts/install-test-deps.sh installs it)")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(redis_server, tmp_path) -> Cluster:
    config = tmp_path / "cluster.toml"
    config.write_text(CONFIG)
    c = Cluster(redis_server, config, tmp_path)
    for i in range(3):
        c.start_node(i)
    yield c
    c.stop()
