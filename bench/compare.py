"""Two versions of the gateway side by side in one run: is a change faster, and by how much?

    git worktree add /tmp/base main            # the version to compare against
    python -m bench.compare --base /tmp/base   # this checkout's gateway (B) against /tmp/base's (A)

Sequential bench runs differ by more than most single changes (the machine's speed drifts between runs), so this
starts both gateways at once, each with its own answering process, and alternates their rounds: ``soap1`` (zeep,
one call in flight, Spyne host; scenario 5's weak case) and ``http50`` (wrk at 50 connections, small requests
answered by the SDK listener; scenario 3). It prints and writes (``--out FILE``, JSON) B/A ratios per round: calls
or requests per second, and gateway CPU per call. Answering processes and callers run this checkout's code unless
``--same-peers`` runs them from the base tree too, which isolates the gateway's own change.

Run it once with ``--base .`` (A against A) to see the noise on this machine before reading a ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bench import procs
from bench.common import cpu_seconds
from bench.procs import BenchError, Gateway, WorkerProc, run_wrk

T = TypeVar("T")
SOAP_PATH = "bench/soap"
HTTP_ENTITY = "bench-http"
WS_ENTITY = "bench-ws"


@contextmanager
def _tree(root: Path) -> Iterator[None]:
    """Processes started inside run the code of ``root`` (its directory comes first on their PYTHONPATH)."""
    old = procs.ROOT
    procs.ROOT = root
    try:
        yield
    finally:
        procs.ROOT = old


def _started(root: Path, start: Callable[[], T]) -> T:
    with _tree(root):
        return start()


class _Side:
    """One version: its gateway and the processes that answer and call through it."""

    def __init__(self, name: str, root: Path, peers_root: Path, workdir: Path, workload: str, *,
                 gateway_prefix: tuple[str, ...] = ()) -> None:
        self.name = name
        self.gw = _started(root, lambda: Gateway.start(workdir / name, log_level="WARNING", prefix=gateway_prefix,
                                                       timeout=120 if gateway_prefix else 30))
        self.server = _started(peers_root, lambda: WorkerProc(f"server-{name}", workdir, uvloop=True))
        self.caller: WorkerProc | None = None
        if workload == "soap1":
            self.caller = _started(peers_root, lambda: WorkerProc(f"caller-{name}", workdir, uvloop=True))
            self.server.call("soap_serve", gw=self.gw.info([SOAP_PATH]), path=SOAP_PATH, max_workers=16,
                             timeout=120)
        else:
            self.server.call("listen", gw=self.gw.info([WS_ENTITY, HTTP_ENTITY]), ws_entity=WS_ENTITY,
                             http_entity=HTTP_ENTITY, timeout=60)

    @property
    def relayed_wsdl(self) -> str:
        return f"http://127.0.0.1:{self.gw.port}/{SOAP_PATH}?wsdl"

    def serve_direct(self) -> int:
        """The same Spyne application served directly by the service process (over HTTP); returns its port."""
        return int(self.server.call("soap_serve", gw=self.gw.info([SOAP_PATH + "-direct"]),
                                    path=SOAP_PATH + "-direct", max_workers=16, timeout=120)["direct_port"])

    @contextmanager
    def soap_calls(self, wsdl: str, connection_string: str | None, *, seed: int = 1,
                   warmup: int = 100) -> Iterator[Callable[[float], dict[str, Any]]]:
        """A zeep client on ``wsdl``, warmed up, one call in flight; yields ``run(seconds)``, which makes calls for
        that long and returns the caller's result, with any failed call or warm-up call as a BenchError."""
        caller = self.caller
        assert caller is not None, "a soap1 side"
        # generous timeouts: under valgrind a call is ~50 times slower
        opened = caller.call("soap_open", wsdl=wsdl, connection_string=connection_string, in_flight=1, warmup=warmup,
                             seed=seed, timeout=600)
        if opened["warmup_failures"]:
            raise BenchError(f"{self.name}: warm-up calls failed: {opened['warmup_error']}")

        def run(seconds: float) -> dict[str, Any]:
            out = caller.call("soap_run", duration=seconds, timeout=seconds * 20 + 300)
            if out["failures"]:
                raise BenchError(f"{self.name}: {out['failures']} failed calls ({out['first_error']})")
            return out

        try:
            yield run
        finally:
            caller.call("soap_close", timeout=60)

    def run(self, workload: str, seconds: float, seed: int, workdir: Path) -> dict[str, float]:
        gw = self.gw
        if workload == "soap1":
            with self.soap_calls(self.relayed_wsdl, gw.connection_string, seed=seed) as run_calls:
                before = cpu_seconds(gw.pid)
                out = run_calls(seconds)
                after = cpu_seconds(gw.pid)
            done, rate = out["calls"], out["cps"]
        else:
            before = cpu_seconds(gw.pid)
            out = run_wrk(f"http://127.0.0.1:{gw.port}/{HTTP_ENTITY}/hello", connections=50,
                          seconds=max(1, round(seconds)), script_dir=workdir, token=gw.token(HTTP_ENTITY))
            after = cpu_seconds(gw.pid)
            if out["errors"]:
                raise BenchError(f"{self.name}: wrk reported {out['errors']} errors")
            done, rate = out["ok_requests"], out["rps"]
        return {"rate": rate, "gateway_cpu_us": (after - before) / max(done, 1) * 1e6, "count": done}

    def close(self) -> None:
        if self.caller is not None:
            self.caller.close()
        try:
            if self.caller is not None:
                self.server.call("soap_stop", timeout=60)
        except BenchError:
            pass
        self.server.close()
        self.gw.stop()


