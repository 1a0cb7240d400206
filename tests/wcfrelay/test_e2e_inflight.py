"""Calls in flight: a slow operation does not hold up the others, and a host process that dies mid-call leaves
its caller with a prompt SOAP fault rather than a hang."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from lxml import etree

from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_support import CT11, TNS, HostThread, env11, soap_fault
from wcfrelay import compat
from wcfrelay.bindings import BasicHttpRelayBinding
from wcfrelay.client import relay_zeep_client
from wcfrelay.service.host import RelayServiceHost
from wcfrelay.service.spyne_app import build_application

compat.ensure_spyne_importable()
from spyne import Integer32, Service, Unicode, rpc

REPO = Path(__file__).resolve().parents[2]

started = threading.Event()
release = threading.Event()


class SlowService(Service):
    @rpc(_returns=Unicode)
    def Block(ctx) -> str:
        started.set()
        release.wait(30)
        return "released"

    @rpc(Integer32, Integer32, _returns=Integer32)
    def Add(ctx, a: int, b: int) -> int:
        return a + b


def test_a_slow_call_does_not_block_the_others(gateway: GatewayProcess) -> None:
    started.clear()
    release.clear()
    host = RelayServiceHost(gateway.connection_string(), tls=False, max_workers=4)
    host.add_endpoint(build_application([SlowService], tns=TNS, name="Slow"), "slow", BasicHttpRelayBinding())
    with HostThread(host), concurrent.futures.ThreadPoolExecutor(2) as pool:
        client = relay_zeep_client(f"{gateway.http_base}/slow?wsdl", connection_string=gateway.connection_string())
        slow = pool.submit(client.service.Block)
        assert started.wait(10 * TIMEOUT_FACTOR)
        began = time.monotonic()
        assert [client.service.Add(i, 1) for i in range(10)] == list(range(1, 11))
        assert time.monotonic() - began < 5 * TIMEOUT_FACTOR
        assert not slow.done()
        release.set()
        assert slow.result(10 * TIMEOUT_FACTOR) == "released"


running = 0
most_running = 0
running_lock = threading.Lock()
gate = threading.Event()


class CountingService(Service):
    @rpc(_returns=Unicode)
    def Hold(ctx) -> str:
        global running, most_running
        with running_lock:
            running += 1
            most_running = max(most_running, running)
        gate.wait(30)
        with running_lock:
            running -= 1
        return "done"


def test_max_concurrent_calls_bounds_the_calls_a_host_runs(gateway: GatewayProcess) -> None:
    global most_running
    gate.clear()
    most_running = 0
    host = RelayServiceHost(gateway.connection_string(), tls=False, max_workers=8, max_concurrent_calls=2)
    endpoint = host.add_endpoint(build_application([CountingService], tns=TNS, name="Counting"), "counting",
                                 BasicHttpRelayBinding())
    with HostThread(host), concurrent.futures.ThreadPoolExecutor(5) as pool:
        client = relay_zeep_client(f"{gateway.http_base}/counting?wsdl",
                                   connection_string=gateway.connection_string())
        calls = [pool.submit(client.service.Hold) for _ in range(5)]
        deadline = time.monotonic() + 10 * TIMEOUT_FACTOR
        while most_running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert most_running == 2
        assert endpoint.calls_in_flight == 2
        assert not any(call.done() for call in calls)  # the rest wait in the gateway, not failed
        gate.set()
        assert [call.result(20 * TIMEOUT_FACTOR) for call in calls] == ["done"] * 5
    assert most_running == 2  # never more than the limit, though eight threads were free
    assert endpoint.calls_in_flight == 0


HOST_SCRIPT = r'''
import sys, threading
from wcfrelay import compat
compat.ensure_spyne_importable()
from spyne import Service, Unicode, rpc
from wcfrelay.service.host import RelayServiceHost
from wcfrelay.service.spyne_app import build_application

class Stuck(Service):
    @rpc(_returns=Unicode)
    def Block(ctx):
        print("blocking", flush=True)
        threading.Event().wait()
        return "never"

host = RelayServiceHost(sys.argv[1], tls=False, on_online=lambda: print("online", flush=True))
host.add_endpoint(build_application([Stuck], tns="http://tempuri.org/", name="Stuck"), "stuck")
sys.exit(host.run())
'''


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    seen = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.strip() == marker:
            return
    raise AssertionError(f"host never printed {marker!r}; output: {''.join(seen)!r}")


def test_a_host_that_dies_mid_call_gives_the_caller_a_prompt_fault(gateway: GatewayProcess) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, gateway.connection_string()], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        _read_until(proc, "online", 30)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                requests.post, f"{gateway.http_base}/stuck", data=env11(f'<Block xmlns="{TNS}"/>'),
                headers={"Content-Type": CT11, "ServiceBusAuthorization": gateway.token("stuck")},
                timeout=60,
            )
            _read_until(proc, "blocking", 10)
            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            response = pending.result(30)
            elapsed = time.monotonic() - killed
        assert elapsed < 5 * TIMEOUT_FACTOR, f"the caller waited {elapsed:.1f}s"
        assert response.status_code in (502, 503), response.text
        fault = soap_fault(response.content)
        assert fault["code"] == "s:Server.ListenerUnavailable"
        assert "disconnected" in fault["reason"]
        etree.fromstring(response.content)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
