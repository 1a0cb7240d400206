"""``python -m bench [--quick|--smoke] [--uvloop] [--profile] [--only 1,3] [--rounds N] [--out DIR]``.

Starts everything on free loopback ports (gateway, nginx, the direct servers, the listener, load clients), runs
the scenarios with baseline and relayed rounds interleaved, and writes ``<out>/<set>/results.json``,
``results.md`` and PNG charts, plus ``<out>/README.md`` indexing every result set. The set is named after the
mode (``full``, ``quick-uvloop``); a run of some scenarios or with other rounds gets a set of its own
(``full-only5-15rounds``), and a run that aborts leaves the results folder as it was, so no run ever replaces a
complete set with a partial one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs, report
from bench.common import raise_nofile
from bench.modes import MODES, Mode
from bench.procs import ROOT, BenchError, Gateway, Nginx, WorkerProc, run_wrk
from bench.scenarios import HTTP_ENTITY, SCENARIOS, WS_ENTITY, Ctx

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
SCENARIO_IDS = [sid for sid, _ in SCENARIOS]
MAX_ROUNDS = 100


def _versions() -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for mod in ("aiohttp", "websockets", "uvloop", "matplotlib"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            out[mod] = "absent"
    exe = Nginx.binary()
    if exe:
        r = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False)
        out["nginx"] = (r.stderr or r.stdout).strip().split("/")[-1]
    if shutil.which("wrk"):
        r = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        out["wrk"] = ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0][:60]
    return out


def _commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False,
                           timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1] if __doc__ else None)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small sizes, about three minutes")
    g.add_argument("--smoke", action="store_true", help="tiny sizes, one round: proves the machinery (tests)")
    p.add_argument("--uvloop", action="store_true", help="run the gateway on uvloop (via bench/launch_gateway.py)")
    p.add_argument("--peer-loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="event loop of clients, direct servers and listeners (default uvloop if installed)")
    p.add_argument("--profile", action="store_true",
                   help="after scenarios 1, 3 and 5, profile the gateway (and in 5 the service host) with py-spy "
                        "during one extra relayed run")
    p.add_argument("--only", help="comma-separated scenario numbers, e.g. 1,3 (default: all)")
    p.add_argument("--http-listener", choices=["sdk", "raw"], default="sdk",
                   help="who answers relayed HTTP: the SDK HybridConnectionListener (default) or the bench's own")
    p.add_argument("--gateway-log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results base folder (default bench/results)")
    p.add_argument("--rounds", type=int, help=f"override the mode's number of rounds (1 to {MAX_ROUNDS})")
    p.add_argument("--render", type=Path, metavar="DIR",
                   help="only rewrite results.md, the charts and the index from DIR/results.json (no measuring)")
    args = p.parse_args(argv)
    if args.only is not None:
        items = [s.strip() for s in args.only.split(",")]
        unknown = [s for s in items if s not in SCENARIO_IDS]
        if unknown:
            p.error(f"--only takes scenario numbers from {','.join(SCENARIO_IDS)} separated by commas, "
                    f"not {unknown[0][:20]!r}")
        args.only = sorted(set(items), key=SCENARIO_IDS.index)
    if args.rounds is not None and not 1 <= args.rounds <= MAX_ROUNDS:
        p.error(f"--rounds must be between 1 and {MAX_ROUNDS}, not {args.rounds}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is not a folder")
    if args.render is not None and not (args.render / "results.json").is_file():
        p.error(f"--render {args.render}: there is no results.json in it")
    return args


def set_name(mode: str, *, uvloop: bool, only: list[str] | None, rounds: int | None) -> str:
    """The result set a run writes: the mode's own set only for a run of every scenario at the mode's rounds."""
    name = mode + ("-uvloop" if uvloop else "")
    if only is not None and only != SCENARIO_IDS:
        name += "-only" + "-".join(only)
    if rounds is not None:
        name += f"-{rounds}rounds"
    return name


def render(folder: Path) -> int:
    """Rebuild results.md, charts and the index from an existing results.json (profiles re-summarised)."""
    import json

    from bench.profiling import summarise_collapsed

    source = folder / "results.json"
    try:
        results = json.loads(source.read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        return _refuse_render(source, str(exc))
    if not isinstance(results, dict) or not isinstance(results.get("meta"), dict) \
            or not isinstance(results.get("scenarios"), list):
        return _refuse_render(source, "it has no meta object and scenarios list")
    try:
        for sc in results["scenarios"]:
            for key in ("profile", "profile_service"):
                prof = sc.get(key)
                # only a file of the set itself: a name, never a path that leads out of the folder
                if prof and isinstance(prof.get("file"), str) and Path(prof["file"]).name == prof["file"] \
                        and (folder / prof["file"]).is_file():
                    prof.update(summarise_collapsed((folder / prof["file"]).read_text(errors="replace")))
        report.write_all(results, folder)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return _refuse_render(source, f"it is not one this bench wrote ({type(exc).__name__}: {str(exc)[:100]})")
    report.write_index(folder.parent)
    print(f"rewrote {folder / 'results.md'}")
    return 0


def _refuse_render(source: Path, why: str) -> int:
    print(f"bench: cannot render {source}: {why[:200]}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    mode: Mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.rounds is not None:
        from dataclasses import replace

        mode = replace(mode, rounds=args.rounds, scale_rounds=args.rounds, slow_rounds=args.rounds)
    name = set_name(mode.name, uvloop=args.uvloop, only=args.only, rounds=args.rounds)
    out = args.out / name
    peer_uvloop = args.peer_loop == "uvloop"
    if peer_uvloop:
        try:
            import uvloop
        except ImportError:
            peer_uvloop = False
    if args.uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print("--uvloop needs uvloop installed (pip install uvloop)", file=sys.stderr)
            return 2
    raise_nofile()
    started = time.monotonic()
    procs.GATEWAY_PROBLEMS.clear()  # this run's gateways only
    log_lines: list[str] = []

    def log(text: str) -> None:
        stamp = f"[{time.monotonic() - started:6.1f}s] "
        print(stamp + text, flush=True)
        log_lines.append(stamp + text)

    meta: dict[str, Any] = {
        "mode": mode.name, "set": name, "started": dt.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "loadavg_before": _loadavg(), "gateway_uvloop": args.uvloop,
        "peer_loop": "uvloop" if peer_uvloop else "asyncio", "gateway_log_level": args.gateway_log_level,
        "commit": _commit(), "versions": _versions(), "params": mode.as_dict(),
        "load_generators": "wrk (HTTP) and bench.worker processes (WebSocket), each separate from the gateway",
    }
    tmp = Path(tempfile.mkdtemp(prefix="wcfrelay-bench-"))
    staging = tmp / "results"  # profiles land here during the run; the set is written only when it completes
    log(f"bench {name}: temp dir {tmp}, results to {out}")
    workers: list[WorkerProc] = []
    gw: Gateway | None = None
    nginx: Nginx | None = None
    scenarios: list[dict] = []

    def make_worker(name: str) -> WorkerProc:
        return WorkerProc(name, tmp / "logs", uvloop=peer_uvloop)

    try:
        srv = make_worker("direct-servers")
        workers.append(srv)
        ports = srv.call("serve_direct")
        lis = make_worker("listener")
        workers.append(lis)
        cli = make_worker("client")
        workers.append(cli)
        gw = Gateway.start(tmp / "gateway", uvloop=args.uvloop, log_level=args.gateway_log_level)
        listen_info = lis.call("listen", gw=gw.info([WS_ENTITY, HTTP_ENTITY]), ws_entity=WS_ENTITY,
                               http_entity=HTTP_ENTITY, http_listener=args.http_listener)
        meta["listeners"] = {k: v for k, v in listen_info.items() if k != "ok"}
        meta["peer_loop_reported"] = cli.loop
        try:
            nginx = Nginx.start(tmp / "nginx", upstream_http=ports["http_port"], upstream_ws=ports["ws_port"])
            meta["nginx"] = "nginx reverse proxy, 1 worker, streaming (proxy_buffering off), keepalive upstream"
        except BenchError as exc:
            meta["nginx"] = f"not available: {exc}"
            log(f"nginx baseline unavailable: {exc}")
        ctx = Ctx(mode=mode, tmp=tmp, out=staging, gw=gw, nginx=nginx, srv=srv, lis=lis, cli=cli, ports=ports,
                  gateway_uvloop=args.uvloop, gateway_log_level=args.gateway_log_level, log=log,
                  listen_info=listen_info, make_worker=make_worker, profile=args.profile)
        log(f"gateway pid {gw.pid} port {gw.port} ({'uvloop' if args.uvloop else 'asyncio'}); "
            f"HTTP listener: {listen_info.get('http_listener')}")
        for sid, fn in SCENARIOS:
            if args.only is not None and sid not in args.only:
                continue
            log(f"scenario {sid}: {fn.__name__}")
            t0 = time.monotonic()
            needs_wrk = sid in ("3", "4")
            if needs_wrk and shutil.which("wrk") is None:
                from bench.stats import ScenarioResult

                sc = ScenarioResult(sid, fn.__name__, fn.__name__, {})
                sc.data["status"] = "skipped"
                sc.note("wrk is not installed (Debian package wrk)")
            else:
                try:
                    sc = fn(ctx)
                except BenchError as exc:
                    from bench.stats import ScenarioResult

                    sc = ScenarioResult(sid, fn.__name__, fn.__name__, {})
                    sc.data["status"] = "error"
                    sc.note(f"failed: {exc}"[:600])
                    log(f"  scenario {sid} failed: {exc}")
            if not gw.alive():
                raise BenchError("the gateway died during scenario " + sid)
            if args.profile and sid in ("1", "3") and sc.data["status"] == "measured":
                sc.data["profile"] = _profile(ctx, sid, staging)
            sc.data["seconds"] = time.monotonic() - t0
            scenarios.append(sc.data)
            log(f"  scenario {sid} done in {sc.data['seconds']:.1f}s")
    except BenchError as exc:
        log(f"bench aborted: {exc}")
        meta["aborted"] = str(exc)
    finally:
        for w in workers:
            w.close()
        if nginx is not None:
            nginx.stop()
        if gw is not None:
            gw.stop()
            meta["gateway_log_tail"] = [_redact(x) for x in
                                        gw.log_path.read_text(errors="replace").splitlines()[-20:]]
    # Ordinary traffic (and senders that leave, as wrk's connections do at the end) must not make a gateway warn.
    problems = [_redact(x) for x in procs.GATEWAY_PROBLEMS]
    meta["gateway_problems"] = {"count": len(problems), "first": problems[:20]}
    if problems:
        log(f"gateway logs: {len(problems)} warning, error or traceback lines, first: {problems[0][:300]}")
    meta["loadavg_after"] = _loadavg()
    meta["duration_s"] = time.monotonic() - started
    results = {"meta": meta, "scenarios": scenarios, "log": log_lines}
    if "aborted" in meta:
        # The set may hold a complete earlier run; an aborted one goes next to its logs instead.
        report.write_all(results, staging)
        log(f"{out} left as it was; the partial results are in {staging}, the logs in {tmp / 'logs'}")
        return 1
    report.write_all(results, out)
    for staged in staging.glob("profile-*"):
        shutil.move(staged, out / staged.name)
    report.write_index(args.out)
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    shutil.rmtree(tmp, ignore_errors=True)
    print((out / "results.md").read_text().split("\n## Targets")[0])
    return 0


def _redact(line: str) -> str:
    """No key or signature ever reaches a results file."""
    import re

    line = re.sub(r"SharedAccessKey=[^;\s]+", "SharedAccessKey=<redacted>", line)
    return re.sub(r"sig=[^&\s]+", "sig=<redacted>", line)


def _profile(ctx: Ctx, sid: str, out: Path) -> dict:
    from bench import profiling

    out.mkdir(parents=True, exist_ok=True)
    m = ctx.mode
    target = out / f"profile-s{sid}.txt"
    try:
        if sid == "1":
            url, headers = ctx.ws("relayed", "sink", f"n={m.profile_bulk_bytes}")
            workload = f"bulk {m.profile_bulk_bytes >> 20} MiB in 64 KiB messages"
            prof = profiling.profile_pid(ctx.gw.pid, target, lambda: ctx.cli.call(
                "bulk", url=url, headers=headers, total=m.profile_bulk_bytes, msg_size=m.bulk_msg))
        else:
            url, token = ctx.http("relayed", "hello")
            conns = max(m.http_conns)
            workload = f"wrk -c{conns} for {m.profile_http_seconds}s"
            prof = profiling.profile_pid(ctx.gw.pid, target, lambda: run_wrk(
                url, connections=conns, seconds=m.profile_http_seconds, script_dir=ctx.tmp, token=token))
        prof["workload"] = workload
        ctx.log(f"  profile written to {target}")
        return prof
    except (RuntimeError, BenchError, OSError) as exc:
        return {"error": str(exc)}


if __name__ == "__main__":
    sys.exit(main())
