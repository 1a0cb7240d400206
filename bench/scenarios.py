"""The nine scenarios. Each runs its paths interleaved (the order rotates every round), keeps every round's
values, and turns them into metric rows with :class:`bench.stats.ScenarioResult`.

Paths: ``direct`` (client straight to the server code), ``nginx`` (nginx reverse proxy, 1 worker, in front of the
same server), ``relayed`` (through the gateway to a listener running the same code). Scenario 9 compares two
relayed paths instead: ``cross`` (sender and listener on different cluster nodes) against ``same`` (one node).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from bench.common import cpu_seconds, mem_kib, reset_peak_rss, tree_cpu_seconds
from bench.modes import MiB, Mode
from bench.procs import BenchError, Gateway, Nginx, Passthrough, Redis, WorkerProc, run_wrk
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
    profile: bool = False

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


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} µs"


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


# ---- 5. SOAP ------------------------------------------------------------------------------------------------------
SOAP_PATH = "bench/soap"


def s5_soap(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    assert ctx.make_worker is not None
    sc = ScenarioResult("5", "soap", "SOAP: zeep → gateway → Spyne service host vs zeep → Spyne directly", {
        "in_flight": list(m.soap_in_flight), "seconds_per_run": m.soap_seconds, "warmup_calls": m.soap_warmup,
        "rounds": m.rounds, "operation": "Calculator Add(a, b), arguments vary, every sum checked",
        "service": "samples.calculator.service.make_application('soap11'); relayed: RelayServiceHost + "
                   "BasicHttpRelayBinding; direct: aiohttp calling SpyneBytesApp.handle",
        "service_threads": 16})
    sc.note("both paths run SpyneBytesApp.handle on a 16-thread pool in the same service process (relayed: the "
            "host's pool via its listener link; direct: an aiohttp handler's pool); the caller is a separate "
            "process: zeep.Client on requests for 1 in flight, zeep.AsyncClient on wcfrelay AiohttpTransport for "
            "more, the same client code on both paths, plus the Send token (ServiceBusAuthorization) when relayed")
    sc.note("each round builds a fresh client (WSDL fetched from the path under test) and makes untimed warm-up "
            "calls; CPU is read around the timed calls only")
    sc.note("two more baselines put a hop in front of the same direct server, to show what any hop costs here: "
            "nginx (its own instance, 1 worker, keepalive upstream, passing Host) and `passthrough` "
            "(bench/passthrough.py: an asyncio TCP proxy that copies bytes and parses nothing, on the gateway's "
            "event loop); the target is against direct")
    service = ctx.make_worker("soap-service")
    caller = ctx.make_worker("soap-client")
    hops: dict[str, Any] = {}  # path -> the process in front of the direct server
    try:
        info = service.call("soap_serve", gw=ctx.gw.info([SOAP_PATH]), path=SOAP_PATH, max_workers=16, timeout=120)
        cs = ctx.gw.connection_string
        direct_port = info["direct_port"]
        ports = {"direct": direct_port, "relayed": ctx.gw.port}
        if ctx.nginx is not None:  # nginx is installed: a second instance, in front of this scenario's server
            try:
                nginx = hops["nginx"] = Nginx.start(ctx.tmp / "nginx-soap", upstream_http=direct_port,
                                                    upstream_ws=direct_port)
                ports["nginx"] = nginx.http_port
            except BenchError as exc:
                sc.note(f"nginx baseline unavailable: {exc}"[:400])
        try:
            passthrough = hops["passthrough"] = Passthrough.start(direct_port, uvloop=ctx.gateway_uvloop)
            ports["passthrough"] = passthrough.port
        except BenchError as exc:
            sc.note(f"passthrough baseline unavailable: {exc}"[:400])
        wsdl = {path: f"http://127.0.0.1:{port}/{SOAP_PATH}?wsdl" for path, port in ports.items()}
        paths = ["direct", *hops, "relayed"]

        def cpu_now() -> dict[str, float]:
            snap = {"gateway": _safe(cpu_seconds, ctx.gw.pid), "service": _safe(cpu_seconds, service.pid),
                    "client": _safe(cpu_seconds, caller.pid)}
            for name, hop in hops.items():
                snap[name] = _safe(tree_cpu_seconds, hop.pid)
            return snap

        def run_calls(path: str, in_flight: int, seconds: float, seed: int) -> dict:
            opened = caller.call("soap_open", wsdl=wsdl[path], connection_string=cs if path == "relayed" else None,
                                 in_flight=in_flight, warmup=m.soap_warmup, seed=seed, timeout=120)
            try:
                if opened["warmup_failures"]:
                    raise BenchError(f"warm-up calls failed: {opened['warmup_error']}")
                before = cpu_now()
                res = caller.call("soap_run", duration=seconds, timeout=seconds * 10 + 120)
                after = cpu_now()
            finally:
                caller.call("soap_close", timeout=60)
            res["client_kind"] = opened["client"]
            res["cpu_s"] = {k: after[k] - before[k] for k in before}
            return res

        for in_flight in m.soap_in_flight:
            def one(tagged: str, r: int, in_flight: int = in_flight) -> dict:
                path = tagged.split("@", 1)[0]
                res = run_calls(path, in_flight, m.soap_seconds, seed=r * 97 + in_flight)
                n = max(res["calls"], 1)
                cpu = res["cpu_s"]
                hop_cpu = cpu["gateway"] if path == "relayed" else cpu.get(path)
                res["hop_cpu_us"] = hop_cpu / n * 1e6 if hop_cpu is not None else None
                res["app_cpu_us"] = cpu["service"] / n * 1e6
                res["path_cpu_us"] = (cpu["service"] + (hop_cpu or 0.0)) / n * 1e6
                res["client_cpu_us"] = cpu["client"] / n * 1e6
                if res["failures"]:
                    sc.note(f"{path} at {in_flight} in flight, round {r + 1}: {res['exceptions']} failed calls and "
                            f"{res['wrong_results']} wrong sums ({res['first_error']})")
                hop = f"  hop {res['hop_cpu_us']:.0f} CPU-µs/call" if res["hop_cpu_us"] is not None else ""
                ctx.log(f"    {in_flight:>2d} in flight {path:11s} {res['cps']:7.0f} calls/s  p50 {_us(res['p50_us'])}"
                        f"  p99 {_us(res['p99_us'])}{hop}  failures {res['failures']}")
                return res

            sfx = f"@f{in_flight}"
            run_rounds(ctx, sc, m.rounds, one, paths=[p + sfx for p in paths])
            label = f"{in_flight} in flight"
            every = ("direct", "nginx", "passthrough")
            sc.metric(f"calls/s, {label}", "calls/s", "cps", baselines=every, targets=[ratio_min("direct", 0.85)],
                      suffix=sfx)
            sc.metric(f"p50 latency, {label}", "µs", "p50_us", baselines=every, better="lower", suffix=sfx)
            sc.metric(f"p99 latency, {label}", "µs", "p99_us", baselines=every, better="lower", suffix=sfx)
            sc.metric(f"hop CPU per call (gateway vs nginx, passthrough), {label}", "CPU-µs/call", "hop_cpu_us",
                      baselines=("nginx", "passthrough"), better="lower", suffix=sfx)
            sc.metric(f"service process CPU per call (host vs aiohttp), {label}", "CPU-µs/call", "app_cpu_us",
                      baselines=("direct",), better="lower", suffix=sfx)
            sc.metric(f"server-side CPU per call (gateway + service), {label}", "CPU-µs/call", "path_cpu_us",
                      baselines=("direct",), better="lower", suffix=sfx)
            sc.metric(f"caller CPU per call (zeep), {label}", "CPU-µs/call", "client_cpu_us", baselines=("direct",),
                      better="lower", suffix=sfx)
        if ctx.profile:
            sc.data["profile"] = _profile_soap(ctx, sc, service, caller, wsdl["relayed"], cs)
    finally:
        for hop in hops.values():
            hop.stop()
        try:
            service.call("soap_stop", timeout=60)
        except BenchError:
            pass
        caller.close()
        service.close()
    return sc


def _profile_soap(ctx: Ctx, sc: ScenarioResult, service: WorkerProc, caller: WorkerProc, wsdl: str,
                  cs: str) -> dict:
    """py-spy on the gateway, then on the service host, each during one extra relayed run (after the measured
    rounds, so the sampler never disturbs a reported figure)."""
    from bench import profiling

    m = ctx.mode
    in_flight = min(m.soap_in_flight)  # one call at a time: where the relay's own cost shows least diluted
    ctx.out.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    for who, pid, name in (("gateway", ctx.gw.pid, "profile-s5.txt"),
                           ("service host", service.pid, "profile-s5-host.txt")):
        target = ctx.out / name

        def workload() -> None:
            caller.call("soap_open", wsdl=wsdl, connection_string=cs, in_flight=in_flight, warmup=m.soap_warmup,
                        timeout=120)
            try:
                caller.call("soap_run", duration=m.profile_soap_seconds, timeout=m.profile_soap_seconds * 10 + 120)
            finally:
                caller.call("soap_close", timeout=60)

        try:
            prof = profiling.profile_pid(pid, target, workload, gil=True)
            prof["workload"] = (f"{who}: relayed Add calls, {in_flight} in flight for {m.profile_soap_seconds:g}s; "
                                "py-spy --gil: samples of the thread holding the GIL only")
            ctx.log(f"  profile of the {who} written to {target}")
        except (RuntimeError, BenchError, OSError) as exc:
            prof = {"error": f"{who}: {exc}"}
        if who == "gateway":
            out = prof
        else:
            sc.data["profile_service"] = prof
    return out


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

    def __enter__(self) -> Self:
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


# ---- 9. cluster: cross-node vs same-node ----------------------------------------------------------------------------
def _wait_routable(ctx: Ctx, url: str, headers: dict | None, max_seconds: float = 20.0) -> None:
    """Until a sender on ``url`` reaches the listener (the other node learns of it through Redis)."""
    deadline = time.monotonic() + max_seconds
    last: dict | None = None
    for _ in range(int(max_seconds / 0.1) + 1):
        last = ctx.cli.call("setup", url=url, headers=headers, count=1, warmup=0, max_seconds=10.0, timeout=60)
        if not last["failures"] and last["count"] == 1:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise BenchError(f"the listener did not become reachable through {url.split('/$hc/')[0]}: {last}")


def s9_cluster(ctx: Ctx) -> ScenarioResult:
    m = ctx.mode
    assert ctx.make_worker is not None
    sc = ScenarioResult("9", "cluster", "Cluster: sender and listener on different nodes vs the same node", {
        "nodes": 2, "setup_per_round": m.cluster_setup_count, "setup_warmup": m.setup_warmup,
        "bulk_bytes_per_round": m.cluster_bulk_bytes, "message_bytes": m.bulk_msg, "rounds": m.rounds,
        "directory": "redis-server (Debian package) on a free loopback port, no persistence"})
    sc.note("two gateway nodes share one config (one SAS rule) and one Redis (--redis URL --node-id nX); the "
            "listener holds its control channel on node 0; 'same' senders connect to node 0, 'cross' senders to "
            "node 1, which relays the accept through Redis pub/sub to node 0; the listener then opens its "
            "rendezvous to the sender's node, so bulk payload crosses one gateway either way")
    sc.note("the ratio is cross ÷ same of the same round; gateway CPU per GB sums both nodes")
    if Redis.binary() is None:
        sc.data["status"] = "skipped"
        sc.note("redis-server is not installed (Debian package redis-server)")
        return sc
    redis = Redis.start(ctx.tmp / "cluster-redis")
    nodes: list[Gateway] = []
    listener: WorkerProc | None = None
    rule = (f"[[namespace.rules]]\nname = \"BenchClusterRule\"\nprimary_key = \"{secrets.token_hex(24)}\"\n"
            'rights = ["Listen", "Send", "Manage"]\n')
    try:
        for i in range(2):
            nodes.append(Gateway.start(ctx.tmp / f"cluster-n{i}", uvloop=ctx.gateway_uvloop,
                                       log_level=ctx.gateway_log_level, config_extra=rule,
                                       extra_args=("--redis", redis.url, "--node-id", f"n{i}")))
        home, other = nodes
        listener = ctx.make_worker("cluster-listener")
        listener.call("listen", gw=home.info([WS_ENTITY]), ws_entity=WS_ENTITY)
        node_of = {"same": home, "cross": other}
        for node in nodes:
            url, headers = ctx.ws("relayed", "echo", gw=node)
            _wait_routable(ctx, url, headers)

        def one(path: str, r: int) -> dict:
            node = node_of[path]
            url, headers = ctx.ws("relayed", "echo", gw=node)
            setup = ctx.cli.call("setup", url=url, headers=headers, count=m.cluster_setup_count,
                                 warmup=m.setup_warmup)
            burl, bheaders = ctx.ws("relayed", "sink", f"n={m.cluster_bulk_bytes}", gw=node)
            cpu0 = {n.pid: _safe(cpu_seconds, n.pid) for n in nodes}
            bulk = ctx.cli.call("bulk", url=burl, headers=bheaders, total=m.cluster_bulk_bytes, msg_size=m.bulk_msg)
            cpu = {n.pid: _safe(cpu_seconds, n.pid) - cpu0[n.pid] for n in nodes}
            if bulk["confirmed"] != bulk["bytes"]:
                sc.note(f"{path} round {r + 1}: the receiver confirmed {bulk['confirmed']} of {bulk['bytes']} bytes")
            if setup["failures"]:
                sc.note(f"{path}: {setup['failures']} failed setups in round {r + 1}")
            gb = bulk["bytes"] / 1e9
            res = {"setup_p50_us": setup["p50_us"], "setup_p99_us": setup["p99_us"], "failures": setup["failures"],
                   "setup_count": setup["count"], "bytes": bulk["bytes"], "confirmed": bulk["confirmed"],
                   "seconds": bulk["seconds"], "mbps": bulk["bytes"] / bulk["seconds"] / 1e6,
                   "gateway_cpu_per_gb": sum(cpu.values()) / gb,
                   "cpu_s": {f"node{i}": cpu[n.pid] for i, n in enumerate(nodes)}}
            ctx.log(f"    {path:6s} setup p50 {_us(res['setup_p50_us'])}  p99 {_us(res['setup_p99_us'])}  "
                    f"bulk {res['mbps']:8.1f} MB/s")
            return res

        run_rounds(ctx, sc, m.rounds, one, paths=["same", "cross"])
        kw: dict[str, Any] = {"relayed": "cross", "baselines": ("same",), "relayed_label": "cross"}
        sc.metric("setup p50 (sender connect to first echoed byte)", "µs", "setup_p50_us", better="lower", **kw)
        sc.metric("setup p99", "µs", "setup_p99_us", better="lower", **kw)
        sc.metric("bulk throughput, 64 KiB messages", "MB/s", "mbps", **kw)
        sc.metric("gateway CPU per GB (both nodes)", "CPU-s/GB", "gateway_cpu_per_gb", better="lower", **kw)
        for row in sc.data["metrics"]:
            ratio = row["ratios"].get("same", {})
            if ratio.get("median") is not None:
                ctx.log(f"    cross ÷ same, {row['metric']}: {ratio['median']:.3f} "
                        f"(rounds {ratio['min']:.3f}–{ratio['max']:.3f})")
        dead = [f"node{i}" for i, n in enumerate(nodes) if not n.alive()]
        if dead:
            raise BenchError(f"cluster node(s) died during the scenario: {', '.join(dead)}")
    finally:
        if listener is not None:
            listener.close()
        for node in nodes:
            node.stop()
        redis.stop()
    return sc


SCENARIOS: list[tuple[str, Callable[[Ctx], ScenarioResult]]] = [
    ("1", s1_bulk), ("2", s2_pingpong), ("3", s3_http_small), ("4", s4_http_big), ("5", s5_soap),
    ("6", s6_setup), ("7", s7_scale), ("8", s8_slow_reader), ("9", s9_cluster),
]
