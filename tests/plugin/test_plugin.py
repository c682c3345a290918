"""The plugin end to end on a toy dataset: parametrization, thresholds, properties, outputs, errors."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET

import pytest
from fakes import REPO, SUITES, TESTS
from toy_fmtest import COMPARE, SUITE_CONFIG, toy_config
from toy_fmtest import run_suite as run

TOY = TESTS / "toy_fmtest.py"

CONFIG = SUITE_CONFIG





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


def test_a_ci_log_gets_one_line_per_case_and_no_progress_bar(suite):
    """Output that is not a terminal (a CI log): each finished case is one line; no bar floods the log."""
    result = run(suite)
    lines = [line for line in result.stdout.lines if line.startswith("fmtest: toy_")]
    assert len(lines) == 2 and lines[0].startswith("fmtest: toy_threshold-toy: PASS iou 1.000 in ")
    assert lines[0].endswith("(10 images)") and lines[1].startswith("fmtest: toy_empty-toy: ")
    assert "img/s]" not in result.stdout.str() + result.stderr.str()  # no tqdm bar
    assert not [line for line in run(suite, "-qq").stdout.lines if line.startswith("fmtest: toy_")]  # -qq: none


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
    (suite.path / "fmtest.toml").write_text(toy_config("[datasets.toy]\ncorrupt_index = 3\n"))
    result = run(suite, "--fm-pipeline=toy_threshold,toy_noweights", "--fm-results=out.json",
                 "--fm-report=board.html")
    result.assert_outcomes(errors=1, skipped=1)
    text = result.stdout.str()
    assert "/data/toy/train/003.png: cannot identify image file" in text  # the training copy is read first
    assert "Traceback" not in text
    cases = json.loads((suite.path / "out.json").read_text())["cases"]
    assert {c["id"]: c["outcome"] for c in cases} == {"toy_threshold-toy": "error", "toy_noweights-toy": "skipped"}
    assert (suite.path / "board.html").exists()


def test_ctrl_c_keeps_the_cases_already_finished(suite, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TOY.parent)]))  # a subprocess: the interrupt
    # must not reach this run
    result = suite.runpytest_subprocess("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache",
                                        "--fm-pipeline=toy_threshold,toy_interrupt", "--fm-results=out.json",
                                        "--fm-report=board.html", "--fm-markdown=board.md")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    cases = json.loads((suite.path / "out.json").read_text())["cases"]
    assert [(c["id"], c["outcome"]) for c in cases] == [("toy_threshold-toy", "passed")]
    data = json.loads((suite.path / "out.json").read_text())
    assert data["interrupted"] is True and data["unfinished"] == ["toy_interrupt-toy"]
    board = (suite.path / "board.html").read_text()
    assert "toy_threshold-toy" in board and "Interrupted run:</strong> 1 planned case did not finish" in board
    markdown = (suite.path / "board.md").read_text()
    assert markdown.startswith("### fmtest: ") and "interrupted: 1 case did not finish" in markdown.splitlines()[0]
    assert "**Interrupted run:** 1 planned case did not finish: `toy_interrupt-toy`" in markdown  # never read as finished
    result.stdout.fnmatch_lines(["INTERRUPTED: 1 case(s) did not finish: toy_interrupt-toy"])


def test_scoreboard_links_each_case_to_its_history(suite):
    (suite.path / "fmtest.toml").write_text(toy_config('history_url = "../history/history.html"'))
    run(suite, "--fm-pipeline=toy_threshold", "--fm-report=board.html")
    assert "href='../history/history.html#toy_threshold-toy'" in (suite.path / "board.html").read_text()


def test_xdist_workers_merge_into_one_results_file(suite, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TOY.parent)]))  # fresh processes
    result = suite.runpytest_subprocess("-n", "2", "-p", "no:randomly", "--fm-config=fmtest.toml",
                                        "--fm-no-cache", "--fm-results=out.json", "--junitxml=junit.xml",
                                        "-o", "junit_family=xunit1")  # properties per test case
    result.assert_outcomes(passed=1, failed=1)
    cases = json.loads((suite.path / "out.json").read_text())["cases"]
    assert sorted(c["id"] for c in cases) == ["toy_empty-toy", "toy_threshold-toy"]
    props = [p.get("name") for p in ET.parse(suite.path / "junit.xml").iter("property")]
    assert props.count("iou") == 2


def test_a_dead_api_errors_and_never_passes(suite):
    """Failed answers count as NOK, so on a mostly defective set a dead API would score a high F2."""
    (suite.path / "fmtest.toml").write_text(toy_config('default_pipelines = ["toy_dead_api"]',
                                                       "[thresholds]\niou = 0.0", "[datasets.toy]\nn_good = 1\nn_defective = 9"))
    result = run(suite, "--fm-results=out.json")
    result.assert_outcomes(errors=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*10 of 10 answers unusable (100.0% > max_invalid_answer_rate 0.0%); "
                                 "first: test/000: gave up after 2 attempt(s): HTTP 503*"])
    case = json.loads((suite.path / "out.json").read_text())["cases"][0]
    assert case["outcome"] == "error" and case["metrics"]["invalid_answer_rate"] == 1.0
    assert "f2" not in case["metrics"]  # the F2 above 0.8 that used to pass is withheld: no figure of a broken run


def test_an_allowed_share_of_invalid_answers_is_judged_normally(suite):
    (suite.path / "fmtest.toml").write_text(toy_config('default_pipelines = ["toy_flaky_api"]',
                                                       "[thresholds]\nmax_invalid_answer_rate = 0.5"))
    run(suite).assert_outcomes(failed=1)  # judged: 4 of 10 unusable are allowed, and IoU misses its threshold


@pytest.mark.parametrize("dataset,message", [
    ("n_defective = 0", "no defective images: iou undefined"),
    ("n_good = 0\nn_defective = 0", "no test images: nothing to judge"),
])
def test_degenerate_cases_say_what_is_wrong(suite, dataset, message):
    (suite.path / "fmtest.toml").write_text(toy_config('default_pipelines = ["toy_threshold"]',
                                                       f"[datasets.toy]\n{dataset}\n"))
    result = run(suite, "--fm-results=out.json")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*toy_threshold-toy*{message}*"])
    assert "nan is below" not in result.stdout.str()


@pytest.mark.parametrize("option", ["--fm-results", "--fm-report", "--junitxml"])
def test_an_unwritable_output_is_refused_before_any_case_runs(suite, option):
    (suite.path / "blocker").write_text("a file where a folder should be")
    result = run(suite, f"{option}=blocker/out.file")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*fmtest: {option}: cannot write *blocker/out.file: *blocker is a file, not a folder"])
    assert "passed" not in result.stdout.str()


def test_an_output_that_fails_at_the_end_costs_no_other_output(suite, monkeypatch):
    import fmtest.report.html

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fmtest.report.html, "write_html", broken)  # the disk fills while the run is going
    result = run(suite, "--fm-results=out.json", "--fm-report=board.html", "--fm-pipeline=toy_threshold")
    result.assert_outcomes(passed=1)
    assert json.loads((suite.path / "out.json").read_text())["cases"][0]["outcome"] == "passed"
    result.stdout.fnmatch_lines(["*fmtest scoreboard*", "*toy_threshold-toy*PASS*",
                                 "HTML scoreboard not written to *board.html: *No space left on device"])


def test_a_read_only_cache_folder_degrades_to_no_cache_with_one_warning(suite):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    cache = suite.path / "ro_cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        result = suite.runpytest("-p", "no:randomly", "--fm-config=fmtest.toml", f"--fm-cache={cache}", "-q")
    finally:
        cache.chmod(0o755)
    result.assert_outcomes(passed=1, failed=1)
    assert result.stdout.str().count("CacheUnavailableWarning") == 1


def test_fmtest_stays_out_of_an_unrelated_projects_test_run(pytester):
    """Installed beside other projects, the plugin must not import torch or any model library, nor build a run."""
    pytester.makepyfile(test_other="""
        import sys

        def test_nothing_heavy_was_imported():
            heavy = [m for m in ("torch", "scipy", "cv2", "segment_anything", "open_clip", "transformers",
                                 "fmtest.run.evaluator", "fmtest.run.evaluate") if m in sys.modules]
            assert heavy == []
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "fmtest scoreboard" not in result.stdout.str()




