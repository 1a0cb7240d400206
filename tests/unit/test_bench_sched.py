"""bench.sched's trace reading: run slices and wake-ups from ``perf script`` text (the sans-I/O part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.sched import Slice, Wake, format_summary, parse_perf_script, summarise

LABELS = {10: "zeep", 20: "gateway", 30: "service"}


def _switch(tid: int, t: str, prev: int, state: str, nxt: int) -> str:
    return (f" {tid:5d}  {t}:       sched:sched_switch: prev_comm=python prev_pid={prev} prev_prio=120 "
            f"prev_state={state} ==> next_comm=python next_pid={nxt} next_prio=120")


def _waking(tid: int, t: str, target: int) -> str:
    return f" {tid:5d}  {t}:       sched:sched_waking: comm=python pid={target} prio=120 target_cpu=001"


ONE_CALL = [
    _waking(10, "100.000000", 20),            # zeep's request wakes the gateway ...
    _switch(0, "100.000050", 0, "R", 20),     # ... which runs 50 µs later, on an idle CPU
    _waking(20, "100.000150", 30),            # 100 µs of work, then it wakes the service
    _switch(20, "100.000160", 20, "S", 30),   # and sleeps: a 110 µs slice; the service runs 10 µs after its wake-up
    "this line is not a trace line",
    _waking(99, "100.000200", 30),            # something unlabelled wakes the (running) service: ignored
    _waking(30, "100.000400", 20),
    _switch(30, "100.000410", 30, "S", 20),   # the service's 250 µs slice
    _waking(20, "100.000500", 10),
    _switch(20, "100.000520", 20, "R", 10),   # the gateway is preempted by zeep, 20 µs after waking it
]


def test_slices_and_wakes_of_one_call_are_read_exactly() -> None:
    slices, wakes = parse_perf_script(ONE_CALL, LABELS)
    assert [(w.waker, w.wakee, round(w.micros)) for w in wakes] == [
        ("zeep", "gateway", 50), ("gateway", "service", 10), ("service", "gateway", 10), ("gateway", "zeep", 20)]
    assert [(s.label, s.woken_by, s.first_woke, s.ended, round(s.micros)) for s in slices] == [
        ("gateway", "zeep", "service", "sleep", 110),
        ("service", "gateway", "gateway", "sleep", 250),
        ("gateway", "service", "zeep", "preempted", 110)]


def test_summary_counts_calls_by_responses_reaching_the_caller() -> None:
    slices, wakes = parse_perf_script(ONE_CALL, LABELS)
    summary = summarise(slices, wakes, caller="zeep", min_count=1)
    assert summary["calls"] == 1
    assert summary["run_us_per_call"] == pytest.approx({"gateway": 220.0, "service": 250.0})
    assert summary["wake_ups_per_call"]["zeep -> gateway"] == 1
    text = format_summary("relayed", 500.0, summary)
    assert "relayed: 500 calls/s, 1 calls traced" in text and "gateway -> service" in text


def test_a_wake_up_of_a_running_thread_is_not_taken_for_its_next_one() -> None:
    lines = [*ONE_CALL, _waking(10, "100.000600", 30), _switch(10, "100.000630", 10, "S", 30)]
    slices, wakes = parse_perf_script(lines, LABELS)
    assert wakes[-1] == Wake("zeep", "service", pytest.approx(30.0))  # not the unlabelled one while it ran
    assert slices[-1].label == "zeep" and slices[-1].woken_by == "gateway" and slices[-1].first_woke == "service"


def test_wakes_within_one_label_and_from_outside_are_not_reported() -> None:
    labels = {1: "service", 2: "service", 3: "zeep"}
    lines = [_waking(1, "5.000000", 2), _switch(1, "5.000010", 1, "S", 2),   # a process waking its own thread
             _waking(7, "5.000020", 3), _switch(0, "5.000030", 0, "R", 3)]   # an unlabelled thread waking zeep
    slices, wakes = parse_perf_script(lines, labels)
    assert wakes == [Wake("other", "zeep", pytest.approx(10.0))]
    assert slices == []  # thread 1's slice began before the trace; thread 2 and zeep are still running
    assert summarise(slices, wakes, caller="zeep")["calls"] == 0  # "other" waking the caller is not a response


def test_an_empty_or_foreign_trace_gives_an_empty_summary() -> None:
    slices, wakes = parse_perf_script(["", "garbage", _waking(1, "1.0", 2)], LABELS)
    assert (slices, wakes) == ([], [])
    assert summarise(slices, wakes, caller="zeep") == {"calls": 0, "run_us_per_call": {}, "wake_ups_per_call": {},
                                                       "slices": [], "wakes": []}


def test_a_recorded_trace_of_relayed_calls_shows_the_chain() -> None:
    """200 lines recorded on this project's scenario 5 setup (see the file's first line)."""
    path = Path(__file__).parent / "data" / "perf-sched-soap1.txt"
    labels = {4809: "gateway", 4810: "service", 4813: "zeep", 4815: "zeep", 4820: "zeep"}
    labels.update({tid: "spyne" for tid in (4812, 4816, 4817, 4818, 4819, 4821)})
    slices, wakes = parse_perf_script(path.read_text().splitlines(), labels)
    summary = summarise(slices, wakes, caller="zeep", min_count=3)
    assert summary["calls"] == 7
    pairs = {(w["waker"], w["wakee"]) for w in summary["wakes"]}
    assert {("zeep", "gateway"), ("gateway", "service"), ("service", "gateway"), ("gateway", "zeep")} <= pairs
    assert ("zeep", "service") not in pairs  # relayed: zeep never wakes the service itself
    # The gateway is woken twice per call by zeep (head, then body) and sleeps after the first without waking anyone.
    assert summary["wake_ups_per_call"]["zeep -> gateway"] > 1.9
    kinds = {(s["runs"], s["woken_by"], s["first_woke"], s["ended"]) for s in summary["slices"]}
    assert {("gateway", "zeep", "-", "sleep"), ("gateway", "zeep", "service", "sleep"),
            ("gateway", "service", "zeep", "sleep")} <= kinds
    assert all(isinstance(s, Slice) and 0 < s.micros < 5000 for s in slices)
    assert set(summary["run_us_per_call"]) == {"gateway", "service", "spyne", "zeep"}
