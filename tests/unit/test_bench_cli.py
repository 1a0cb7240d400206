"""The bench's command lines refuse bad flags with a clear message, and no run replaces a complete result set with
a partial one: a run of some scenarios or rounds gets its own set, an aborted run leaves the folder as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import compare, runner
from bench.procs import BenchError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("argv", "message"), [
    (["--only", "0"], "--only takes scenario numbers from 1,2,3,4,5,6,7,8,9 separated by commas, not '0'"),
    (["--only", "1,,3"], "not ''"),
    (["--only", "s5"], "not 's5'"),
    (["--only", ""], "not ''"),
    (["--rounds", "0"], "--rounds must be between 1 and 100, not 0"),
    (["--rounds", "-3"], "not -3"),
    (["--rounds", "101"], "not 101"),
    (["--rounds", "many"], "invalid int value"),
    (["--quick", "--smoke"], "not allowed with argument"),
])
def test_bad_flags_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        runner.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_out_must_be_a_folder_and_render_needs_a_results_file(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SystemExit):
        runner.parse_args(["--out", str(a_file)])
    assert f"--out {a_file} is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.parse_args(["--render", str(tmp_path)])
    assert "there is no results.json in it" in capsys.readouterr().err


def test_only_is_read_as_a_sorted_set_of_known_scenarios():
    assert runner.parse_args(["--only", " 5,1 ,5"]).only == ["1", "5"]
    assert runner.parse_args([]).only is None


@pytest.mark.parametrize(("mode", "uvloop", "only", "rounds", "name"), [
    ("full", False, None, None, "full"),
    ("quick", True, None, None, "quick-uvloop"),
    ("full", False, list(runner.SCENARIO_IDS), None, "full"),
    ("full", False, ["5"], 15, "full-only5-15rounds"),
    ("quick", True, ["1", "3"], None, "quick-uvloop-only1-3"),
    ("full", False, None, 5, "full-5rounds"),
])
def test_a_partial_run_gets_a_set_of_its_own(mode, uvloop, only, rounds, name):
    assert runner.set_name(mode, uvloop=uvloop, only=only, rounds=rounds) == name


@pytest.mark.parametrize(("content", "why"), [
    (b"{not json", "Expecting property name"),
    (b"\xff\xfe", "can't decode"),
    (b"[1, 2]", "it has no meta object and scenarios list"),
    (b'{"meta": {}, "scenarios": {}}', "it has no meta object and scenarios list"),
    (b'{"meta": {}, "scenarios": [{"id": "1"}]}', "it is not one this bench wrote (KeyError"),
])
def test_render_refuses_a_malformed_results_file_and_writes_nothing(tmp_path, content, why, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "results.json").write_bytes(content)
    assert runner.main(["--render", str(folder)]) == 2
    assert why in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["results.json", "set"]
    assert (folder / "results.json").read_bytes() == content


def test_render_rebuilds_a_real_set_and_reads_no_file_outside_it(tmp_path):
    folder = tmp_path / "quick"
    shutil.copytree(ROOT / "bench" / "results" / "quick", folder)
    results = json.loads((folder / "results.json").read_text())
    outside = tmp_path / "secret.txt"
    outside.write_text("not a profile\n")
    results["scenarios"][0]["profile"] = {"file": "../secret.txt", "error": "kept as it was"}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "results.md").unlink()
    assert runner.main(["--render", str(folder)]) == 0
    text = (folder / "results.md").read_text()
    assert text.startswith("# Benchmark results: quick mode") and "\n## Targets\n" in text
    rewritten = json.loads((folder / "results.json").read_text())
    assert rewritten["scenarios"][0]["profile"] == {"file": "../secret.txt", "error": "kept as it was"}
    assert "[quick](quick/results.md)" in (tmp_path / "README.md").read_text()


def test_the_index_lists_a_set_it_cannot_read_without_failing(tmp_path):
    shutil.copytree(ROOT / "bench" / "results" / "quick", tmp_path / "quick")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "results.json").write_text('{"meta": [], "scenarios": 3}')
    assert runner.main(["--render", str(tmp_path / "quick")]) == 0
    index = (tmp_path / "README.md").read_text()
    assert "## odd\n\nIts results.json is not one this bench wrote" in index
    assert "## [quick](quick/results.md)" in index


def test_an_aborted_run_leaves_the_published_set_as_it_was(tmp_path, monkeypatch, capsys):
    # A complete earlier set of the same name, then a run whose gateway cannot start.
    published = tmp_path / "smoke-only6"
    shutil.copytree(ROOT / "bench" / "results" / "quick", published)
    before = {p.name: p.read_bytes() for p in published.iterdir()}

    def no_gateway(*args, **kwargs):
        raise BenchError("the gateway did not start (injected)")

    monkeypatch.setattr(runner.Gateway, "start", no_gateway)
    assert runner.main(["--smoke", "--only", "6", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bench aborted: the gateway did not start (injected)" in out
    assert f"{published} left as it was; the partial results are in" in out
    assert {p.name: p.read_bytes() for p in published.iterdir()} == before
    assert not (tmp_path / "README.md").exists()
    partial = Path(out.split("the partial results are in ", 1)[1].split(",", 1)[0])
    try:
        meta = json.loads((partial / "results.json").read_text())["meta"]
        assert meta["aborted"] == "the gateway did not start (injected)" and meta["set"] == "smoke-only6"
    finally:
        shutil.rmtree(partial.parent, ignore_errors=True)


@pytest.mark.parametrize(("argv", "message"), [
    (["--base", ".", "--rounds", "0"], "--rounds must be between 1 and 100"),
    (["--base", ".", "--seconds", "0"], "--seconds above 0 and at most 600"),
    (["--base", ".", "--seconds", "nan"], "--seconds above 0 and at most 600"),
    (["--base", ".", "--workload", "soap99"], "invalid choice"),
])
def test_compare_refuses_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
