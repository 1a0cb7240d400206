"""Three gateway nodes behind a real HAProxy: the official hyco-ws clients, and failover when a node dies."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from hybrid.client import HybridConnectionClient, HybridConnectionListener
from tests.cluster.conftest import free_port
from tests.support.gateway_process import TIMEOUT_FACTOR
from tests.support.node import NodeProcesses, ensure_node_modules, pattern_bytes, run_script

TEMPLATE = Path(__file__).parents[2] / "samples" / "cluster" / "haproxy.cfg.template"


class HAProxy:
    def __init__(self, nodes, workdir: Path) -> None:
        self.port = free_port()
        servers = "\n".join(f"    server {i} 127.0.0.1:{n.port} check" for i, n in enumerate(nodes))
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(TEMPLATE.read_text().replace("{{BIND}}", f"127.0.0.1:{self.port}")
                               .replace("{{SERVERS}}", servers))
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        check = subprocess.run([exe, "-c", "-f", str(self.config)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen([exe, "-db", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10 * TIMEOUT_FACTOR
        import socket
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def haproxy(cluster, tmp_path):
    if not shutil.which("haproxy") and not Path("/usr/sbin/haproxy").exists():
        pytest.fail("haproxy is not installed (scripts/install-test-deps.sh installs it)")
    lb = HAProxy(cluster.nodes, tmp_path)
    yield lb
    lb.stop()


async def wait_routable(base: str, entity: str, token: str, timeout: float = 20.0) -> None:
    """Until every node routes to the entity's listener (HTTP through the LB, all answers 200 several times)."""
    deadline = asyncio.get_running_loop().time() + timeout * TIMEOUT_FACTOR
    ok_in_a_row = 0
    async with aiohttp.ClientSession() as s:
        while ok_in_a_row < 6:
            async with s.get(f"{base}/{entity}", headers={"ServiceBusAuthorization": token}) as r:
                ok_in_a_row = ok_in_a_row + 1 if r.status == 200 else 0
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("listener not routable through the load balancer")
            await asyncio.sleep(0.05)


def test_hyco_ws_listener_and_sender_echo_through_haproxy(cluster, haproxy):
    ensure_node_modules()
    node = cluster.nodes[0]
    lb_ws = f"ws://127.0.0.1:{haproxy.port}"
    entity = "through-lb"
    procs = NodeProcesses()
    try:
        listener = procs.start("ws_listener.js", f"{lb_ws}/$hc/{entity}?sb-hc-action=listen", node.token(entity))
        listener.wait_ready()
        # Several senders: round robin spreads them over the nodes, so some cross nodes.
        for i in range(4):
            result = run_script("ws_sender.js", f"{lb_ws}/$hc/{entity}/n{i}?sb-hc-action=connect", node.token(entity))
            assert result.returncode == 0, result.text
            messages = [e for e in result.events if e.get("event") == "message"]
            assert len(messages) == 2
            binary = next(m for m in messages if m["binary"])
            import hashlib
            assert binary["sha256"] == hashlib.sha256(pattern_bytes(1024)).hexdigest()
    finally:
        procs.stop_all()


async def test_listener_fails_over_to_a_surviving_node_through_the_load_balancer(cluster, haproxy):
    lb_cs = (f"Endpoint=sb://127.0.0.1:{haproxy.port}/;SharedAccessKeyName=RootManageSharedAccessKey;"
             f"SharedAccessKey={cluster.nodes[0].key}")
    entity = "failover"
    statuses: list[str] = []

    async def echo(conn):
        async for message in conn:
            await conn.send(message)

    async def answer(request):
        from hybrid.client import RelayedHttpResponse
        return RelayedHttpResponse(200, body=b"ok:" + await request.read())

    listener = HybridConnectionListener(lb_cs, entity_path=entity, tls=False, connection_handler=echo,
                                        request_handler=answer, reconnect_delays=(0, 1, 2, 5),
                                        on_online=lambda *_: statuses.append("online"),
                                        on_connecting=lambda *_: statuses.append("connecting"))
    async with listener:
        lb_http = f"http://127.0.0.1:{haproxy.port}"
        await wait_routable(lb_http, entity, cluster.nodes[0].token(entity))
        owner = None
        for node in cluster.nodes:
            async with aiohttp.ClientSession() as s, s.get(f"{node.http_base}/$health") as r:
                if (await r.json())["listeners"].get(entity):
                    owner = node
        assert owner is not None
        owner.proc.kill()
        owner.proc.wait()
        # The listener reconnects through the LB to a survivor within the ladder, and serves again.
        await wait_routable(lb_http, entity, cluster.nodes[0].token(entity), timeout=30)
        assert statuses.count("online") >= 2
        # Every answer that says 200 carries the right body: nothing acknowledged was lost or mixed up.
        async with aiohttp.ClientSession() as s:
            for i in range(20):
                async with s.post(f"{lb_http}/{entity}", data=f"m{i}".encode(),
                                  headers={"ServiceBusAuthorization": cluster.nodes[0].token(entity)}) as r:
                    body = await r.read()
                    assert r.status == 200 and body == f"ok:m{i}".encode()
        client = HybridConnectionClient(lb_cs, entity_path=entity, tls=False)
        conn = await client.connect()
        await conn.send("after failover")
        assert await asyncio.wait_for(conn.recv(), 10 * TIMEOUT_FACTOR) == "after failover"
        await conn.close()