def direct_wsdl(port: int) -> str:
    """The WSDL address of the directly served application on ``port`` (or of a hop in front of it)."""
    return f"http://127.0.0.1:{port}/{SOAP_PATH}-direct?wsdl"


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def compare(base: Path, workload: str, rounds: int, seconds: float, *, same_peers: bool) -> dict[str, Any]:
    here = procs.ROOT
    if not (base / "hybrid").is_dir() or not (base / "bench").is_dir():
        raise BenchError(f"{base} is not a checkout of this project (no hybrid/ and bench/ in it)")
    workdir = Path(tempfile.mkdtemp(prefix="wcfrelay-compare-"))
    peers = base if same_peers else here
    sides: dict[str, _Side] = {}
    rows: list[dict[str, Any]] = []
    try:
        sides["A"] = _Side("A", base, peers, workdir, workload)
        sides["B"] = _Side("B", here, peers, workdir, workload)
        for r in range(rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")  # neither side always goes first
            row: dict[str, Any] = {name: sides[name].run(workload, seconds, r, workdir) for name in order}
            row["rate_ratio"] = row["B"]["rate"] / row["A"]["rate"]
            row["cpu_ratio"] = row["B"]["gateway_cpu_us"] / row["A"]["gateway_cpu_us"]
            rows.append(row)
            print(f"round {r + 1}: A {row['A']['rate']:.0f}/s ({row['A']['gateway_cpu_us']:.0f} CPU-µs)  "
                  f"B {row['B']['rate']:.0f}/s ({row['B']['gateway_cpu_us']:.0f} CPU-µs)  "
                  f"B/A {row['rate_ratio']:.3f}, CPU {row['cpu_ratio']:.3f}", flush=True)
    finally:
        for side in sides.values():
            side.close()
    return {"workload": workload, "base": str(base), "here": str(here), "same_peers": same_peers,
            "rounds": rows, "seconds_per_round": seconds,
            "rate_ratio": _summary([row["rate_ratio"] for row in rows]),
            "cpu_ratio": _summary([row["cpu_ratio"] for row in rows])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="checkout of the version to compare against (A)")
    parser.add_argument("--workload", choices=("soap1", "http50"), default="soap1")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="per side and round")
    parser.add_argument("--same-peers", action="store_true",
                        help="answering processes and callers from the base tree too (the gateway's change only)")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100 or not 0 < args.seconds <= 600:
        parser.error("--rounds must be between 1 and 100 and --seconds above 0 and at most 600")
    try:
        result = compare(args.base.resolve(), args.workload, args.rounds, args.seconds, same_peers=args.same_peers)
    except BenchError as exc:
        print(f"bench.compare: {exc}")
        return 1
    rate, cpu = result["rate_ratio"], result["cpu_ratio"]
    print(f"B/A {'calls' if args.workload == 'soap1' else 'requests'} per second {rate['median']:.3f} "
          f"[{rate['min']:.3f}–{rate['max']:.3f}], gateway CPU per call {cpu['median']:.3f} "
          f"[{cpu['min']:.3f}–{cpu['max']:.3f}] (median [min–max] over {args.rounds} rounds)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
