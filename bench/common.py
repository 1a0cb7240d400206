"""Small helpers shared by the orchestrator and the worker processes: /proc readings, statistics, limits.

Nothing here starts a process or touches the network.
"""

from __future__ import annotations

import math
import os
import resource
import socket
from collections.abc import Iterable, Sequence

__all__ = [
    "CLK_TCK",
    "children",
    "cpu_seconds",
    "free_port",
    "install_uvloop",
    "mem_kib",
    "percentile",
    "raise_nofile",
    "reset_peak_rss",
    "summary",
    "tree_cpu_seconds",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"


def raise_nofile(want: int | None = None) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to ``want`` (default: the hard limit). Children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else min(want, hard)
    if hard == resource.RLIM_INFINITY and want is None:
        target = 1 << 20
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot bind port 0 and tell us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) from /proc/<pid>/stat, in seconds (resolution 1/CLK_TCK)."""
    with open(f"/proc/{pid}/stat") as fh:
        raw = fh.read()
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc/<pid>/task/*/children)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (nginx master + workers)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def mem_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and VmSize of ``pid`` in KiB, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:", "VmSize:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/<pid>/clear_refs``, Linux ≥ 4.0). False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile of already sorted values (p in 0..100)."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if n == 1:
        return float(sorted_values[0])
    k = (n - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo))


def summary(values: Iterable[float | None]) -> dict:
    """Median, min, max and relative spread ((max-min)/median) of per-round values; None entries are failures."""
    rounds = [v for v in values]
    good = sorted(float(v) for v in rounds if v is not None and not (isinstance(v, float) and math.isnan(v)))
    if not good:
        return {"rounds": rounds, "n": 0, "median": None, "min": None, "max": None, "spread": None}
    med = percentile(good, 50)
    spread = (good[-1] - good[0]) / abs(med) if med else None
    return {"rounds": rounds, "n": len(good), "median": med, "min": good[0], "max": good[-1], "spread": spread}


def install_uvloop() -> bool:
    """Make asyncio use uvloop in this process if it is installed."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return False
    import asyncio
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
