"""Profile the gateway under load with py-spy (sampling, attached by pid) and summarise the hottest functions.

Used by ``python -m bench --profile``: one extra relayed run per profiled scenario, after the measured rounds, so
the sampler never disturbs a reported figure. Output: py-spy's raw collapsed stacks (``profile-<scenario>.txt``,
loadable by speedscope or flamegraph.pl) and the top functions by self and cumulative samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

__all__ = ["available", "profile_pid", "summarise_collapsed"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def available() -> str | None:
    return shutil.which("py-spy")


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    return path


def summarise_collapsed(text: str, top: int = 15) -> dict:
    """Top functions by self samples (the leaf frame) and by cumulative samples (anywhere on the stack)."""
    self_c: Counter[str] = Counter()
    cum_c: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = []
        for raw in stack.split(";"):
            m = _FRAME.match(raw.strip())
            frames.append(f"{m['func']} ({_short(m['file'])})" if m else raw.strip())
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_c[frames[-1]] += count
        for f in set(frames):
            cum_c[f] += count

    def rows(counter: Counter[str]) -> list[dict]:
        return [{"function": f, "samples": n, "percent": 100.0 * n / total if total else 0.0}
                for f, n in counter.most_common(top)]

    # Frames on (nearly) every stack are the event loop's scaffolding (runpy, asyncio.run, _run_once): drop them
    # from the cumulative list so it shows where the time actually splits.
    scaffolding = {f for f, n in cum_c.items() if total and n >= 0.97 * total}
    for f in scaffolding:
        del cum_c[f]
    return {"samples": total, "top_self": rows(self_c), "top_cumulative": rows(cum_c),
            "omitted_scaffolding_frames": len(scaffolding)}


def profile_pid(pid: int, out: Path, workload: Callable[[], object], *, rate: int = 250,
                max_seconds: float = 300.0, gil: bool = False) -> dict:
    """Attach py-spy to ``pid``, run ``workload()``, stop py-spy, summarise. Raises RuntimeError without py-spy.

    ``gil=True`` keeps only samples of the thread holding the GIL (``py-spy --gil``): for a process with a thread
    pool, where py-spy's idle detection may count every waiting thread, it shows where the interpreter's time goes
    (C code that releases the GIL, such as socket syscalls, is then left out)."""
    exe = available()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    args = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--output", str(out),
            "--duration", str(int(max_seconds))] + (["--gil"] if gil else [])
    spy = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)  # let it attach
        if spy.poll() is not None:
            raise RuntimeError("py-spy exited: " + (spy.stdout.read() if spy.stdout else "")[-500:])
        workload()
    finally:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)
    if not out.exists():
        raise RuntimeError("py-spy wrote no profile: " + (spy.stdout.read() if spy.stdout else "")[-500:])
    summary = summarise_collapsed(out.read_text(errors="replace"))
    summary["tool"] = (f"py-spy record --rate {rate} --gil (raw collapsed stacks; only the thread holding the GIL)"
                       if gil else f"py-spy record --rate {rate} (raw collapsed stacks; idle time excluded)")
    summary["file"] = out.name
    return summary
