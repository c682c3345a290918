"""`fmtest compare A B`: stored runs or files, per-case deltas with paired intervals, new slips and false alarms by
image id, the regressions under B's recorded tolerance, and exit codes 1 (a regression), 0, 2 (unknown run)."""

from __future__ import annotations

import json

import pytest
from toy_fmtest import run_suite as run
from toy_fmtest import toy_config

from fmtest.cli import main
from fmtest.report.results_file import read_json, write_json
from fmtest.report.runs import find_run, list_runs, run_id, store_run
from fmtest.verdict.results import RunResults

WORSE = "[pipelines.toy_threshold]\nlevel = 0.95\n"  # finds no defect: every defective image slips
DEFECTIVE = ["test/006", "test/007", "test/008", "test/009"]


@pytest.fixture
def two_runs(suite):
    """A good run, then one whose toy_threshold misses every defect (and toy_empty as before)."""
    run(suite, "--fm-results=good.json")
    (suite.path / "fmtest.toml").write_text(toy_config(WORSE))
    run(suite, "--fm-results=worse.json")
    return suite


def test_compare_last_with_the_run_before(two_runs, capsys):
    capsys.readouterr()
    assert main(["compare", "last~1", "last"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("case "))
    assert header.split()[:4] == ["case", "metric", "A", "B"]
    iou = next(line for line in lines if line.startswith("toy_threshold-toy") and " iou " in line)
    assert iou.split()[2:6] == ["1.000", "0.000", "-1.000", "[-1.000,"] and iou.endswith("REGRESSED")  # paired CI
    assert f"toy_threshold-toy: 4 new slips (defective, B passes, A found): {', '.join(DEFECTIVE)}" in out
    assert "REGRESSED: 1 case would fail against A: toy_threshold-toy" in out
    assert not any(line.startswith("toy_empty-toy") and "REGRESSED" in line for line in lines)


def test_files_json_and_a_run_against_itself(two_runs, capsys):
    capsys.readouterr()
    assert main(["compare", "good.json", "worse.json", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["regressed"] == ["toy_threshold-toy"]
    case = next(c for c in data["cases"] if c["case"] == "toy_threshold-toy")
    assert case["paired"] is True and case["new_slips"] == DEFECTIVE and case["new_false_alarms"] == []
    iou = case["metrics"]["iou"]
    assert iou["regressed"] is True and iou["ci_low"] <= iou["delta"] <= iou["ci_high"] and iou["ci_high"] < 0
    assert main(["compare", "last", "last"]) == 0
    assert "no case regresses against A" in capsys.readouterr().out


def test_the_tolerance_is_the_one_b_recorded(suite, capsys):
    run(suite, "--fm-pipeline=toy_threshold")
    (suite.path / "fmtest.toml").write_text(toy_config(WORSE, "[baseline]\ntolerance = 1.0\n"))
    run(suite, "--fm-pipeline=toy_threshold")
    capsys.readouterr()
    assert main(["compare", "last~1", "last"]) == 0  # every drop is within B's tolerance
    out = capsys.readouterr().out
    assert "tolerance 1" in out and "4 new slips" in out


def test_main_is_the_newest_run_on_branch_main(two_runs, capsys):
    runs, _ = list_runs(two_runs.path / ".fmtest_runs")
    first = json.loads(runs[0].path.read_text())
    runs[0].path.write_text(json.dumps({**first, "git_branch": "main"}))
    capsys.readouterr()
    assert main(["compare", "main", "last"]) == 1
    assert f"A: main ({runs[0].path})" in capsys.readouterr().out
    assert main(["runs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert " main " in lines[1] and " main " not in lines[2]  # the branch column


def test_an_unknown_run_is_one_line_with_the_nearest(two_runs, capsys):
    capsys.readouterr()
    assert main(["compare", "20991231T000000Z-nogit", "last"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no stored run '20991231T000000Z-nogit'" in err and "nearest: " in err
    assert main(["compare", "release", "last"]) == 2
    assert "no stored run 'release'" in capsys.readouterr().err


def test_ids_sort_by_time_and_name_a_run_uniquely(tmp_path):
    results = RunResults(created="2026-12-03T10:45:12Z", git_commit="AB12CD34EF", git_branch="main")
    assert run_id(results) == "20261203T104512Z-ab12cd3"
    paths = [store_run(results, tmp_path) for _ in range(3)]
    assert [p.stem for p in paths] == ["20261203T104512Z-ab12cd3", "20261203T104512Z-ab12cd3-2",
                                       "20261203T104512Z-ab12cd3-3"]
    write_json(RunResults(created="2026-12-04T08:00:00Z", git_commit=None), tmp_path / "20261204T080000Z-nogit.json")
    assert find_run(tmp_path, "last").id == "20261204T080000Z-nogit"
    assert find_run(tmp_path, "last~1").id == "20261203T104512Z-ab12cd3-3"
    assert find_run(tmp_path, "main").id == "20261203T104512Z-ab12cd3-3"
    assert find_run(tmp_path, "main~2").id == "20261203T104512Z-ab12cd3"
    assert find_run(tmp_path, "20261204").id == "20261204T080000Z-nogit"  # a unique start of an id
    assert read_json(find_run(tmp_path, "main").path).git_branch == "main"
    (tmp_path / "notes.json").write_text("[1, 2]")  # not a run: listed as a problem, never as a run
    runs, problems = list_runs(tmp_path)
    assert len(runs) == 4 and problems == [f"{tmp_path / 'notes.json'}: not an fmtest results file"]
    assert find_run(tmp_path, "last").id == "20261204T080000Z-nogit"
