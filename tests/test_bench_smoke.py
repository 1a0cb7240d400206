"""The benchmark suite's machinery works: ``python -m bench --smoke`` runs every scenario with tiny sizes and
writes well-formed results. No speed is asserted: a test must never fail because the machine is slow."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_FACTOR = float(os.environ.get("WCFRELAY_TIMEOUT_FACTOR", "1"))

SCENARIO_IDS = ["1", "2", "3", "4", "5", "6", "7", "8", "9"]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k not in ("WCFRELAY_UVLOOP", "WCFRELAY_CPROFILE")}
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120 * TIMEOUT_FACTOR, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path = out / "smoke" / "results.json"
    assert path.exists(), done.stdout[-3000:]
    results = json.loads(path.read_text())
    results["_out"] = str(out / "smoke")
    results["_base"] = str(out)
    return results


def test_every_scenario_is_present(smoke: dict) -> None:
    ids = [sc["id"] for sc in smoke["scenarios"]]
    assert ids == SCENARIO_IDS
    assert smoke["meta"]["mode"] == "smoke"
    assert "aborted" not in smoke["meta"]


def _have_redis() -> bool:
    return shutil.which("redis-server") is not None or Path("/usr/bin/redis-server").exists()


def _have_nginx() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


def test_soap_runs_every_path_at_both_concurrencies_and_checks_every_sum_at_both_concurrencies_and_checks_every_sum(smoke: dict) -> None:
    soap = next(sc for sc in smoke["scenarios"] if sc["id"] == "5")
    assert soap["status"] == "measured", soap["notes"]
    rows = {row["metric"]: row for row in soap["metrics"]}
    for in_flight in (1, 20):
        calls = rows[f"calls/s, {in_flight} in flight"]
        assert _number(calls["relayed"]["median"]) and _number(calls["baselines"]["direct"]["median"])
        assert _number(calls["ratios"]["direct"]["median"])
        assert [t["text"] for t in calls["targets"]] == ["≥ 0.85 × direct"]
        assert calls["targets"][0]["pass"] in (True, False)
        # the hops in front of the same direct server: the byte-copying proxy always, nginx where installed
        hops = ["passthrough", *(["nginx"] if _have_nginx() else [])]
        for hop in hops:
            assert _number(calls["baselines"][hop]["median"]) and _number(calls["ratios"][hop]["median"]), hop
        for name in (f"p50 latency, {in_flight} in flight", f"p99 latency, {in_flight} in flight",
                     f"hop CPU per call (gateway vs nginx, passthrough), {in_flight} in flight"):
            assert _number(rows[name]["relayed"]["median"]), name
        hop_cpu = rows[f"hop CPU per call (gateway vs nginx, passthrough), {in_flight} in flight"]
        assert sorted(hop_cpu["baselines"]) == sorted(hops)
        for path in ("direct", *hops, "relayed"):
            for rnd in soap["rounds"][f"{path}@f{in_flight}"]:
                assert rnd is not None, (path, in_flight, soap["notes"])
                # correctness, not speed: every call answered, every sum right
                assert rnd["calls"] > 0 and rnd["wrong_results"] == 0 and rnd["exceptions"] == 0, rnd
    assert "not yet measurable" not in " ".join(soap["notes"])


def test_cluster_compares_cross_node_with_same_node(smoke: dict) -> None:
    cluster = next(sc for sc in smoke["scenarios"] if sc["id"] == "9")
    if not _have_redis():
        assert cluster["status"] == "skipped"
        return
    assert cluster["status"] == "measured", cluster["notes"]
    rows = {row["metric"].split(" (")[0].split(",")[0]: row for row in cluster["metrics"]}
    for name in ("setup p50", "setup p99", "bulk throughput"):
        row = rows[name]
        assert row["relayed_path"] == "cross" and set(row["baselines"]) == {"same"}
        assert _number(row["relayed"]["median"]) and _number(row["baselines"]["same"]["median"])
        assert _number(row["ratios"]["same"]["median"])
        assert row["targets"] == []  # no target is set for the cross-node penalty: ratios only
    for path in ("same", "cross"):
        for rnd in cluster["rounds"][path]:
            assert rnd is not None and rnd["confirmed"] == rnd["bytes"] and rnd["failures"] == 0, rnd


def test_measured_scenarios_have_numbers_where_expected(smoke: dict) -> None:
    have_wrk = shutil.which("wrk") is not None
    for sc in smoke["scenarios"]:
        if sc["id"] in ("3", "4") and not have_wrk:
            assert sc["status"] == "skipped"
            continue
        if sc["id"] == "9" and not _have_redis():
            assert sc["status"] == "skipped"
            continue
        assert sc["status"] == "measured", sc
        assert sc["metrics"], sc["id"]
        # the first metric of every scenario is its headline figure: the relayed path must have a number
        head = sc["metrics"][0]
        assert _number(head["relayed"]["median"]), (sc["id"], head)
        for row in sc["metrics"]:
            assert set(row) >= {"metric", "unit", "relayed", "baselines", "ratios", "targets"}
            for s in [row["relayed"], *row["baselines"].values(), *row["ratios"].values()]:
                assert s["median"] is None or _number(s["median"])
            for t in row["targets"]:
                assert t["pass"] in (True, False, None)
                assert isinstance(t["text"], str) and t["text"]


def test_baselines_ran_beside_the_relay(smoke: dict) -> None:
    bulk = next(sc for sc in smoke["scenarios"] if sc["id"] == "1")
    throughput = bulk["metrics"][0]
    assert _number(throughput["baselines"]["direct"]["median"])
    assert _number(throughput["ratios"]["direct"]["median"])
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        assert _number(throughput["baselines"]["nginx"]["median"])


def test_targets_are_all_reported(smoke: dict) -> None:
    texts = {(sc["id"], t["text"]) for sc in smoke["scenarios"] for row in sc["metrics"] for t in row["targets"]}
    ids = {sid for sid, _ in texts}
    assert {"1", "2", "5", "6", "7", "8"} <= ids
    if shutil.which("wrk"):
        assert "3" in ids


def test_markdown_and_charts_are_written(smoke: dict) -> None:
    out = Path(smoke["_out"])
    md = (out / "results.md").read_text()
    assert "| Scenario | Metric | Baseline(s) | Relayed | Ratio | Target | Pass/fail | Spread" in md
    assert "not yet measurable" not in md
    assert "5. SOAP" in md and "9. Cluster" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert smoke["charts"]
    for name in smoke["charts"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (Path(smoke["_base"]) / "README.md").exists()


def test_no_key_or_signature_reaches_the_results(smoke: dict) -> None:
    import re

    out = Path(smoke["_out"])
    for name in ("results.json", "results.md"):
        text = (out / name).read_text()
        assert not re.search(r"SharedAccessKey=(?!<redacted>)", text), name
        assert not re.search(r"sig=(?!<redacted>)", text), name


def test_the_gateways_logged_no_warning_or_error(smoke: dict) -> None:
    """Every gateway of the run (the main one, the fresh ones of scenarios 7 and 8, the cluster nodes of 9) saw
    only ordinary traffic, senders leaving mid-response included: none of it may be logged as a problem."""
    problems = smoke["meta"]["gateway_problems"]
    assert problems["count"] == 0, problems["first"]


@pytest.mark.parametrize("workload", ["soap1", "http50"])
def test_compare_runs_two_gateways_side_by_side_and_writes_ratios(tmp_path: Path, workload: str) -> None:
    """``python -m bench.compare`` against this very checkout (A against A): the machinery, not the speed."""
    if workload == "http50" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    out = tmp_path / "compare.json"
    env = {k: v for k, v in os.environ.items() if k not in ("WCFRELAY_UVLOOP", "WCFRELAY_CPROFILE")}
    done = subprocess.run([sys.executable, "-m", "bench.compare", "--base", str(ROOT), "--workload", workload,
                           "--rounds", "2", "--seconds", "0.5", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120 * TIMEOUT_FACTOR, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["workload"] == workload and len(result["rounds"]) == 2
    for row in result["rounds"]:
        for side in ("A", "B"):
            assert row[side]["count"] > 0 and _number(row[side]["rate"]) and _number(row[side]["gateway_cpu_us"])
        assert math.isclose(row["rate_ratio"], row["B"]["rate"] / row["A"]["rate"])
    assert _number(result["rate_ratio"]["median"]) and _number(result["cpu_ratio"]["median"])


def test_compare_refuses_a_base_that_is_not_a_checkout(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.compare", "--base", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "is not a checkout of this project" in done.stdout


def test_sched_traces_both_paths_or_says_why_it_cannot() -> None:
    """``python -m bench.sched``: the scheduler's view of a SOAP call, where perf may trace; a clear refusal elsewhere."""
    done = subprocess.run([sys.executable, "-m", "bench.sched", "--seconds", "0.5"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180 * TIMEOUT_FACTOR, check=False)
    if done.returncode == 1:
        assert done.stdout.startswith("bench.sched: perf ") and "Traceback" not in done.stderr, done.stdout
        return
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "relayed: " in done.stdout and "direct: " in done.stdout and "gateway -> service" in done.stdout


def test_sched_refuses_a_trace_length_out_of_range() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.sched", "--seconds", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--seconds must be above 0" in done.stderr


def test_instructions_counts_the_gateway_and_the_passthrough_hop(tmp_path: Path) -> None:
    """``python -m bench.instructions``: callgrind's count of the instructions per SOAP call of both hops."""
    out = tmp_path / "ir.json"
    done = subprocess.run([sys.executable, "-m", "bench.instructions", "--seconds", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300 * TIMEOUT_FACTOR, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    for name in ("gateway", "passthrough"):
        r = result[name]
        assert r["calls"] > 0 and r["instructions"] > 0
        assert math.isclose(r["per_call"], r["instructions"] / r["calls"])
        assert f"{name:12} {r['per_call']:>11,.0f} instructions per call" in done.stdout
    # The gateway parses, authorizes and frames every call; the passthrough only copies bytes.
    assert result["gateway"]["per_call"] > result["passthrough"]["per_call"]


def test_instructions_without_valgrind_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no valgrind on this PATH
    done = subprocess.run([sys.executable, "-m", "bench.instructions", "--seconds", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stdout.startswith("bench.instructions: valgrind is not installed"), \
        done.stdout + done.stderr


def test_instructions_refuses_a_length_out_of_range() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.instructions", "--seconds", "121"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--seconds must be above 0" in done.stderr


def test_pinned_runs_both_layouts_with_the_caller_on_a_cpu_of_its_own(tmp_path: Path) -> None:
    """``python -m bench.pinned``: the caller apart from the relay, or a clear refusal on a one-CPU machine."""
    out = tmp_path / "pinned.json"
    env = {k: v for k, v in os.environ.items() if k not in ("WCFRELAY_UVLOOP", "WCFRELAY_CPROFILE")}
    done = subprocess.run([sys.executable, "-m", "bench.pinned", "--rounds", "2", "--seconds", "0.3", "--out",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180 * TIMEOUT_FACTOR, check=False)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        assert done.returncode == 1 and "needs at least 2 CPUs" in done.stdout, done.stdout
        return
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [row["layout"] for row in result["rows"]] == ["shared", "pinned", "pinned", "shared"]
    for row in result["rows"]:
        assert _number(row["direct_cps"]) and row["direct_cps"] > 0 and _number(row["relayed_cps"])
        assert math.isclose(row["ratio"], row["relayed_cps"] / row["direct_cps"])
        if row["layout"] == "pinned":
            assert row["affinity"] == {"caller": [cpus[0]], "service": [cpus[1]], "gateway": [cpus[1]]}
        else:
            assert row["affinity"] == {name: cpus for name in ("caller", "service", "gateway")}
    assert set(result["ratio"]) == {"shared", "pinned"} and _number(result["ratio"]["pinned"]["median"])


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--seconds", "nan"], ["--seconds", "601"]])
def test_pinned_refuses_bad_flags(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.pinned", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "--rounds must be between 1 and 100 and --seconds above 0" in done.stderr
