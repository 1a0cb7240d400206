"""Processes the orchestrator starts and stops: the gateway, nginx, bench workers and wrk. All on 127.0.0.1."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import free_port

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "BenchError", "Gateway", "Nginx", "Passthrough", "Redis", "WorkerProc", "py_env", "run_wrk"]


class BenchError(RuntimeError):
    pass


def py_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("WCFRELAY_UVLOOP", None)
    env.pop("WCFRELAY_CPROFILE", None)
    # Nothing of ours may go through a proxy: every address is loopback.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


#: A line of a gateway's log that a run of ordinary traffic should never produce.
_PROBLEM = re.compile(r"^(?:\S+ \S+ (?:WARNING|ERROR|CRITICAL) |Traceback )")
#: Problem lines of every gateway this process stopped (``Gateway.stop`` adds them; the runner reports them).
GATEWAY_PROBLEMS: list[str] = []


def log_problems(text: str) -> list[str]:
    """The warning, error and traceback lines of a gateway log."""
    return [line for line in text.splitlines() if _PROBLEM.match(line)]


_ENDPOINT = re.compile(r"^Endpoint=sb://127\.0\.0\.1:(\d+)/;SharedAccessKeyName=([^;]+);SharedAccessKey=(\S+)$")


@dataclass
class Gateway:
    """``python -m bench.launch_gateway gateway --host 127.0.0.1 --port 0 …`` with its output in a log file."""

    proc: subprocess.Popen
    port: int
    key_name: str
    key: str
    log_path: Path
    uvloop: bool
    tokens: dict[str, str] = field(default_factory=dict)
    stopped: bool = False

    @classmethod
    def start(cls, workdir: Path, *, uvloop: bool = False, log_level: str = "INFO", max_connections: int = 20000,
              timeout: float = 30.0, cprofile: Path | None = None, config_extra: str = "",
              extra_args: tuple[str, ...] = (), prefix: tuple[str, ...] = ()) -> Gateway:
        """``config_extra`` is appended to the generated TOML (e.g. ``[[namespace.rules]]`` shared by cluster
        nodes); ``extra_args`` go to ``wcfrelay gateway`` (e.g. ``--redis URL --node-id n0``); ``prefix`` runs the
        interpreter under another program (``bench.instructions`` uses valgrind)."""
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "gateway.toml"
        config.write_text("[gateway]\n"
                          f"max_connections = {max_connections}\n"
                          "[namespace]\n"
                          "max_listeners_per_connection = 100\n" + config_extra)
        log_path = workdir / f"gateway-{time.monotonic_ns()}.log"
        extra = {"WCFRELAY_UVLOOP": "1"} if uvloop else {}
        if cprofile is not None:
            extra["WCFRELAY_CPROFILE"] = str(cprofile)
        out = open(log_path, "w")  # noqa: SIM115 - the child process writes to it; closed once it started
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "bench.launch_gateway", "gateway", "--config", str(config),
             "--host", "127.0.0.1", "--port", "0", "--state-dir", str(workdir / "state"), "--log-level", log_level,
             *extra_args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=py_env(extra))
        out.close()
        deadline = time.monotonic() + timeout
        first = None
        for _ in range(int(timeout * 50)):
            text = log_path.read_text(errors="replace")
            for line in text.splitlines():
                m = _ENDPOINT.match(line.strip())
                if m and first is None:
                    first = m
            if first is not None and "Gateway ready" in text:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise BenchError("gateway did not start:\n" + text[-3000:])
            time.sleep(0.02)
        if first is None:
            proc.kill()
            raise BenchError("gateway printed no endpoint line")
        return cls(proc, int(first.group(1)), first.group(2), first.group(3), log_path, uvloop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def connection_string(self) -> str:
        """The root rule's connection string, as ``wcfrelay gateway`` prints it."""
        return f"Endpoint=sb://127.0.0.1:{self.port}/;SharedAccessKeyName={self.key_name};SharedAccessKey={self.key}"

    def token(self, entity: str, ttl: int = 86400) -> str:
        from hybrid.auth import build_token

        if entity not in self.tokens:
            self.tokens[entity] = build_token(f"http://127.0.0.1:{self.port}/{entity}", self.key_name, self.key,
                                              int(time.time()) + ttl)
        return self.tokens[entity]

    def info(self, entities: list[str]) -> dict[str, Any]:
        """What a worker needs to listen or send on ``entities``."""
        return {"port": self.port, "key_name": self.key_name, "key": self.key,
                "tokens": {e: self.token(e) for e in entities}}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self.stopped:
            self.stopped = True
            GATEWAY_PROBLEMS.extend(log_problems(self.log_path.read_text(errors="replace")))


