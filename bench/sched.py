"""Where one SOAP call's time goes, from the kernel's scheduler trace: who wakes whom, how long each wake-up waits
for a CPU, and how long each process runs before it wakes the next one.

    python -m bench.sched                     # relayed and direct, 2 s each, printed side by side
    python -m bench.sched --seconds 3 --out /tmp/sched.json

At one call in flight nothing overlaps, so a call's latency is the chain of these run slices and wake-up delays:
zeep → (gateway →) service loop → Spyne thread → service loop → (gateway →) zeep. This records that chain with
``perf sched record`` (scheduler tracepoints; no hardware counters needed) during zeep calls on scenario 5's setup,
once through the gateway and once directly, and summarises it per process. It needs ``perf`` and the permission to
trace the whole system (root, or ``kernel.perf_event_paranoid`` at most 1); without them it says so and stops.

The parsing and summarising (:func:`parse_perf_script`, :func:`summarise`) are sans-I/O and unit-tested on a
recorded trace; the rest starts the processes (as ``bench.compare`` does) and runs ``perf``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import percentile
from bench.compare import _Side, direct_wsdl
from bench.procs import ROOT, BenchError

#: One line of ``perf script -F tid,time,event,trace`` for the two tracepoints this reads.
_LINE = re.compile(r"^\s*(\d+)\s+(\d+\.\d+):\s+sched:(sched_waking|sched_switch):\s+(.*)$")
_WAKING = re.compile(r"\bpid=(\d+)\b")
_SWITCH = re.compile(r"\bprev_pid=(\d+)\b.*?\bprev_state=(\S+).*?\bnext_pid=(\d+)\b")


@dataclass(frozen=True, slots=True)
class Slice:
    """One stretch a labelled thread ran without leaving the CPU."""

    label: str
    woken_by: str  # the label of whoever woke it ("other": an unlabelled thread; "?": the wake-up was not traced)
    first_woke: str  # the label it woke first while running ("-" for none)
    ended: str  # "sleep" (it blocked) or "preempted" (still runnable)
    micros: float


@dataclass(frozen=True, slots=True)
class Wake:
    """A wake-up of a labelled thread by another: the time from ``sched_waking`` to its running."""

    waker: str
    wakee: str
    micros: float


def parse_perf_script(lines: Iterable[str], labels: dict[int, str]) -> tuple[list[Slice], list[Wake]]:
    """Run slices and wake-ups of the threads in ``labels`` (tid → label) from ``perf script`` text.

    Threads not in ``labels`` are "other". Wake-ups between threads of the same label (a process waking its own
    thread pool) are kept for the slices' bookkeeping but not reported as wake-ups."""
    slices: list[Slice] = []
    wakes: list[Wake] = []
    waker_of: dict[int, tuple[float, str]] = {}  # tid → (time of its wake-up, label of the waker)
    running: dict[int, list[Any]] = {}  # tid → [since, woken_by, first_woke]
    for line in lines:
        m = _LINE.match(line)
        if m is None:
            continue
        tid, t, event, trace = int(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
        if event == "sched_waking":
            w = _WAKING.search(trace)
            if w is None:
                continue
            target = int(w.group(1))
            by = labels.get(tid, "other")
            if target in labels and target not in waker_of and target not in running:
                waker_of[target] = (t, by)  # the first wake-up of a sleeping thread is the one that counts
            current = running.get(tid)
            if current is not None and current[2] is None and target in labels and labels[target] != by:
                current[2] = labels[target]
            continue
        s = _SWITCH.search(trace)
        if s is None:
            continue
        prev, state, nxt = int(s.group(1)), s.group(2), int(s.group(3))
        current = running.pop(prev, None)
        if current is not None:
            slices.append(Slice(labels[prev], current[1], current[2] or "-",
                                "sleep" if state.startswith(("S", "D")) else "preempted", (t - current[0]) * 1e6))
        if nxt in labels:
            woke = waker_of.pop(nxt, None)
            by = woke[1] if woke is not None else "?"
            if woke is not None and by != labels[nxt]:
                wakes.append(Wake(by, labels[nxt], (t - woke[0]) * 1e6))
            running[nxt] = [t, by, None]
    return slices, wakes


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": percentile(ordered, 50), "p90": percentile(ordered, 90), "n": len(ordered)}


def summarise(slices: list[Slice], wakes: list[Wake], *, caller: str, min_count: int = 20) -> dict[str, Any]:
    """Per call: CPU time each label ran, and the typical slices and wake-ups (those seen at least ``min_count``
    times). Calls are counted as wake-ups of ``caller`` by another labelled process (a response arriving)."""
    calls = sum(1 for w in wakes if w.wakee == caller and w.waker not in ("?", "other"))
    per_label: dict[str, float] = {}
    for s in slices:
        per_label[s.label] = per_label.get(s.label, 0.0) + s.micros
    grouped_slices: dict[tuple[str, str, str, str], list[float]] = {}
    for s in slices:
        grouped_slices.setdefault((s.label, s.woken_by, s.first_woke, s.ended), []).append(s.micros)
    grouped_wakes: dict[tuple[str, str], list[float]] = {}
    for w in wakes:
        grouped_wakes.setdefault((w.waker, w.wakee), []).append(w.micros)
    return {
        "calls": calls,
        "run_us_per_call": {k: v / calls for k, v in sorted(per_label.items())} if calls else {},
        "wake_ups_per_call": {f"{a} -> {b}": len(v) / calls for (a, b), v in grouped_wakes.items()} if calls else {},
        "slices": [{"runs": k[0], "woken_by": k[1], "first_woke": k[2], "ended": k[3], **_stats(v)}
                   for k, v in sorted(grouped_slices.items(), key=lambda kv: -len(kv[1])) if len(v) >= min_count],
        "wakes": [{"waker": k[0], "wakee": k[1], **_stats(v)}
                  for k, v in sorted(grouped_wakes.items(), key=lambda kv: -len(kv[1])) if len(v) >= min_count],
    }


def format_summary(name: str, rate: float, summary: dict[str, Any]) -> str:
    out = [f"{name}: {rate:.0f} calls/s, {summary['calls']} calls traced",
           "  run time per call (µs): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["run_us_per_call"].items()),
           "  wake-up → running (µs)           median    p90      n"]
    out += [f"    {w['waker'] + ' -> ' + w['wakee']:<30} {w['median']:6.0f} {w['p90']:6.0f} {w['n']:6d}"
            for w in summary["wakes"]]
    out.append("  run slices (µs): runs, woken by → first woke, ended     median    p90      n")
    out += [f"    {s['runs']:<12} {s['woken_by'] + ' -> ' + s['first_woke']:<28} {s['ended']:<9} "
            f"{s['median']:6.0f} {s['p90']:6.0f} {s['n']:6d}" for s in summary["slices"]]
    return "\n".join(out)


# ---- I/O: processes and perf ------------------------------------------------------------------------------------
def _perf_problem() -> str | None:
    if shutil.which("perf") is None:
        return "perf is not installed (Debian: linux-perf)"
    probe = subprocess.run(["perf", "stat", "-a", "-e", "sched:sched_switch", "--", "true"], capture_output=True,
                           text=True, timeout=60, check=False)
    if probe.returncode != 0:
        return "perf cannot trace the scheduler here: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


def _labels(side: _Side) -> dict[int, str]:
    assert side.caller is not None
    labels: dict[int, str] = {}
    for pid, name in ((side.gw.pid, "gateway"), (side.server.pid, "service"), (side.caller.pid, "zeep")):
        for tid in os.listdir(f"/proc/{pid}/task"):
            labels[int(tid)] = name if name != "service" or int(tid) == pid else "spyne"
    return labels


def _traced_run(side: _Side, wsdl: str, connection_string: str | None, seconds: float,
                workdir: Path) -> tuple[float, dict[str, Any]]:
    data = workdir / "sched.data"
    recorder: dict[str, Any] = {}

    def record() -> None:
        time.sleep(0.5)  # calls are flowing by then
        recorder["done"] = subprocess.run(["perf", "sched", "record", "-o", str(data), "--", "sleep", str(seconds)],
                                          capture_output=True, text=True, timeout=seconds * 10 + 60, check=False)

    with side.soap_calls(wsdl, connection_string, warmup=200) as run_calls:
        thread = threading.Thread(target=record)
        thread.start()
        try:
            result = run_calls(seconds + 1.5)
        finally:
            thread.join()
    if recorder["done"].returncode != 0:
        raise BenchError("perf sched record failed: " + recorder["done"].stderr[-500:])
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,time,event,trace"], capture_output=True,
                            text=True, timeout=300, check=False)
    data.unlink(missing_ok=True)
    slices, wakes = parse_perf_script(script.stdout.splitlines(), _labels(side))
    summary = summarise(slices, wakes, caller="zeep")
    if not summary["calls"]:
        raise BenchError("perf traced no call: no wake-up between these processes in its output "
                         f"({len(script.stdout.splitlines())} lines; perf script: {script.stderr.strip()[-300:]!r})")
    return result["cps"], summary


def trace(seconds: float) -> dict[str, Any]:
    problem = _perf_problem()
    if problem:
        raise BenchError(problem)
    workdir = Path(tempfile.mkdtemp(prefix="wcfrelay-sched-"))
    side = _Side("A", ROOT, ROOT, workdir, "soap1")
    try:
        direct = side.serve_direct()
        out: dict[str, Any] = {"seconds": seconds}
        for name, wsdl, conn in (("relayed", side.relayed_wsdl, side.gw.connection_string),
                                 ("direct", direct_wsdl(direct), None)):
            rate, summary = _traced_run(side, wsdl, conn, seconds, workdir)
            out[name] = {"calls_per_second": rate, **summary}
        return out
    finally:
        side.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sched", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="traced seconds per path")
    parser.add_argument("--out", type=Path, help="write the summaries as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 60:
        parser.error("--seconds must be above 0 and at most 60 (the trace grows by megabytes a second)")
    try:
        result = trace(args.seconds)
    except BenchError as exc:
        print(f"bench.sched: {exc}")
        return 1
    for name in ("relayed", "direct"):
        print(format_summary(name, result[name]["calls_per_second"], result[name]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
