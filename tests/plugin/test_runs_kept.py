"""Every run is kept in the runs folder (not a shard's, not with --fm-no-store), interrupted runs marked, a store
that fails is a warning; `--fm-baseline=last` reads the store; `--fm-samples` and `--fm-csv` files."""

from __future__ import annotations

import csv
import json
import os

import pytest
from fakes import REPO, TESTS
from toy_fmtest import run_suite as run
from toy_fmtest import toy_config

from fmtest.cli import main

WORSE = "[pipelines.toy_threshold]\nlevel = 0.95\n"  # finds no defect: every defective image slips


def kept(folder) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_a_run_is_kept_with_an_id_and_listed(suite, capsys):
    result = run(suite, "--fm-results=out.json")
    result.assert_outcomes(passed=1, failed=1)
    (path,) = (suite.path / ".fmtest_runs").glob("*.json")
    stored = json.loads(path.read_text())
    assert stored == json.loads((suite.path / "out.json").read_text())  # the same results, config and provenance
    assert path.stem.startswith(stored["created"][:10].replace("-", "")) and path.stem.endswith("-nogit")
    result.stdout.fnmatch_lines([f"run kept as {path.stem} in *.fmtest_runs*"])
    capsys.readouterr()
    assert main(["runs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "time", "commit", "branch", "passed", "failed", "error", "skipped", "note"]
    assert lines[1].startswith(path.stem) and lines[1].split()[-4:] == ["1", "1", "0", "0"]
    assert main(["runs", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["id"] == path.stem and (listed["passed"], listed["failed"], listed["error"]) == (1, 1, 0)
    assert listed["interrupted"] is False and listed["created"] == stored["created"]


def test_no_store_shards_and_the_runs_dir_option(suite):
    run(suite, "--fm-no-store")
    run(suite, "--fm-shard=1/2")
    assert not (suite.path / ".fmtest_runs").exists()  # a shard's partial results are never a run
    run(suite, "--fm-runs-dir=kept/here")
    assert len(kept(suite.path / "kept" / "here")) == 1
    run(suite, "--fm-runs-dir=kept/here")  # the same second and commit: a second file, never an overwrite
    assert len(kept(suite.path / "kept" / "here")) == 2


def test_a_store_that_fails_is_a_warning_not_a_lost_run(suite):
    (suite.path / "blocked").write_text("a file where the runs folder would be")
    result = run(suite, "--fm-pipeline=toy_threshold", "--fm-runs-dir=blocked", "--fm-results=out.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK  # the run passed: a store that failed does not change that
    result.stdout.fnmatch_lines(["fmtest: warning: run not kept in *blocked: *"])
    assert json.loads((suite.path / "out.json").read_text())["cases"]


def test_baseline_last_resolves_through_the_store(suite):
    run(suite, "--fm-pipeline=toy_threshold").assert_outcomes(passed=1)
    (suite.path / "fmtest.toml").write_text(toy_config(WORSE))
    result = run(suite, "--fm-pipeline=toy_threshold", "--fm-baseline=last", "--fm-results=out.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*regression against the baseline: iou dropped*"])
    (case,) = json.loads((suite.path / "out.json").read_text())["cases"]
    assert case["baseline"]["status"] == "compared" and case["baseline"]["changes"]["iou"]["regressed"] is True


def test_an_unknown_stored_baseline_is_one_line_naming_it(suite):
    run(suite, "--fm-pipeline=toy_threshold")
    result = run(suite, "--fm-pipeline=toy_threshold", "--fm-baseline=last~3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*fmtest: only 1 stored run(s) in all; nearest: *-nogit*"])


def test_samples_and_csv(suite):
    result = run(suite, "--fm-samples=samples.jsonl", "--fm-csv=board.csv")
    result.stdout.fnmatch_lines(["per-image samples: *samples.jsonl", "CSV scoreboard: *board.csv"])
    lines = [json.loads(line) for line in (suite.path / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 20  # 10 images x 2 cases
    first = lines[0]
    assert {k: first[k] for k in ("case", "pipeline", "dataset", "image", "label", "prediction")} == {
        "case": "toy_threshold-toy", "pipeline": "toy_threshold", "dataset": "toy", "image": "test/000",
        "label": "OK", "prediction": "OK"}
    assert isinstance(first["score"], float) and "iou" in first
    slips = [r["image"] for r in lines if r["case"] == "toy_empty-toy" and r["label"] == "NOK"]
    assert slips == ["test/006", "test/007", "test/008", "test/009"]
    rows = list(csv.DictReader((suite.path / "board.csv").open()))
    assert [(r["id"], r["outcome"]) for r in rows] == [("toy_threshold-toy", "passed"), ("toy_empty-toy", "failed")]
    empty = rows[1]
    assert float(empty["f2"]) == 0.0 and float(empty["threshold_f2"]) == 0.8 and empty["f2_ci_low"] != ""
    assert float(empty["threshold_iou"]) == 0.0 and "f2" in empty["message"]


def test_an_unwritable_samples_file_stops_the_run_before_it_starts(suite):
    (suite.path / "folder.jsonl").mkdir()
    result = run(suite, "--fm-samples=folder.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--fm-samples: cannot write *folder.jsonl: it is a folder"])


def test_an_interrupted_run_is_kept_marked_with_the_finished_samples(suite, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))  # a subprocess: the interrupt
    # must not reach this run
    result = suite.runpytest_subprocess("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache",
                                        "--fm-pipeline=toy_threshold,toy_interrupt", "--fm-samples=samples.jsonl")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    (stored,) = kept(suite.path / ".fmtest_runs")
    assert stored["interrupted"] is True and stored["unfinished"] == ["toy_interrupt-toy"]
    cases = {json.loads(line)["case"] for line in (suite.path / "samples.jsonl").read_text().splitlines()}
    assert cases == {"toy_threshold-toy"}
    capsys.readouterr()
    assert main(["runs", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("INTERRUPTED (1 unfinished)")


def test_under_xdist_only_the_controller_keeps_the_run_and_workers_share_the_baseline(suite, monkeypatch):
    run(suite).assert_outcomes(passed=1, failed=1)
    (suite.path / "fmtest.toml").write_text(toy_config(WORSE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))  # fresh processes
    result = suite.runpytest_subprocess("-n", "2", "-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache",
                                        "--fm-baseline=last", "--fm-results=out.json")
    result.assert_outcomes(failed=2)
    runs = kept(suite.path / ".fmtest_runs")
    assert len(runs) == 2  # one per session: the workers keep none
    cases = {c["id"]: c for c in runs[-1]["cases"]}
    assert cases["toy_threshold-toy"]["baseline"]["changes"]["iou"]["regressed"] is True
    assert cases["toy_empty-toy"]["baseline"]["status"] == "compared"
