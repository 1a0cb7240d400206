"""Run the Node scripts in tests/node (the official hyco-ws / hyco-https clients) and read what they print.

Every script prints one event per stdout line: the bare word ``READY`` when its listener is online, otherwise a
JSON object with an ``event`` key (``{"event": "fatal", ...}`` just before a non-zero exit). Diagnostics go to
stderr, which is kept for assertion messages.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.gateway_process import TIMEOUT_FACTOR

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
_REQUIRED_MODULES = ("hyco-ws", "hyco-https", "ws", "moment")
_install_checked = False


def pattern_bytes(n: int) -> bytes:
    """The same payload as ``patternBytes`` in tests/node/lib/common.js."""
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (the Node client tests need Node 18+ and npm)")
    return node


def _modules_present() -> bool:
    return all((NODE_DIR / "node_modules" / name / "package.json").is_file() for name in _REQUIRED_MODULES)


def _npm_command(npm: str) -> list[str]:
    """The npm to run. npm before 9.6 (e.g. Debian 12's 9.2) crashes on an override of a dependency declared
    as ``latest`` ("Invalid comparator: latest"), which is exactly what hyco-ws/hyco-https need; use npm 10 from
    the registry through npx then."""
    try:
        out = subprocess.run([npm, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout.strip()
        version = tuple(int(x) for x in out.split(".")[:2])
    except (OSError, ValueError, subprocess.SubprocessError):
        return [npm]
    npx = shutil.which("npx")
    if version < (9, 6) and npx is not None:
        return [npx, "--yes", "npm@10"]
    return [npm]


def ensure_node_modules() -> None:
    """Install tests/node/node_modules once (``npm ci`` from the lock file, else ``npm install``).

    Skips only when ``node`` itself is missing; a failing install is an error, not a skip.
    """
    global _install_checked
    node_executable()
    if _install_checked and _modules_present():
        return
    # A lock file so parallel test processes do not run npm over each other (outside node_modules,
    # which `npm ci` deletes first; ignored by tests/node/.gitignore).
    with open(NODE_DIR / ".npm-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _modules_present():
                npm = shutil.which("npm")
                if npm is None:
                    raise RuntimeError("node is installed but npm is not: cannot install tests/node dependencies")
                has_lock = (NODE_DIR / "package-lock.json").is_file()
                cmd = [*_npm_command(npm), "ci" if has_lock else "install", "--no-audit", "--no-fund"]
                done = subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, check=False,
                                      timeout=300 * TIMEOUT_FACTOR)
                if done.returncode != 0 or not _modules_present():
                    raise RuntimeError(f"{' '.join(cmd)} failed in {NODE_DIR} (exit {done.returncode}):\n"
                                       f"{done.stdout}\n{done.stderr}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _install_checked = True


def _parse_line(line: str) -> dict:
    line = line.rstrip("\r\n")
    if line == "READY":
        return {"event": "READY"}
    try:
        value = json.loads(line)
    except ValueError:
        return {"event": "raw", "line": line}
    return value if isinstance(value, dict) else {"event": "raw", "line": line}


class NodeScript:
    """A running tests/node script. Events are collected by a reader thread; wait on them with a timeout."""

    def __init__(self, script: str, *args: str, env: dict | None = None):
        ensure_node_modules()
        self.script = script
        self.args = [str(a) for a in args]
        full_env = {**os.environ, **(env or {}),
                    "NODE_TEST_TIMEOUT_MS": str(int(20000 * TIMEOUT_FACTOR))}
        self.proc = subprocess.Popen([node_executable(), str(NODE_DIR / script), *self.args], cwd=NODE_DIR,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, env=full_env)
        self.events: list[dict] = []
        self.stderr_lines: list[str] = []
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._seen = 0
        self._eof = False
        self._lock = threading.RLock()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = _parse_line(line)
            with self._lock:
                self.events.append(event)
            self._queue.put(event)
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    # -- waiting -------------------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 20.0, what: str = "event") -> dict:
        """Return the first event (including ones already seen) that matches; fail on timeout or exit."""
        with self._lock:
            for event in self.events:
                if predicate(event):
                    return event
        deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._eof:
                break
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if event is None:
                self._eof = True
                break
            if predicate(event):
                return event
        state = f"exited with {self.proc.poll()}" if self._eof else "still running"
        raise AssertionError(f"{self.script}: no {what} within {timeout * TIMEOUT_FACTOR:.0f}s ({state})\n"
                             + self.describe())

    def wait_count(self, kind: str, n: int, timeout: float = 20.0) -> list[dict]:
        """Wait until at least ``n`` events of ``kind`` have been printed; return them all."""
        self.wait_for(lambda e: len(self.of(kind)) >= n, timeout, f"{n} {kind!r} events")
        return self.of(kind)

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.wait_for(lambda e: e.get("event") == "READY", timeout, "READY line")

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout * TIMEOUT_FACTOR)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.script} did not exit within {timeout * TIMEOUT_FACTOR:.0f}s\n"
                                 + self.describe()) from None
        self._drain()
        return rc

    def _drain(self) -> None:
        """After exit, wait (bounded) for the reader threads to see EOF so ``events`` is complete."""
        deadline = time.monotonic() + 5
        while not self._eof and time.monotonic() < deadline:
            try:
                event = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event is None:
                self._eof = True

    def of(self, kind: str) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e.get("event") == kind]

    def describe(self) -> str:
        with self._lock:
            out = "\n".join(json.dumps(e) for e in self.events[-40:])
        err = "\n".join(self.stderr_lines[-40:])
        return f"--- {self.script} {' '.join(self.args[:1])} stdout:\n{out}\n--- stderr:\n{err}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5 * TIMEOUT_FACTOR)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain()


@dataclass
class ScriptResult:
    returncode: int
    events: list[dict] = field(default_factory=list)
    stderr: str = ""
    text: str = ""

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == kind]


def run_script(script: str, *args: str, env: dict | None = None, timeout: float = 60.0) -> ScriptResult:
    """Run a script to completion and return its exit code and events."""
    proc = NodeScript(script, *args, env=env)
    try:
        rc = proc.wait_exit(timeout)
    finally:
        proc.stop()
    return ScriptResult(rc, list(proc.events), "\n".join(proc.stderr_lines), proc.describe())


class NodeProcesses:
    """Starts scripts and stops whatever is still running at teardown."""

    def __init__(self) -> None:
        self.started: list[NodeScript] = []

    def start(self, script: str, *args: str, env: dict | None = None) -> NodeScript:
        proc = NodeScript(script, *args, env=env)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
