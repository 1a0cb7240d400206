"""The eight scenarios. Each runs its paths interleaved (the order rotates every round), keeps every round's
values, and turns them into metric rows with :class:`bench.stats.ScenarioResult`.

Paths: ``direct`` (client straight to the server code), ``nginx`` (nginx reverse proxy, 1 worker, in front of the
same server), ``relayed`` (through the gateway to a listener running the same code).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, mem_kib, reset_peak_rss, tree_cpu_seconds
from bench.modes import MiB, Mode
from bench.procs import BenchError, Gateway, Nginx, WorkerProc, run_wrk
from bench.stats import ScenarioResult, abs_max, abs_max_worst, diff_max, ratio_min

WS_ENTITY = "bench-ws"
HTTP_ENTITY = "bench-http"


@dataclass
class Ctx:
    mode: Mode
    tmp: Path
    out: Path
    gw: Gateway
    nginx: Nginx | None
    srv: WorkerProc
    lis: WorkerProc
    cli: WorkerProc
    ports: dict[str, int]
    gateway_uvloop: bool
    gateway_log_level: str
    log: Callable[[str], None]
    listen_info: dict[str, Any] = field(default_factory=dict)
    make_worker: Callable[[str], WorkerProc] | None = None

    # ---- addresses -----------------------------------------------------------------------------------------------
    def paths(self) -> list[str]:
        return ["direct", "nginx", "relayed"] if self.nginx is not None else ["direct", "relayed"]

    def ws(self, path: str, mode: str, query: str = "", gw: Gateway | None = None) -> tuple[str, dict | None]:
        q = ("?" + query) if query else ""
        if path == "direct":
            return f"ws://127.0.0.1:{self.ports['ws_port']}/{mode}{q}", None
        if path == "nginx":
            assert self.nginx is not None
            return f"ws://127.0.0.1:{self.nginx.ws_port}/{mode}{q}", None
        g = gw or self.gw
        return f"ws://127.0.0.1:{g.port}/$hc/{WS_ENTITY}/{mode}{q}", {"ServiceBusAuthorization": g.token(WS_ENTITY)}

    def http(self, path: str, name: str) -> tuple[str, str | None]:
        if path == "direct":
            return f"http://127.0.0.1:{self.ports['http_port']}/{HTTP_ENTITY}/{name}", None
        if path == "nginx":
            assert self.nginx is not None
            return f"http://127.0.0.1:{self.nginx.http_port}/{HTTP_ENTITY}/{name}", None
        return f"http://127.0.0.1:{self.gw.port}/{HTTP_ENTITY}/{name}", self.gw.token(HTTP_ENTITY)

    # ---- CPU accounting ------------------------------------------------------------------------------------------
    def cpu_snapshot(self, gw: Gateway | None = None) -> dict[str, float]:
        g = gw or self.gw
        snap = {"gateway": _safe(cpu_seconds, g.pid), "listener": _safe(cpu_seconds, self.lis.pid),
                "server": _safe(cpu_seconds, self.srv.pid), "client": _safe(cpu_seconds, self.cli.pid)}
        if self.nginx is not None:
            snap["nginx"] = _safe(tree_cpu_seconds, self.nginx.pid)
        return snap

    def measured(self, fn: Callable[[], dict], gw: Gateway | None = None) -> dict:
        before = self.cpu_snapshot(gw)
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        after = self.cpu_snapshot(gw)
        result["wall_s"] = wall
        result["cpu_s"] = {k: after[k] - before[k] for k in before}
        return result


def _safe(fn: Callable[[int], float], pid: int) -> float:
    try:
        return fn(pid)
    except OSError:
        return 0.0


def rotate(items: list[str], r: int) -> list[str]:
    k = r % len(items)
    return items[k:] + items[:k]


def run_rounds(ctx: Ctx, sc: ScenarioResult, rounds: int, one: Callable[[str, int], dict | None],
               paths: list[str] | None = None) -> None:
    """Interleave: round r runs every path once, in an order rotated by r."""
    paths = paths or ctx.paths()
    for r in range(rounds):
        for path in rotate(paths, r):
            try:
                sc.add(path, r, one(path, r))
            except BenchError as exc:
                sc.add(path, r, None)
                sc.note(f"{path} round {r + 1} failed: {exc}"[:400])
                ctx.log(f"    {path} round {r + 1} failed: {exc}")


# ---- 1. bulk stream ----------------------------------------------------------------------------------------------
def s1_bulk(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    sc = ScenarioResult("1", "ws_bulk", "WebSocket bulk stream, one way", {
        "bytes_per_round": m.bulk_bytes, "message_bytes": m.bulk_msg, "rounds": m.rounds})

    def one(path: str, r: int) -> dict:
        url, headers = ctx.ws(path, "sink", f"n={m.bulk_bytes}")
        res = ctx.measured(lambda: ctx.cli.call("bulk", url=url, headers=headers, total=m.bulk_bytes,
                                                msg_size=m.bulk_msg))
        if res["confirmed"] != res["bytes"]:
            sc.note(f"{path} round {r + 1}: the receiver confirmed {res['confirmed']} of {res['bytes']} bytes")
        gb = res["bytes"] / 1e9
        res["mbps"] = res["bytes"] / res["seconds"] / 1e6
        res["gbit"] = res["bytes"] * 8 / res["seconds"] / 1e9
        res["hop_cpu_per_gb"] = (res["cpu_s"]["gateway"] if path == "relayed"
                                 else res["cpu_s"].get("nginx", 0.0) if path == "nginx" else None)
        if res["hop_cpu_per_gb"] is not None:
            res["hop_cpu_per_gb"] /= gb
        res["path_cpu_per_gb"] = (res["cpu_s"]["gateway"] + res["cpu_s"]["listener"] if path == "relayed"
                                  else res["cpu_s"]["server"] + res["cpu_s"].get("nginx", 0.0)) / gb
        ctx.log(f"    {path:8s} {res['mbps']:8.1f} MB/s")
        return res

    sc.note(f"CPU from /proc/<pid>/stat has 10 ms resolution: about ±{0.01 / (m.bulk_bytes / 1e9):.2f} CPU-s/GB "
            "per round at this size")
    run_rounds(ctx, sc, m.rounds, one)
    sc.metric("throughput", "MB/s", "mbps", targets=[ratio_min("direct", 0.40)])
    sc.metric("hop CPU per GB (gateway vs nginx)", "CPU-s/GB", "hop_cpu_per_gb", baselines=("nginx",),
              better="lower")
    sc.metric("receiving-side CPU per GB (hop + server/listener)", "CPU-s/GB", "path_cpu_per_gb", better="lower")
    return sc


# ---- 2. ping-pong ------------------------------------------------------------------------------------------------
def s2_pingpong(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    sc = ScenarioResult("2", "ws_pingpong", "WebSocket ping-pong, 256 B, one connection", {
        "message_bytes": m.pp_size, "seconds_per_round": m.pp_seconds, "warmup_round_trips": m.pp_warmup,
        "rounds": m.rounds})

    def one(path: str, r: int) -> dict:
        url, headers = ctx.ws(path, "echo")
        res = ctx.measured(lambda: ctx.cli.call("pingpong", url=url, headers=headers, size=m.pp_size,
                                                duration=m.pp_seconds, warmup=m.pp_warmup))
        ctx.log(f"    {path:8s} {res['rtps']:8.0f} rt/s  p50 {res['p50_us']:.0f} µs  p99 {res['p99_us']:.0f} µs")
        return res

    run_rounds(ctx, sc, m.rounds, one)
    sc.metric("round trips/s", "rt/s", "rtps")
    sc.metric("p50 round trip", "µs", "p50_us", better="lower", targets=[diff_max("direct", 150, "µs")])
    sc.metric("p99 round trip", "µs", "p99_us", better="lower")
    return sc


# ---- 3. small HTTP -----------------------------------------------------------------------------------------------
def s3_http_small(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    sc = ScenarioResult("3", "http_small", "Small HTTP requests (wrk), Python answering code", {
        "seconds_per_run": m.http_seconds, "connections": list(m.http_conns), "rounds": m.rounds,
        "response_bytes": 13, "relayed_listener": ctx.listen_info.get("http_listener"),
        "direct": "aiohttp serving the same answer() function", "nginx": "nginx → same aiohttp (keepalive upstream)"})
    if ctx.listen_info.get("note"):
        sc.note(ctx.listen_info["note"])
    sc.note("relayed requests carry a SAS token (ServiceBusAuthorization header), as real senders do; the gateway "
            "verifies it on every request")

    for conns in m.http_conns:
        def one(tagged: str, r: int, conns: int = conns) -> dict:
            path = tagged.split("@", 1)[0]
            url, token = ctx.http(path, "hello")
            res = ctx.measured(lambda: run_wrk(url, connections=conns, seconds=m.http_seconds,
                                               script_dir=ctx.tmp, token=token))
            n = max(res["requests"], 1)
            cpu = res["cpu_s"]
            res["hop_cpu_us"] = (cpu["gateway"] if path == "relayed" else cpu.get("nginx", 0.0)
                                 if path == "nginx" else 0.0) / n * 1e6
            res["path_cpu_us"] = (cpu["gateway"] + cpu["listener"] if path == "relayed"
                                  else cpu["server"] + cpu.get("nginx", 0.0)) / n * 1e6
            res["app_cpu_us"] = (cpu["listener"] if path == "relayed" else cpu["server"]) / n * 1e6
            if res["errors"]:
                sc.note(f"wrk reported errors at c={conns} on {path}: {res['errors']} in round {r + 1}")
            ctx.log(f"    c={conns:<3d} {path:8s} {res['rps']:9.0f} req/s  p50 {res['p50_us']:.0f} µs  "
                    f"p99 {res['p99_us']:.0f} µs  errors {res['errors']}")
            return res

        sfx = f"@c{conns}"
        run_rounds(ctx, sc, m.rounds, one, paths=[p + sfx for p in ctx.paths()])
        targets = [ratio_min("direct", 0.50), ratio_min("nginx", 0.50)] if conns == 50 else []
        sc.metric(f"req/s, {conns} conn", "req/s", "rps", targets=targets, suffix=sfx)
        sc.metric(f"p50 latency, {conns} conn", "µs", "p50_us", better="lower", suffix=sfx)
        sc.metric(f"p99 latency, {conns} conn", "µs", "p99_us", better="lower", suffix=sfx)
        sc.metric(f"hop CPU per request (gateway vs nginx), {conns} conn", "CPU-µs/req", "hop_cpu_us",
                  baselines=("nginx",), better="lower", suffix=sfx)
        sc.metric(f"server-side CPU per request (all processes but wrk), {conns} conn", "CPU-µs/req",
                  "path_cpu_us", better="lower", suffix=sfx)
        sc.metric(f"answering process CPU per request (listener vs aiohttp), {conns} conn", "CPU-µs/req",
                  "app_cpu_us", baselines=("direct",), better="lower", suffix=sfx)
    return sc


# ---- 4. 1 MiB bodies ---------------------------------------------------------------------------------------------
def s4_http_big(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    sc = ScenarioResult("4", "http_1mib", "HTTP with 1 MiB bodies both ways (rendezvous path)", {
        "body_bytes": m.big_body, "connections": m.big_conns, "seconds_per_run": m.big_seconds, "rounds": m.rounds,
        "relayed_listener": ctx.listen_info.get("http_listener")})
    sc.note("wrk POSTs 1 MiB; the answer code echoes it. Over the gateway both bodies go over a rendezvous "
            "WebSocket; nginx streams both ways (proxy_buffering and proxy_request_buffering off)")

    def one(path: str, r: int) -> dict:
        url, token = ctx.http(path, "echo")
        res = ctx.measured(lambda: run_wrk(url, connections=m.big_conns, seconds=m.big_seconds, script_dir=ctx.tmp,
                                           token=token, body=m.big_body, timeout_s=30))
        res["mbps"] = res["rps"] * 2 * m.big_body / 1e6
        n = max(res["requests"], 1)
        res["hop_cpu_ms"] = (res["cpu_s"]["gateway"] if path == "relayed" else res["cpu_s"].get("nginx", 0.0)
                             if path == "nginx" else 0.0) / n * 1e3
        if res["errors"]:
            sc.note(f"wrk reported errors on {path}: {res['errors']} in round {r + 1}")
        ctx.log(f"    {path:8s} {res['rps']:8.1f} req/s  {res['mbps']:8.1f} MB/s  p50 {res['p50_us'] / 1e3:.1f} ms")
        return res

    run_rounds(ctx, sc, m.rounds, one)
    sc.metric("requests/s", "req/s", "rps")
    sc.metric("body throughput (both directions)", "MB/s", "mbps")
    sc.metric("p50 latency", "µs", "p50_us", better="lower")
    sc.metric("hop CPU per request (gateway vs nginx)", "CPU-ms/req", "hop_cpu_ms", baselines=("nginx",),
              better="lower")
    return sc


# ---- 5. SOAP placeholder -----------------------------------------------------------------------------------------
def s5_soap(ctx: Ctx) -> ScenarioResult:
    sc = ScenarioResult("5", "soap", "SOAP: zeep → gateway → Spyne service host vs zeep → Spyne directly", {})
    sc.data["status"] = "not_measurable"
    sc.note("not yet measurable: needs the WCF relay host")
    sc.data["target"] = "≥ 0.85 × direct SOAP calls/s"
    return sc


# ---- 6. connection setup -----------------------------------------------------------------------------------------
def s6_setup(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    sc = ScenarioResult("6", "ws_setup", "Connection setup: sender connect to first echoed byte", {
        "connections_per_round": m.setup_count, "warmup": m.setup_warmup, "rounds": m.rounds})
    sc.note("in series, one at a time; relayed setup includes the accept message to the listener and its "
            "rendezvous WebSocket")

    def one(path: str, r: int) -> dict:
        url, headers = ctx.ws(path, "echo")
        res = ctx.measured(lambda: ctx.cli.call("setup", url=url, headers=headers, count=m.setup_count,
                                                warmup=m.setup_warmup))
        if res["failures"]:
            sc.note(f"{path}: {res['failures']} failed setups in round {r + 1}")
        ctx.log(f"    {path:8s} p50 {res['p50_us']:.0f} µs  p99 {res['p99_us']:.0f} µs")
        return res

    run_rounds(ctx, sc, m.rounds, one)
    sc.metric("p50 setup", "µs", "p50_us", better="lower", targets=[abs_max(2000, "µs")])
    sc.metric("p99 setup", "µs", "p99_us", better="lower")
    return sc


# ---- 7. scale ----------------------------------------------------------------------------------------------------
def s7_scale(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    pairs = max(1, (m.scale_conns - m.scale_listeners) // 2)
    per_entity = max(1, m.scale_listeners // m.scale_entities)
    entities = [f"idle-{i}" for i in range(m.scale_entities)]
    total = m.scale_entities * per_entity + 2 * pairs
    sc = ScenarioResult("7", "scale_idle", f"Scale: {total:,} idle connections on one gateway", {
        "gateway_sockets": total, "listener_control_channels": m.scale_entities * per_entity,
        "hybrid_connections": m.scale_entities, "idle_sender_pairs": pairs, "rounds": m.scale_rounds,
        "setup_samples": m.scale_setup_count})
    sc.note("a gateway socket is a listener control channel, an idle sender, or the listener's rendezvous for it "
            "(each idle sender is 2 sockets); RSS per connection = gateway VmRSS growth / sockets; a fresh gateway "
            "every round, so memory freed by earlier scenarios cannot hide growth")
    assert ctx.make_worker is not None
    holders_l = ctx.make_worker("idle-listeners")
    holders_s = ctx.make_worker("idle-senders")
    try:
        for r in range(m.scale_rounds):
            gw = Gateway.start(ctx.tmp / f"scale-gw-{r}", uvloop=ctx.gateway_uvloop,
                               log_level=ctx.gateway_log_level)
            try:
                ctx.lis.call("listen", gw=gw.info([WS_ENTITY]), ws_entity=WS_ENTITY)
                url, headers = ctx.ws("relayed", "echo", gw=gw)
                ctx.cli.call("setup", url=url, headers=headers, count=5, warmup=0)  # warm the gateway up
                unloaded_first = r % 2 == 0  # interleave: unloaded before loading on even rounds, after on odd
                unloaded = None
                if unloaded_first:
                    unloaded = ctx.cli.call("setup", url=url, headers=headers, count=m.scale_setup_count, warmup=2)
                time.sleep(0.3)
                rss0 = mem_kib(gw.pid)["VmRSS"]
                cpu0 = cpu_seconds(gw.pid)
                t0 = time.perf_counter()
                info = gw.info(entities)
                lres = holders_l.call("idle_listen", gw=info, entities=entities, per_entity=per_entity,
                                      timeout=1800)
                sres = holders_s.call("idle_connect", gw=info, entities=entities, count=pairs, timeout=1800)
                open_s = time.perf_counter() - t0
                open_cpu = cpu_seconds(gw.pid) - cpu0
                time.sleep(0.5)
                status = holders_l.call("idle_status")
                sockets = lres["listeners"] + sres["connected"] + status["rendezvous"]
                rss1 = mem_kib(gw.pid)["VmRSS"]
                loaded = ctx.cli.call("setup", url=url, headers=headers, count=m.scale_setup_count, warmup=2)
                holders_s.call("release")
                holders_l.call("release")
                if not unloaded_first:
                    time.sleep(0.5)
                    unloaded = ctx.cli.call("setup", url=url, headers=headers, count=m.scale_setup_count, warmup=2)
                assert unloaded is not None
                per_conn = (rss1 - rss0) / sockets if sockets else None
                if lres["failed"] or sres["failed"]:
                    sc.note(f"round {r + 1}: {lres['failed']} listeners and {sres['failed']} senders failed to "
                            f"connect ({sres.get('errors')})")
                sc.add("relayed", r, {"kib_per_conn": per_conn, "sockets": sockets, "rss0_kib": rss0,
                                      "rss1_kib": rss1, "open_seconds": open_s,
                                      "open_rate": sockets / open_s if open_s else None,
                                      "open_cpu_ms_per_conn": open_cpu / sockets * 1e3 if sockets else None,
                                      "setup_p50_us": loaded["p50_us"], "setup_p99_us": loaded["p99_us"]})
                sc.add("unloaded", r, {"setup_p50_us": unloaded["p50_us"], "setup_p99_us": unloaded["p99_us"]})
                ctx.log(f"    round {r + 1}: {sockets} sockets, {per_conn:.1f} KiB/conn, setup p50 loaded "
                        f"{loaded['p50_us']:.0f} µs vs unloaded {unloaded['p50_us']:.0f} µs")
                ctx.lis.call("unlisten")
            except BenchError as exc:
                sc.add("relayed", r, None)
                sc.note(f"round {r + 1} failed: {exc}"[:400])
                ctx.log(f"    round {r + 1} failed: {exc}")
                for w in (holders_s, holders_l):
                    try:
                        w.call("release", timeout=60)
                    except BenchError:
                        pass
                try:
                    ctx.lis.call("unlisten", timeout=60)
                except BenchError:
                    pass
            finally:
                gw.stop()
    finally:
        holders_l.close()
        holders_s.close()
    sc.metric("gateway RSS per idle connection", "KiB", "kib_per_conn", baselines=(), better="lower",
              targets=[abs_max(32, "KiB")])
    sc.metric("setup p50 while loaded (baseline: same gateway unloaded)", "µs", "setup_p50_us",
              baselines=("unloaded",), better="lower")
    sc.metric("setup p99 while loaded (baseline: same gateway unloaded)", "µs", "setup_p99_us",
              baselines=("unloaded",), better="lower")
    sc.metric("idle connections opened per second", "conn/s", "open_rate", baselines=())
    sc.metric("gateway CPU per opened connection", "CPU-ms/conn", "open_cpu_ms_per_conn", baselines=(),
              better="lower")
    return sc


# ---- 8. slow reader ----------------------------------------------------------------------------------------------
class _PeakSampler:
    """Samples VmRSS of some pids every 20 ms (bounded by ``max_seconds``) and keeps the peak."""

    def __init__(self, pids: list[int], max_seconds: float) -> None:
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._max = max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self._max
        while not self._stop.is_set() and time.monotonic() < deadline:
            total = 0
            for pid in self.pids:
                try:
                    total += mem_kib(pid)["VmRSS"]
                except OSError:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.02)

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def s8_slow_reader(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    sc = ScenarioResult("8", "slow_reader", "Slow reader: memory while a fast writer meets a capped reader", {
        "bytes": m.slow_bytes, "reader_rate_bytes_per_s": m.slow_rate, "rounds": m.slow_rounds})
    sc.note("sender writes as fast as it can; the listener (or the server behind nginx) reads at the capped rate. "
            "Growth = peak RSS during the transfer (VmHWM after a reset through /proc/<pid>/clear_refs, and "
            "20 ms VmRSS samples) minus RSS before it; relayed uses a fresh gateway each round")
    paths = ["nginx", "relayed"] if ctx.nginx is not None else ["relayed"]
    query = f"n={m.slow_bytes}&rate={m.slow_rate}"
    limit = m.slow_bytes / m.slow_rate * 3 + 60

    def one(path: str, r: int) -> dict:
        gw = None
        try:
            if path == "relayed":
                gw = Gateway.start(ctx.tmp / f"slow-gw-{r}", uvloop=ctx.gateway_uvloop,
                                   log_level=ctx.gateway_log_level)
                ctx.lis.call("listen", gw=gw.info([WS_ENTITY]), ws_entity=WS_ENTITY)
                pids = [gw.pid]
            else:
                assert ctx.nginx is not None
                pids = [ctx.nginx.pid, *ctx.nginx.worker_pids()]
            warm_url, warm_headers = ctx.ws(path, "sink", f"n={MiB}", gw=gw)
            ctx.cli.call("bulk", url=warm_url, headers=warm_headers, total=MiB, msg_size=64 * 1024)
            time.sleep(0.2)
            reset = all(reset_peak_rss(p) for p in pids)
            before = sum(mem_kib(p)["VmRSS"] for p in pids)
            url, headers = ctx.ws(path, "slowsink", query, gw=gw)
            with _PeakSampler(pids, limit) as sampler:
                res = ctx.cli.call("bulk", url=url, headers=headers, total=m.slow_bytes, msg_size=64 * 1024,
                                   timeout=limit)
            hwm = sum(mem_kib(p)["VmHWM"] for p in pids) if reset else 0
            peak = max(hwm, sampler.peak)
            res["growth_mib"] = max(0, peak - before) / 1024
            res["hwm_reset"] = reset
            res["reader_mbps"] = res["bytes"] / res["seconds"] / 1e6
            ctx.log(f"    {path:8s} growth {res['growth_mib']:.2f} MiB at {res['reader_mbps']:.1f} MB/s")
            return res
        finally:
            if gw is not None:
                try:
                    ctx.lis.call("unlisten", timeout=60)
                finally:
                    gw.stop()

    run_rounds(ctx, sc, m.slow_rounds, one, paths=paths)
    sc.metric("peak memory growth (gateway vs nginx)", "MiB", "growth_mib", baselines=("nginx",), better="lower",
              targets=[abs_max_worst(32, "MiB")])
    sc.metric("reader throughput (should equal the cap)", "MB/s", "reader_mbps", baselines=("nginx",))
    return sc


SCENARIOS: list[tuple[str, Callable[[Ctx], ScenarioResult]]] = [
    ("1", s1_bulk), ("2", s2_pingpong), ("3", s3_http_small), ("4", s4_http_big), ("5", s5_soap),
    ("6", s6_setup), ("7", s7_scale), ("8", s8_slow_reader),
]