def test_a_candidate_is_compared_with_the_model_it_would_replace_on_the_same_images(suite):
    shutil.copy(SUITES / "test_comparison.py", suite.path / "test_comparison.py")
    (suite.path / "fmtest.toml").write_text(toy_config(COMPARE))
    result = run(suite, "test_comparison.py", "--fm-results=out.json", "--fm-report=board.html")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*toy_empty-vs-toy_threshold-toy: delta_iou = -1.000 (95% CI *) is below the "
                                 "threshold -0.050*new_slips = 4 is above the maximum 0*"])
    cases = {c["id"]: c for c in json.loads((suite.path / "out.json").read_text())["cases"]}
    same, worse = cases["toy_same-vs-toy_threshold-toy"], cases["toy_empty-vs-toy_threshold-toy"]
    assert same["outcome"] == "passed" and same["metrics"]["delta_iou"] == 0.0 and same["metrics"]["new_slips"] == 0
    assert worse["task"] == "comparison" and worse["metrics"]["new_slips"] == 4.0
    for name in ("delta_iou", "delta_iou_ci_low", "delta_iou_ci_high", "delta_f2", "delta_f2_ci_low",
                 "delta_f2_ci_high", "fixed_slips", "new_false_alarms", "fixed_false_alarms"):
        assert name in worse["metrics"], name
    assert worse["metrics"]["delta_iou_ci_high"] < 0
    changes = worse["comparison"]["image_changes"]
    assert [c["change"] for c in changes] == ["new_slips"] * 4 and changes[0]["reference"] == "NOK"
    board = (suite.path / "board.html").read_text()
    assert "Candidate vs reference" in board and "Images whose verdict changes (4, new slips first)" in board
