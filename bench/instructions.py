"""Instructions per SOAP call: a repeatable measure of the work the gateway does for one call.

    python -m bench.instructions                 # gateway and passthrough hop, 6 s of calls each; needs valgrind
    python -m bench.instructions --seconds 10 --out /tmp/ir.json

Calls per second at one call in flight move by ±4 % between rounds on these machines, more than most single
changes to the data path. ``valgrind --tool=callgrind`` counts the user-space instructions a process executes,
and the count repeats to a few parts in a million for the same code and inputs. This runs scenario 5's setup (zeep,
one call in flight, the Calculator on a Spyne host) with the gateway under callgrind, instrumentation switched on
only after the warm-up calls, and divides the instructions counted by the calls made. It then does the same for
``bench/passthrough.py`` in front of the direct server: the floor of any hop written in Python on asyncio.

Instructions are not time. Kernel work (system calls, wake-ups) is not counted at all, and an instruction that
misses the cache costs many times one that hits. Read a change in the count as a change in the work, and judge its
effect on speed side by side with ``bench.compare``. Without valgrind this says so and exits 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compare import _Side, direct_wsdl
from bench.procs import ROOT, BenchError, Passthrough


def parse_totals(text: str) -> int:
    """The ``totals:`` (or, failing that, ``summary:``) instruction count of a callgrind output file."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in ("totals", "summary") and rest.split():
            try:
                found[key] = int(rest.split()[0])
            except ValueError:
                raise BenchError(f"callgrind output has a malformed {key} line: {line[:100]!r}") from None
    if "totals" in found:
        return found["totals"]
    if "summary" in found:
        return found["summary"]
    raise BenchError("callgrind output has no totals line")


def _valgrind_prefix(out_dir: Path) -> tuple[str, ...]:
    # Instrumentation starts off (start-up and warm-up run at near native speed) and is switched on around the
    # timed calls; valgrind's own messages go to a file, so the process's output stays what the bench reads.
    return ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--log-file={out_dir}/valgrind.%p.log",
            f"--callgrind-out-file={out_dir}/callgrind.%p")


def _control(*args: str) -> None:
    done = subprocess.run(["callgrind_control", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(args)} failed: {(done.stderr or done.stdout)[-300:]}")


def _count(side: _Side, pid: int, wsdl: str, connection_string: str | None, seconds: float,
           out_dir: Path) -> dict[str, Any]:
    """Calls made and instructions counted in ``pid`` while zeep calls for ``seconds`` after a warm-up."""
    with side.soap_calls(wsdl, connection_string) as run_calls:
        _control("--instr=on", str(pid))
        result = run_calls(seconds)
        _control("--instr=off", str(pid))
        _control("--dump", str(pid))
    dumps = sorted(out_dir.glob(f"callgrind.{pid}.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise BenchError(f"callgrind wrote no dump for process {pid}")
    instructions = parse_totals(dumps[-1].read_text(errors="replace"))
    calls = result["calls"]
    if not calls or not instructions:
        raise BenchError(f"nothing was measured: {calls} calls, {instructions} instructions")
    return {"calls": calls, "instructions": instructions, "per_call": instructions / calls,
            "calls_per_second_under_valgrind": result["cps"]}


def measure(seconds: float) -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise BenchError("valgrind is not installed (Debian: valgrind)")
    workdir = Path(tempfile.mkdtemp(prefix="wcfrelay-ir-"))
    out_dir = workdir / "callgrind"
    out_dir.mkdir()
    side = _Side("A", ROOT, ROOT, workdir, "soap1", gateway_prefix=_valgrind_prefix(out_dir))
    passthrough = None
    try:
        gw = side.gw
        out: dict[str, Any] = {"seconds": seconds}
        out["gateway"] = _count(side, gw.pid, side.relayed_wsdl, gw.connection_string, seconds, out_dir)
        passthrough = Passthrough.start(side.serve_direct(), timeout=120, prefix=_valgrind_prefix(out_dir))
        out["passthrough"] = _count(side, passthrough.pid, direct_wsdl(passthrough.port), None, seconds, out_dir)
        out["gateway_per_passthrough"] = out["gateway"]["per_call"] / out["passthrough"]["per_call"]
        return out
    finally:
        if passthrough is not None:
            passthrough.stop()
        side.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of calls counted per process")
    parser.add_argument("--out", type=Path, help="write the counts as JSON")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 120:
        parser.error("--seconds must be above 0 and at most 120")
    started = time.monotonic()
    try:
        result = measure(args.seconds)
    except BenchError as exc:
        print(f"bench.instructions: {exc}")
        return 1
    for name in ("gateway", "passthrough"):
        r = result[name]
        print(f"{name:12} {r['per_call']:>11,.0f} instructions per call ({r['calls']} calls, "
              f"{r['instructions']:,} instructions)")
    print(f"gateway ÷ passthrough: {result['gateway_per_passthrough']:.2f}  ({time.monotonic() - started:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