@dataclass
class Redis:
    """``redis-server`` on a free 127.0.0.1 port, no persistence, working directory in the bench's temp dir."""

    proc: subprocess.Popen
    port: int

    @staticmethod
    def binary() -> str | None:
        for cand in (shutil.which("redis-server"), "/usr/bin/redis-server"):
            if cand and os.access(cand, os.X_OK):
                return cand
        return None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, workdir: Path, *, attempts: int = 3, timeout: float = 10.0) -> Redis:
        exe = cls.binary()
        if exe is None:
            raise BenchError("redis-server is not installed (Debian package redis-server)")
        workdir.mkdir(parents=True, exist_ok=True)
        last = ""
        for _ in range(attempts):  # a port found free may be taken before redis binds it: try again
            port = free_port()
            proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                     "no", "--dir", str(workdir), "--protected-mode", "yes"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            if _wait_redis(port, proc, timeout):
                return cls(proc, port)
            proc.kill()
            _, err = proc.communicate(timeout=5)
            last = (err or b"").decode(errors="replace")
        raise BenchError("redis-server did not start: " + last[-2000:])

    def stop(self) -> None:
        _terminate(self.proc)


def _wait_redis(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    client_max_body_size 64m;
    client_body_buffer_size 2m;
    # Streamed both ways, like the gateway (no buffering of bodies to memory or disk).
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_http_version 1.1;
    upstream app_http {{ server 127.0.0.1:{http_port}; keepalive 64; }}
    upstream app_ws {{ server 127.0.0.1:{ws_port}; }}
    server {{
        listen 127.0.0.1:{listen_http} backlog=1024;
        # The Host the client sent, as a reverse proxy in front of an application normally passes it (a WSDL
        # served through it then names the proxy's address).
        location / {{ proxy_pass http://app_http; proxy_set_header Connection ""; proxy_set_header Host $http_host; }}
    }}
    server {{
        listen 127.0.0.1:{listen_ws} backlog=1024;
        location / {{
            proxy_pass http://app_ws;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    """nginx (1 worker) as a reverse proxy in front of the direct servers; config in a temp dir."""

    proc: subprocess.Popen
    http_port: int
    ws_port: int
    conf_dir: Path

    @staticmethod
    def binary() -> str | None:
        for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
            if cand and os.access(cand, os.X_OK):
                return cand
        return None

    @classmethod
    def start(cls, workdir: Path, *, upstream_http: int, upstream_ws: int, attempts: int = 3) -> Nginx:
        exe = cls.binary()
        if exe is None:
            raise BenchError("nginx is not installed (Debian package nginx-light)")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        last = ""
        for _ in range(attempts):  # a port found free may be taken before nginx binds it: try again
            listen_http, listen_ws = free_port(), free_port()
            conf = workdir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=workdir, http_port=upstream_http, ws_port=upstream_ws,
                                              listen_http=listen_http, listen_ws=listen_ws))
            proc = subprocess.Popen([exe, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            if _wait_port(listen_http, proc, 10) and _wait_port(listen_ws, proc, 5):
                return cls(proc, listen_http, listen_ws, workdir)
            proc.kill()
            _, err = proc.communicate(timeout=5)
            last = (err or b"").decode(errors="replace")
        raise BenchError("nginx did not start: " + last[-2000:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        from bench.common import children

        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Passthrough:
    """``python -m bench.passthrough``: a byte-copying asyncio TCP proxy in front of ``upstream`` (a floor)."""

    proc: subprocess.Popen
    port: int

    @classmethod
    def start(cls, upstream: int, *, uvloop: bool = False, timeout: float = 30.0,
              prefix: tuple[str, ...] = ()) -> Passthrough:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "bench.passthrough", str(upstream),
                                 *(["--uvloop"] if uvloop else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                cwd=ROOT, env=py_env())
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # the first line, or "" if it exited
        if not line.startswith("port ") or not _wait_port(int(line.split()[1]), proc, timeout):
            proc.kill()
            raise BenchError("bench.passthrough did not start: " + (line + proc.stdout.read())[-2000:])
        return cls(proc, int(line.split()[1]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        _terminate(self.proc)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class WorkerProc:
    """A ``python -m bench.worker`` process driven by JSON lines."""

    def __init__(self, name: str, logdir: Path, *, uvloop: bool) -> None:
        self.name = name
        logdir.mkdir(parents=True, exist_ok=True)
        self.log_path = logdir / f"worker-{name}.log"
        err = open(self.log_path, "a")  # noqa: SIM115 - handed to the child process, closed right after
        args = [sys.executable, "-m", "bench.worker", "--name", name] + (["--uvloop"] if uvloop else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                     cwd=ROOT, env=py_env(), bufsize=1)
        err.close()
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        hello = self._next(60)
        self.pid = int(hello["pid"])
        self.loop = hello.get("loop", "")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                self._lines.put(line[3:])
        self._lines.put(None)

    def _next(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"worker {self.name}: no answer in {timeout:.0f}s") from None
        if line is None:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise BenchError(f"worker {self.name} exited:\n{tail}")
        return json.loads(line)

    def call(self, cmd: str, timeout: float = 600.0, **args: Any) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        answer = self._next(timeout)
        if "error" in answer:
            raise BenchError(f"worker {self.name}: {cmd}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait(5)


WRK_SCRIPT = """\
-- bench: optional request body, then one JSON line with wrk's own latency distribution.
local body_size = tonumber(os.getenv("BENCH_BODY") or "0")
if body_size > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("x", body_size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
local token = os.getenv("BENCH_TOKEN")
if token and #token > 0 then
  wrk.headers["ServiceBusAuthorization"] = token
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '@@WRK {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"mean_us":%.1f,"max_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.mean, latency.max))
end
"""


def run_wrk(url: str, *, connections: int, seconds: int, script_dir: Path, token: str | None = None,
            body: int = 0, threads: int = 1, timeout_s: int = 10) -> dict:
    """Run wrk against ``url`` (127.0.0.1 only) and return its summary and latency percentiles."""
    assert url.startswith("http://127.0.0.1:"), url
    exe = shutil.which("wrk")
    if exe is None:
        raise BenchError("wrk is not installed (Debian package wrk)")
    script = script_dir / "bench.lua"
    if not script.exists():
        script_dir.mkdir(parents=True, exist_ok=True)
        script.write_text(WRK_SCRIPT)
    env = py_env({"BENCH_BODY": str(body), "BENCH_TOKEN": token or ""})
    args = [exe, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", f"{timeout_s}s",
            "-s", str(script), url]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=seconds + timeout_s + 30,
                          check=False)
    for line in done.stdout.splitlines():
        if line.startswith("@@WRK "):
            out = json.loads(line[6:])
            seconds = out["duration_us"] / 1e6
            # Only answers with a 2xx/3xx status count: an error page is not a served request.
            out["ok_requests"] = max(0, out["requests"] - out["status"])
            out["rps"] = out["ok_requests"] / seconds if seconds else 0.0
            out["rps_all"] = out["requests"] / seconds if seconds else 0.0
            out["errors"] = out["connect"] + out["read"] + out["write"] + out["status"] + out["timeout"]
            return out
    raise BenchError(f"wrk gave no summary (rc={done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")
