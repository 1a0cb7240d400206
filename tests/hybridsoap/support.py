"""Shared pieces of the SOAP-over-Hybrid-Connections tests: a probe service, gates, and readiness waits.

The probe service's operations let a test observe concurrency without sleeping: ``Block(key)`` holds a pool thread
until the test opens the gate ``key``, ``Work(key)`` calls its caller back (``Progress``) and then waits until the
caller's callback handler opened the gate ``key``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import requests

from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from wcfrelay import compat

compat.ensure_spyne_importable()

from spyne import Integer32, Service, Unicode, rpc
from spyne.model.fault import Fault

from wcfrelay.service.handler import callback_channel
from wcfrelay.service.spyne_app import build_application

REPO = Path(__file__).resolve().parents[2]
PROBE_NS = "urn:test:probe"
CALLBACK_NS = "urn:test:probe-callback"
PROGRESS_ACTION = "urn:test:probe-callback/Progress"
S11 = "http://schemas.xmlsoap.org/soap/envelope/"
S12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"


class Gates:
    """Named one-shot gates shared by the service (in the host's threads) and the test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        self.running = 0
        self.max_running = 0

    def gate(self, key: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(key, threading.Event())

    def open(self, key: str) -> None:
        self.gate(key).set()

    def enter(self) -> None:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)

    def leave(self) -> None:
        with self._lock:
            self.running -= 1

    def reset(self) -> None:
        with self._lock:
            for event in self._gates.values():
                event.set()
            self._gates.clear()
            self.running = 0
            self.max_running = 0


GATES = Gates()
WAIT = 30 * TIMEOUT_FACTOR


class ProbeService(Service):
    __service_name__ = "ProbeService"

    @rpc(Unicode, _returns=Unicode)
    def Block(ctx, key: str) -> str:
        GATES.enter()
        try:
            if not GATES.gate(key).wait(WAIT):
                raise Fault("Server.Timeout", f"gate {key} never opened")
            return key
        finally:
            GATES.leave()

    @rpc(Unicode, _returns=Unicode)
    def Ping(ctx, text: str) -> str:
        return text

    @rpc(Integer32, Integer32, _returns=Integer32)
    def Add(ctx, a: int, b: int) -> int:
        return a + b

    @rpc(Unicode, _returns=Unicode)
    def Work(ctx, key: str) -> str:
        channel = callback_channel()
        if channel is None:
            raise Fault("Client.NoCallbackChannel", "Work needs a hybrid WebSocket caller")
        channel.send(PROGRESS_ACTION, f'<Progress xmlns="{CALLBACK_NS}"><key>{key}</key></Progress>')
        if not GATES.gate(key).wait(WAIT):
            raise Fault("Server.NoCallback", "the caller never saw the callback")
        return f"done:{key}"


class ProgressCallback(Service):
    """The callback contract, implemented on the caller's side (for a Spyne callback handler)."""

    __service_name__ = "ProgressCallback"

    @rpc(Unicode, _is_async=True)
    def Progress(ctx, key: str) -> None:
        GATES.open(key)


def probe_application(protocol: str = "soap12"):
    return build_application([ProbeService], tns=PROBE_NS, name="ProbeService", protocol=protocol)  # type: ignore[arg-type]


def callback_application():
    return build_application([ProgressCallback], tns=CALLBACK_NS, name="ProgressCallback", protocol="soap12")


def wait_routable(gw: GatewayProcess, path: str, *, token: str | None = None, timeout: float = 15.0) -> None:
    """Wait until the gateway routes ``GET /{path}?wsdl`` to a host (a host reports Online when its handshake
    completes; the gateway registers it just after, so the first request can briefly see 404/502)."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    headers = {"ServiceBusAuthorization": token or gw.token(path)}
    while True:
        status = requests.get(f"{gw.http_base}/{path}?wsdl", headers=headers, timeout=10).status_code
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never became routable (last status {status})")
        time.sleep(0.02)


async def async_wait_routable(gw: GatewayProcess, path: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{gw.http_base}/{path}?wsdl",
                                headers={"ServiceBusAuthorization": gw.token(path)}) as resp:
                if resp.status == 200:
                    return
                status = resp.status
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never became routable (last status {status})")
            await asyncio.sleep(0.02)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def read_until(proc: subprocess.Popen, predicate, timeout: float = 30.0) -> list[str]:
    """Lines of ``proc``'s stdout until one satisfies ``predicate`` (fails the test if the process ends first)."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    seen: list[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if predicate(line.strip()):
            return seen
    raise AssertionError(f"never saw the expected line; output: {seen!r}")


class ServiceProcess:
    """The WCF-style service (tests/hybridsoap/wcf_style_service.py) in a process of its own."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.hybridsoap.wcf_style_service"], cwd=REPO,
                                     env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = read_until(self.proc, lambda text: text.startswith("ready "), 20)[-1]
        self.url = line.split()[1]
        self.port = int(self.url.split(":")[2].split("/")[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stop_process(proc: subprocess.Popen, sig_int: bool = True) -> int:
    if proc.poll() is None:
        if sig_int:
            import signal

            proc.send_signal(signal.SIGINT)
        else:
            proc.terminate()
        try:
            proc.wait(15 * TIMEOUT_FACTOR)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
