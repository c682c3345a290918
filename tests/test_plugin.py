"""The plugin end to end on a toy dataset: parametrization, thresholds, properties, outputs, errors."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
SUITES = Path(__file__).parent.parent / "suites"
TOY = Path(__file__).parent / "toy_fmtest.py"

CONFIG = """
default_datasets = ["toy"]
default_pipelines = ["toy_threshold", "toy_empty"]
bootstrap_resamples = 200
[thresholds]
iou = 0.60
f2 = 0.80
[thresholds."toy_empty-toy"]
iou = 0.0
"""


@pytest.fixture
def suite(pytester):
    """A suite folder like the shipped one, with the toy dataset and pipelines registered."""
    pytester.syspathinsert(TOY.parent)
    for name in ("test_segmentation.py", "test_classification.py"):
        shutil.copy(SUITES / name, pytester.path / name)
    pytester.makeconftest("import toy_fmtest\ntoy_fmtest.register()\n")
    (pytester.path / "fmtest.toml").write_text(CONFIG)
    return pytester


def run(suite, *args):
    return suite.runpytest("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache", "-q", *args)


def test_cases_are_parametrized_and_judged_by_thresholds(suite):
    result = run(suite, "--fm-results=out.json", "--junitxml=junit.xml", "-o", "junit_family=xunit1")
    result.assert_outcomes(passed=1, failed=1)
    # toy_empty has its IoU gate lowered to 0 for this case, but still misses every defect: F2 fails
    result.stdout.fnmatch_lines(["toy_empty-toy: f2 = 0.000 (95% CI *) is below the threshold 0.800"])
    data = json.loads((suite.path / "out.json").read_text())
    assert [c["id"] for c in data["cases"]] == ["toy_threshold-toy", "toy_empty-toy"]
    good, empty = data["cases"]
    assert good["outcome"] == "passed" and empty["outcome"] == "failed"
    assert good["metrics"]["iou"] == pytest.approx(1.0)
    assert empty["thresholds"] == {"iou": 0.0, "f2": 0.8}
    assert len(good["images"]) == 10 and {"id", "sha256", "label", "predicted", "iou"} <= set(good["images"][0])
    for key in ("fmtest_version", "created", "git_commit", "config", "environment"):
        assert key in data
    props = {p.get("name"): p.get("value")
             for p in ET.parse(suite.path / "junit.xml").iter("property")}
    for name in ("pipeline", "dataset", "task", "iou", "iou_ci_low", "iou_ci_high", "f2", "f2_ci_low",
                 "precision", "recall", "slip_rate_upper", "false_alarm_rate", "n_images", "n_defective",
                 "threshold_iou", "threshold_f2", "images_per_second", "model_sha256"):
        assert name in props, name


def test_scoreboard_is_printed_at_the_end(suite):
    result = run(suite)
    text = result.stdout.str()
    assert "fmtest scoreboard" in text
    board = text.split("fmtest scoreboard", 1)[1]
    assert "toy_threshold" in board and "toy_empty" in board


def test_unknown_names_are_usage_errors(suite):
    result = run(suite, "--fm-dataset=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown dataset 'nope'*known:*"])
    result = run(suite, "--fm-pipeline=toy_threshold,bogus")
    result.stderr.fnmatch_lines(["*unknown pipeline 'bogus'*"])


def test_missing_weights_skip_with_reason_or_error_when_strict(suite):
    result = run(suite, "--fm-pipeline=toy_noweights", "-rs", "--fm-results=out.json")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*toy.pth not found*fmtest weights download toy*"])
    case = json.loads((suite.path / "out.json").read_text())["cases"][0]
    assert case["outcome"] == "skipped" and "toy.pth" in case["message"]
    result = run(suite, "--fm-pipeline=toy_noweights", "--fm-strict")
    result.assert_outcomes(errors=1)


def test_corrupt_image_errors_one_case_and_keeps_the_others(suite):
    (suite.path / "fmtest.toml").write_text(CONFIG + "[datasets.toy]\ncorrupt_index = 3\n")
    result = run(suite, "--fm-pipeline=toy_threshold,toy_noweights", "--fm-results=out.json",
                 "--fm-report=board.html")
    result.assert_outcomes(errors=1, skipped=1)
    text = result.stdout.str()
    assert "/data/toy/test/003.png: cannot identify image file" in text
    assert "Traceback" not in text
    cases = json.loads((suite.path / "out.json").read_text())["cases"]
    assert {c["id"]: c["outcome"] for c in cases} == {"toy_threshold-toy": "error", "toy_noweights-toy": "skipped"}
    assert (suite.path / "board.html").exists()


def test_ctrl_c_keeps_the_cases_already_finished(suite, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TOY.parent))  # a subprocess: the interrupt must not reach this run
    result = suite.runpytest_subprocess("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache",
                                        "--fm-pipeline=toy_threshold,toy_interrupt", "--fm-results=out.json",
                                        "--fm-report=board.html")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    cases = json.loads((suite.path / "out.json").read_text())["cases"]
    assert [(c["id"], c["outcome"]) for c in cases] == [("toy_threshold-toy", "passed")]
    assert "toy_threshold-toy" in (suite.path / "board.html").read_text()


def test_scoreboard_links_each_case_to_its_history(suite):
    (suite.path / "fmtest.toml").write_text('history_url = "../history/history.html"\n' + CONFIG)
    run(suite, "--fm-pipeline=toy_threshold", "--fm-report=board.html")
    assert "href='../history/history.html#toy_threshold-toy'" in (suite.path / "board.html").read_text()


def test_xdist_workers_merge_into_one_results_file(suite, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TOY.parent))  # the workers are fresh processes
    result = suite.runpytest_subprocess("-n", "2", "-p", "no:randomly", "--fm-config=fmtest.toml",
                                        "--fm-no-cache", "--fm-results=out.json", "--junitxml=junit.xml",
                                        "-o", "junit_family=xunit1")  # properties per test case
    result.assert_outcomes(passed=1, failed=1)
    cases = json.loads((suite.path / "out.json").read_text())["cases"]
    assert sorted(c["id"] for c in cases) == ["toy_empty-toy", "toy_threshold-toy"]
    props = [p.get("name") for p in ET.parse(suite.path / "junit.xml").iter("property")]
    assert props.count("iou") == 2
