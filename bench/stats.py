"""Per-round values -> metric rows: medians, spreads, paired ratios and target verdicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import summary

__all__ = ["ScenarioResult", "Target", "abs_max", "abs_max_worst", "diff_max", "ratio_min"]


@dataclass
class Target:
    """A target on the relayed figure. ``check(relayed_round, {baseline: round_value})`` gives the per-round
    quantity that is compared with ``threshold``; ``higher_ok`` says which side passes."""

    text: str
    quantity: str  # what the value column means, e.g. "ratio to direct"
    threshold: float
    higher_ok: bool
    per_round: Callable[[float, dict[str, float | None]], float | None]
    aggregate: str = "median"  # or "worst"

    def evaluate(self, relayed: list[float | None], baselines: dict[str, list[float | None]]) -> dict:
        values: list[float | None] = []
        for i, r in enumerate(relayed):
            base = {k: (v[i] if i < len(v) else None) for k, v in baselines.items()}
            values.append(None if r is None else self.per_round(r, base))
        s = summary(values)
        if s["median"] is None:
            return {"text": self.text, "quantity": self.quantity, "value": None, "pass": None, "rounds": values,
                    "rounds_passing": 0, "rounds_total": 0}
        ok = (lambda v: v >= self.threshold) if self.higher_ok else (lambda v: v <= self.threshold)
        if self.aggregate == "worst":
            value = s["min"] if self.higher_ok else s["max"]
        else:
            value = s["median"]
        good = [v for v in values if v is not None]
        return {"text": self.text, "quantity": self.quantity, "value": value, "threshold": self.threshold,
                "higher_ok": self.higher_ok, "aggregate": self.aggregate, "pass": ok(value), "rounds": values,
                "rounds_passing": sum(1 for v in good if ok(v)), "rounds_total": len(good)}


def ratio_min(baseline: str, threshold: float) -> Target:
    def per_round(r: float, base: dict[str, float | None]) -> float | None:
        b = base.get(baseline)
        return r / b if b else None

    return Target(f"≥ {threshold:.2f} × {baseline}", f"relayed / {baseline}", threshold, True, per_round)


def diff_max(baseline: str, threshold: float, unit: str) -> Target:
    def per_round(r: float, base: dict[str, float | None]) -> float | None:
        b = base.get(baseline)
        return r - b if b is not None else None

    return Target(f"≤ {baseline} + {threshold:g} {unit}", f"relayed − {baseline} ({unit})", threshold, False,
                  per_round)


def abs_max(threshold: float, unit: str) -> Target:
    return Target(f"≤ {threshold:g} {unit}", f"relayed ({unit})", threshold, False, lambda r, b: r)


def abs_max_worst(threshold: float, unit: str) -> Target:
    return Target(f"≤ {threshold:g} {unit} in every round", f"relayed, worst round ({unit})", threshold, False,
                  lambda r, b: r, aggregate="worst")


class ScenarioResult:
    """Collects per-round values by path, then turns them into metric rows."""

    def __init__(self, sid: str, key: str, title: str, params: dict[str, Any]) -> None:
        self.data: dict[str, Any] = {"id": sid, "key": key, "title": title, "status": "measured", "params": params,
                                     "notes": [], "metrics": [], "rounds": {}, "seconds": None}

    @property
    def rounds(self) -> dict[str, list[dict | None]]:
        return self.data["rounds"]

    def note(self, text: str) -> None:
        if text not in self.data["notes"]:
            self.data["notes"].append(text)

    def add(self, path: str, index: int, values: dict | None) -> None:
        rows = self.rounds.setdefault(path, [])
        while len(rows) <= index:
            rows.append(None)
        rows[index] = values

    def series(self, path: str, key: str) -> list[float | None]:
        out: list[float | None] = []
        for row in self.rounds.get(path, []):
            value = None if row is None else row.get(key)
            out.append(None if value is None else float(value))
        return out

    def metric(self, name: str, unit: str, key: str, *, relayed: str = "relayed",
               baselines: tuple[str, ...] = ("direct", "nginx"), better: str = "higher",
               targets: list[Target] | None = None, relayed_key: str | None = None,
               baseline_keys: dict[str, str] | None = None, relayed_label: str | None = None,
               suffix: str = "") -> dict:
        """One row: the relayed figure, each baseline's, per-round paired ratios (relayed/baseline), targets.
        ``suffix`` selects rounds stored as ``path + suffix`` (e.g. ``relayed@c50``)."""
        rel = self.series(relayed + suffix, relayed_key or key)
        bases: dict[str, list[float | None]] = {}
        for b in baselines:
            if b + suffix in self.rounds:
                bases[b] = self.series(b + suffix, (baseline_keys or {}).get(b, key))
        ratios = {}
        for b, vals in bases.items():
            pairs = [(r / v) if (r is not None and v) else None for r, v in zip(rel, vals)]
            ratios[b] = summary(pairs)
        errors = {}
        for p in [relayed, *bases]:
            n = sum(int((row or {}).get("errors") or 0) + int((row or {}).get("failures") or 0)
                    for row in self.rounds.get(p + suffix, []))
            failed_rounds = sum(1 for row in self.rounds.get(p + suffix, []) if row is None)
            if n or failed_rounds:
                errors[p] = {"errors": n, "failed_rounds": failed_rounds}
        row = {"metric": name, "unit": unit, "better": better, "relayed_path": relayed_label or relayed,
               "errors": errors,
               "relayed": summary(rel), "baselines": {b: summary(v) for b, v in bases.items()}, "ratios": ratios,
               "targets": [t.evaluate(rel, bases) for t in (targets or [])]}
        self.data["metrics"].append(row)
        return row
