"""One SOAP call at a time with the caller on a vCPU of its own, against every process sharing every vCPU.

    python -m bench.pinned                      # 8 rounds, 3 s per path and layout; needs at least 2 CPUs
    python -m bench.pinned --rounds 4 --seconds 2 --out /tmp/pinned.json

At one call in flight on these two-vCPU machines the gateway wakes on zeep's vCPU and preempts it, so part of the
relay's cost might come from sharing the CPU with the caller, which no real deployment does. This runs scenario
5's setup (zeep, the Calculator on a Spyne host, one call in flight) in two layouts, alternated round by round:

* ``shared``: every process may run on every CPU (as in ``python -m bench``);
* ``pinned``: every thread of the caller on the first CPU, the gateway and the service process (the Spyne host
  and the direct aiohttp server) on the second.

Each round times the direct and the relayed path in both layouts (orders rotated) and reports relayed ÷ direct.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compare import _Side, direct_wsdl
from bench.procs import ROOT, BenchError

LAYOUTS = ("shared", "pinned")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads it starts later inherit it from theirs)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError as exc:
        raise BenchError(f"process {pid} is gone ({exc.strerror})") from None
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue  # a thread that ended meanwhile


def measure(rounds: int, seconds: float) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchError(f"needs at least 2 CPUs to pin the caller apart, this process may use {len(cpus)}")
    everything, caller_cpu, relay_cpu = set(cpus), {cpus[0]}, {cpus[1]}
    workdir = Path(tempfile.mkdtemp(prefix="wcfrelay-pinned-"))
    side = _Side("A", ROOT, ROOT, workdir, "soap1")
    try:
        assert side.caller is not None
        gw = side.gw
        paths = {"relayed": (side.relayed_wsdl, gw.connection_string),
                 "direct": (direct_wsdl(side.serve_direct()), None)}
        rows: list[dict[str, Any]] = []
        for r in range(rounds):
            for layout in (LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]):
                procs = {"caller": side.caller.pid, "service": side.server.pid, "gateway": gw.pid}
                for name, pid in procs.items():
                    pin(pid, everything if layout == "shared" else caller_cpu if name == "caller" else relay_cpu)
                affinity = {name: sorted(os.sched_getaffinity(pid)) for name, pid in procs.items()}
                order = ("direct", "relayed") if (r // 2) % 2 == 0 else ("relayed", "direct")
                cps: dict[str, float] = {}
                for path in order:
                    with side.soap_calls(*paths[path]) as run_calls:
                        cps[path] = float(run_calls(seconds)["cps"])
                rows.append({"round": r + 1, "layout": layout, "affinity": affinity, "direct_cps": cps["direct"],
                             "relayed_cps": cps["relayed"], "ratio": cps["relayed"] / cps["direct"]})
                print(f"round {r + 1} {layout:6}  direct {cps['direct']:6.0f}/s  relayed {cps['relayed']:6.0f}/s  "
                      f"relayed/direct {rows[-1]['ratio']:.3f}", flush=True)
        summary = {}
        for layout in LAYOUTS:
            ratios = [row["ratio"] for row in rows if row["layout"] == layout]
            summary[layout] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        return {"rounds": rounds, "seconds": seconds, "caller_cpu": cpus[0], "relay_cpu": cpus[1], "rows": rows,
                "ratio": summary}
    finally:
        side.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pinned", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="per path, layout and round")
    parser.add_argument("--out", type=Path, help="write the rounds and the summary as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100 or not 0 < args.seconds <= 600:  # nan and inf fail the comparison too
        parser.error("--rounds must be between 1 and 100 and --seconds above 0 and at most 600")
    started = time.monotonic()
    try:
        result = measure(args.rounds, args.seconds)
    except BenchError as exc:
        print(f"bench.pinned: {exc}")
        return 1
    for layout in LAYOUTS:
        s = result["ratio"][layout]
        print(f"{layout:6}  relayed/direct {s['median']:.3f} [{s['min']:.3f}–{s['max']:.3f}]")
    print(f"(median [min–max] over {args.rounds} rounds, {time.monotonic() - started:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
