"""results.json -> results.md (one table) and PNG charts; bench/results/README.md indexes every result set."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["UNTARGETED_HEADLINES", "charts", "markdown", "write_all", "write_index"]

#: rows of scenarios without a target whose ratios the results index shows (metric-name prefixes)
UNTARGETED_HEADLINES: dict[str, tuple[str, ...]] = {"4": ("requests/s",),
                                                    "9": ("setup p50", "bulk throughput")}


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    if a >= 1000:
        s = f"{v:,.0f}"
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    elif a >= 1:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3f}"
    return f"{s} {unit}".strip()


def _verdict(t: dict) -> str:
    if t.get("pass") is None:
        return "n/a"
    word = "**PASS**" if t["pass"] else "**FAIL**"
    total, good = t.get("rounds_total", 0), t.get("rounds_passing", 0)
    if total and good not in (0, total):
        word += f" ({good}/{total} rounds pass)"
    return word


def _spread(s: dict) -> str:
    if not s or s.get("median") is None:
        return "—"
    pct = f" (±{50 * s['spread']:.0f}% of median)" if s.get("spread") is not None else ""
    return f"{_fmt(s['min'])}–{_fmt(s['max'])}{pct}, n={s['n']}"


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# Benchmark results: {meta['mode']} mode{' (gateway on uvloop)' if meta['gateway_uvloop'] else ''}",
             "",
             f"Run {meta['started']} on {meta['cpus']} CPUs (load average before {meta['loadavg_before']}, after "
             f"{meta['loadavg_after']}), {meta['duration_s']:.0f} s. Gateway event loop: "
             f"{'uvloop' if meta['gateway_uvloop'] else 'asyncio'}; clients, servers and listeners: "
             f"{meta['peer_loop']}. Gateway log level {meta['gateway_log_level']}. Commit {meta.get('commit') or '?'}.",
             "",
             "Every ratio is relayed ÷ baseline **paired by round** (baseline and relayed run back to back, order "
             "rotated each round), then the median over rounds; spread shows the per-round min–max of the relayed "
             "figure and of the ratio. Machine shared and noisy: read ratios, not absolute numbers.",
             ""]
    if meta["mode"] == "smoke":
        lines += ["> **Smoke mode**: tiny sizes, one round. These numbers only prove the machinery works.", ""]
    lines += ["| Scenario | Metric | Baseline(s) | Relayed | Ratio | Target | Pass/fail | Spread (relayed; ratio) |",
              "|---|---|---|---|---|---|---|---|"]
    for sc in results["scenarios"]:
        name = f"{sc['id']}. {sc['title']}"
        if sc["status"] != "measured":
            lines.append(f"| {name} | — | — | — | — | {sc.get('target', '—')} | "
                         f"{'; '.join(sc['notes']) or sc['status']} | — |")
            continue
        for row in sc["metrics"]:
            unit = row["unit"]
            bases = " · ".join(f"{b} {_fmt(s['median'], unit)}" for b, s in row["baselines"].items()) or "—"
            ratio = " · ".join(f"{_fmt(s['median'])}× {b}" for b, s in row["ratios"].items()
                               if s.get("median") is not None) or "—"
            targets = row["targets"]
            ttext = "<br>".join(t["text"] for t in targets) or "—"
            verdict = "<br>".join(f"{_verdict(t)} ({_fmt(t['value'])})" for t in targets) or "—"
            spread = _spread(row["relayed"])
            rs = [f"{b} {_fmt(s['min'])}–{_fmt(s['max'])}" for b, s in row["ratios"].items()
                  if s.get("median") is not None and s["n"] > 1]
            if rs:
                spread += "; ratio " + ", ".join(rs)
            rel_cell = _fmt(row["relayed"]["median"], unit)
            errs = row.get("errors") or {}
            if errs:
                warn = "; ".join(f"{p}: {e['errors']} errors" + (f", {e['failed_rounds']} failed rounds"
                                                                  if e["failed_rounds"] else "")
                                 for p, e in errs.items())
                rel_cell += f" ⚠ ({warn})"
                if targets:
                    verdict += "<br>⚠ not valid: errors during the run"
            lines.append(f"| {name} | {row['metric']} | {bases} | {rel_cell} | "
                         f"{ratio} | {ttext} | {verdict} | {spread} |")
            name = ""
    lines += ["", "## Targets", ""]
    for sc in results["scenarios"]:
        for row in sc.get("metrics", []):
            for t in row["targets"]:
                lines.append(f"- ({sc['id']}) {row['metric']}: target {t['text']} → {_verdict(t)}, "
                             f"{t['quantity']} = {_fmt(t['value'])}"
                             + (" — ⚠ not valid: errors during the run" if row.get("errors") else ""))
        if sc["status"] != "measured" and sc.get("target"):
            lines.append(f"- ({sc['id']}) {sc['title']}: target {sc['target']} → not measured "
                         f"({'; '.join(sc['notes'])})")
    lines += ["", "## Notes per scenario", ""]
    for sc in results["scenarios"]:
        params = ", ".join(f"{k}={v}" for k, v in sc.get("params", {}).items())
        lines.append(f"- **{sc['id']}. {sc['title']}** ({params}; {sc.get('seconds') or 0:.0f} s)")
        for n in sc["notes"]:
            lines.append(f"  - {n}")
    profiles = [(sc, sc[key]) for sc in results["scenarios"] for key in ("profile", "profile_service")
                if sc.get(key)]
    if profiles:
        lines += ["", ("## Profiles (py-spy, one extra relayed run after the measured rounds; the gateway unless "
                       "the workload names another process)"), ""]
        for sc, prof in profiles:
            if "error" in prof:
                lines.append(f"- {sc['id']}. {sc['title']}: profiling failed: {prof['error']}")
                continue
            lines += [f"### {sc['id']}. {sc['title']} — {prof['samples']} samples ({prof['workload']}), "
                      f"`{prof['file']}`", "",
                      "| self % | function | | cumulative % | function |", "|---:|---|---|---:|---|"]
            for a, b in zip(prof["top_self"], prof["top_cumulative"]):
                lines.append(f"| {a['percent']:.1f} | `{a['function']}` | | {b['percent']:.1f} | `{b['function']}` |")
            lines.append("")
    lines += ["", "Charts: " + ", ".join(f"[{c}]({c})" for c in results.get("charts", [])), ""]
    return "\n".join(lines)


def charts(results: dict, out: Path) -> list[str]:
    """PNG charts next to the results; returns their file names (empty if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[str] = []
    colours = {"direct": "#4c72b0", "nginx": "#55a868", "relayed": "#c44e52", "unloaded": "#8172b2", "passthrough": "#ccb974",
               "same": "#4c72b0", "cross": "#c44e52"}
    by_id = {sc["id"]: sc for sc in results["scenarios"]}

    def row(sid: str, metric_prefix: str) -> dict | None:
        sc = by_id.get(sid)
        for r in (sc or {}).get("metrics", []):
            if r["metric"].startswith(metric_prefix):
                return r
        return None

    def bars(ax: Any, r: dict | None, title: str) -> None:
        ax.set_title(title, fontsize=9)
        if r is None:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            return
        series = dict(r["baselines"])
        series[r["relayed_path"]] = r["relayed"]
        names = [n for n, s in series.items() if s.get("median") is not None]
        meds = [series[n]["median"] for n in names]
        lo = [series[n]["median"] - series[n]["min"] for n in names]
        hi = [series[n]["max"] - series[n]["median"] for n in names]
        ax.bar(names, meds, yerr=[lo, hi], capsize=4, color=[colours.get(n, "#999999") for n in names])
        ax.set_ylabel(r["unit"], fontsize=8)
        ax.tick_params(labelsize=8)

    panels = [("1", "throughput", "1. WS bulk, 64 KiB msgs"), ("2", "round trips/s", "2. WS ping-pong 256 B"),
              ("3", "req/s, 1 conn", "3. small HTTP, 1 conn"), ("3", "req/s, 50 conn", "3. small HTTP, 50 conns"),
              ("4", "body throughput", "4. HTTP 1 MiB both ways"), ("1", "hop CPU", "1. hop CPU per GB")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for ax, (sid, prefix, title) in zip(axes.flat, panels):
        bars(ax, row(sid, prefix), title)
    fig.suptitle("Throughput (median, whiskers = min–max over rounds)")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)
    made.append("throughput.png")

    panels = [("2", "p50 round trip", "2. ping-pong p50"), ("2", "p99 round trip", "2. ping-pong p99"),
              ("3", "p50 latency, 1 conn", "3. HTTP p50, 1 conn"), ("3", "p99 latency, 1 conn", "3. HTTP p99, 1 conn"),
              ("6", "p50 setup", "6. connection setup p50"), ("6", "p99 setup", "6. connection setup p99")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for ax, (sid, prefix, title) in zip(axes.flat, panels):
        bars(ax, row(sid, prefix), title)
    fig.suptitle("Latency (median, whiskers = min–max over rounds)")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)
    made.append("latency.png")

    panels = [("7", "gateway RSS per idle", "7. RSS per idle connection"),
              ("7", "setup p50 while loaded", "7. setup p50 loaded vs unloaded"),
              ("8", "peak memory growth", "8. slow reader: peak growth")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (sid, prefix, title) in zip(axes.flat, panels):
        bars(ax, row(sid, prefix), title)
    fig.suptitle("Memory and scale")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=100)
    plt.close(fig)
    made.append("memory.png")

    panels = [("5", "calls/s, 1 in flight", "5. SOAP calls/s, 1 in flight"),
              ("5", "calls/s, 20 in flight", "5. SOAP calls/s, 20 in flight"),
              ("5", "p50 latency, 1 in flight", "5. SOAP p50, 1 in flight"),
              ("9", "setup p50", "9. cluster: setup p50, same vs cross node"),
              ("9", "setup p99", "9. cluster: setup p99, same vs cross node"),
              ("9", "bulk throughput", "9. cluster: WS bulk, same vs cross node")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for ax, (sid, prefix, title) in zip(axes.flat, panels):
        bars(ax, row(sid, prefix), title)
    fig.suptitle("SOAP relay and cluster (median, whiskers = min–max over rounds)")
    fig.tight_layout()
    fig.savefig(out / "soap_cluster.png", dpi=100)
    plt.close(fig)
    made.append("soap_cluster.png")

    # Every target on one axis: value relative to its threshold, > 1 means "passes with that margin".
    labels, margins, ok = [], [], []
    for sc in results["scenarios"]:
        for r in sc.get("metrics", []):
            for t in r["targets"]:
                v, th = t.get("value"), t.get("threshold")
                if v is None or th is None:
                    continue
                if t["higher_ok"]:
                    margin = v / th if th else math.nan
                elif th > 0 and v > 0:
                    margin = th / v
                else:  # "≤ baseline + x" with the relayed figure at or below the baseline
                    margin = 2.0 if v <= th else th / v
                labels.append(f"({sc['id']}) {r['metric'].split(' (')[0][:34]}: {t['text']}")
                margins.append(min(margin, 10.0))
                ok.append(bool(t["pass"]))
    if labels:
        fig, ax = plt.subplots(figsize=(10, 0.5 * len(labels) + 1.5))
        ax.barh(labels, margins, color=["#55a868" if o else "#c44e52" for o in ok])
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("margin to target (>1 passes; log scale, capped at 10)")
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
        fig.tight_layout()
        fig.savefig(out / "targets.png", dpi=100)
        plt.close(fig)
        made.append("targets.png")
    return made


def write_all(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    markdown(results)  # a malformed result fails here, before any file is written
    results["charts"] = charts(results, out)
    text = markdown(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    (out / "results.md").write_text(text)


def write_index(base: Path) -> None:
    """bench/results/README.md: what each result set is, with its targets' verdicts."""
    sets = sorted(p for p in base.iterdir() if (p / "results.json").exists()) if base.exists() else []
    lines = ["# Benchmark results", "",
             "Produced by `python -m bench` (full), `python -m bench --quick` and `--uvloop` (gateway on uvloop). "
             "Every figure is a ratio to a baseline measured in the same run (the direct path: same client, same "
             "server code, no relay; and nginx as a reverse proxy), rounds interleaved, median of ≥ 5 rounds "
             "(smoke: 1) with the spread. [bench/README.md](../README.md) explains the method, the scenarios and how to run them.", ""]
    for p in sets:
        try:
            lines += _index_entry(p, json.loads((p / "results.json").read_text()))
        except (ValueError, KeyError, TypeError, AttributeError):  # not a set this bench wrote: listed, not read
            lines += [f"## {p.name}", "", "Its results.json is not one this bench wrote; not summarised.", ""]
    (base / "README.md").write_text("\n".join(lines))


def _index_entry(p: Path, res: dict) -> list[str]:
    meta = res.get("meta", {})
    verdicts = []
    for sc in res.get("scenarios", []):
        for r in sc.get("metrics", []):
            for t in r.get("targets", []):
                verdicts.append(f"({sc['id']}) {'pass' if t.get('pass') else 'FAIL' if t.get('pass') is False else 'n/a'}")
    ratios = []
    for sc in res.get("scenarios", []):
        for prefix in UNTARGETED_HEADLINES.get(sc["id"], ()):
            r = next((r for r in sc.get("metrics", []) if r["metric"].startswith(prefix)), None)
            for b, st in ((r or {}).get("ratios") or {}).items():
                if st.get("median") is not None:
                    ratios.append(f"({sc['id']}) {prefix} {_fmt(st['median'])}× {b}")
    measured = [sc["id"] for sc in res.get("scenarios", []) if sc.get("status") == "measured"]
    lines = [f"## [{p.name}]({p.name}/results.md)", "",
             f"{meta.get('started', '?')}, {meta.get('duration_s', 0):.0f} s, gateway loop "
             f"{'uvloop' if meta.get('gateway_uvloop') else 'asyncio'}. Scenarios measured: "
             f"{', '.join(measured) or '—'}. Targets: {', '.join(verdicts) or '—'}."
             + (f" No target, ratios: {', '.join(ratios)}." if ratios else ""),
             ""]
    for c in res.get("charts", []):
        lines.append(f"![{c}]({p.name}/{c})")
    lines.append("")
    return lines
