"""A hostile user's faults, end to end through `pytest suites`: one realistic fault per test, asserting what the
user sees (outcome, exit status, the one line that explains, the files written).

The matrix (issue "nothing passes silently, nothing is lost, nothing leaks"):
- a broken model or run never passes: an API outage under the robustness suite, a model that answers NOK for
  everything, no usable answer whatever `max_invalid_answer_rate` allows, a threshold the case cannot record,
  a run that judged nothing;
- nothing computed is lost and nothing stale is served: SIGTERM, an edited pipeline's cached predictions,
  outputs that could not be written at the end or that would overwrite each other;
- faults name themselves: a crash inside a user's `predict`, a count mismatch, a Ray address where nothing
  answers, a symbolic link out of the data root, inverted and empty masks;
- a password in a URL appears in no output.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from fakes import REPO, SUITES, TESTS, make_industrialsat
from PIL import Image
from toy_fmtest import run_suite as run
from toy_fmtest import toy_config

SECRET = "S3cr3t-pa55"


def configure(suite, *snippets: str) -> None:
    (suite.path / "fmtest.toml").write_text(toy_config(*snippets))


def results(suite, name: str = "out.json") -> dict:
    return json.loads((suite.path / name).read_text())


def cases(suite, name: str = "out.json") -> dict[str, dict]:
    return {c["id"]: c for c in results(suite, name)["cases"]}


# -- a broken model or run never passes ---------------------------------------------------------------------

ROBUSTNESS = '[robustness]\ninclude_remote_api = true\nperturbations = ["brightness"]\n'


@pytest.fixture
def robustness_suite(suite):
    shutil.copy(SUITES / "test_robustness.py", suite.path / "test_robustness.py")
    return suite


@pytest.mark.parametrize("pipeline, message", [
    ("toy_dead_api", "the unperturbed case toy_dead_api-toy could not be judged: 10 of 10 answers unusable"),
    ("toy_outage_when_perturbed", "at brightness=0.05: 10 of 10 answers unusable (100.0% > max_invalid_answer_rate "
                                  "0.0%); first: test/000: gave up after 2 attempt(s): HTTP 503"),
])
def test_robustness_of_an_api_during_an_outage_errors(robustness_suite, pipeline, message):
    configure(robustness_suite, f'default_pipelines = ["{pipeline}"]', ROBUSTNESS)
    result = run(robustness_suite, "test_robustness.py", "--fm-results=out.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=1)
    case = cases(robustness_suite)[f"{pipeline}-toy-brightness"]
    assert case["outcome"] == "error" and message in case["message"]
    assert "flip_rate" not in case["metrics"]  # no flip rate of a broken run may be read as a result
    result.stdout.fnmatch_lines([f"*{pipeline}-toy-brightness: *{message[:40]}*"])


def test_a_model_that_answers_nok_for_everything_is_not_called_robust(robustness_suite):
    configure(robustness_suite, 'default_pipelines = ["toy_always_nok"]', ROBUSTNESS,
              '[thresholds."toy_always_nok-toy"]\niou = 0.0\nf2 = 0.0')
    result = run(robustness_suite, "test_robustness.py", "--fm-results=out.json", "-rs")
    result.assert_outcomes(skipped=1)
    case = cases(robustness_suite)["toy_always_nok-toy-brightness"]
    assert case["outcome"] == "skipped" and case["metrics"]["flip_rate"] == 0.0
    assert case["message"].startswith("not meaningful: the unperturbed run flags 100.0% of the good images NOK, "
                                      "above the ceiling 50.0% ([robustness] max_clean_false_alarm_rate)")
    configure(robustness_suite, 'default_pipelines = ["toy_always_nok"]', ROBUSTNESS,
              '[thresholds."toy_always_nok-toy"]\niou = 0.0\nf2 = 0.0', "[robustness]\nmax_clean_false_alarm_rate = 1.0")
    run(robustness_suite, "test_robustness.py").assert_outcomes(passed=1)  # the ceiling is the user's to raise


def test_no_usable_answer_is_an_error_whatever_max_invalid_answer_rate_allows(suite):
    configure(suite, 'default_pipelines = ["toy_dead_api"]', "[thresholds]\nmax_invalid_answer_rate = 1.0")
    result = run(suite, "--fm-results=out.json")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    case = cases(suite)["toy_dead_api-toy"]
    assert case["outcome"] == "error" and case["message"].startswith(
        "no usable answer: 10 of 10 answers unusable, and a case without one is never judged, whatever "
        "max_invalid_answer_rate allows; first: test/000: gave up after 2 attempt(s)")
    assert "iou" not in case["metrics"]


def test_a_case_threshold_on_a_metric_the_case_does_not_record_is_refused_at_start(suite):
    configure(suite, 'default_pipelines = ["toy_classifier"]', '[thresholds."toy_classifier-toy"]\niou = 0.99')
    result = run(suite, "--fm-results=out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['*fmtest.toml: [[]thresholds."toy_classifier-toy"[]] iou: case toy_classifier-toy '
                                 "is scored as classification and records no iou (recorded by segmentation cases)"])
    assert not (suite.path / "out.json").exists()
    configure(suite, 'default_pipelines = ["toy_classifier"]', '[thresholds."toy_classifier-toy"]\nf2 = 0.5')
    run(suite).assert_outcomes(passed=1)  # a metric it records is fine


def test_a_run_that_judged_nothing_says_so_and_fails_when_judging_is_required(suite):
    result = run(suite, "--fm-pipeline=toy_noweights")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["NO CASE WAS JUDGED (1 skipped): a run that tested nothing is not a pass: "
                                 "--fm-require-judged makes it fail"])
    result = run(suite, "--fm-pipeline=toy_noweights", "--fm-require-judged")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["NO CASE WAS JUDGED (1 skipped): so this run fails (--fm-require-judged)"])
    result = run(suite, "--fm-pipeline=toy_threshold,toy_noweights", "--fm-require-judged")
    assert result.ret == pytest.ExitCode.OK and "NO CASE WAS JUDGED" not in result.stdout.str()


# -- nothing computed is lost, nothing stale is served ------------------------------------------------------

def test_sigterm_writes_every_output_marked_interrupted_and_leaves_no_temporary_store(suite, monkeypatch, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))  # a subprocess, for the signal
    monkeypatch.setenv("TMPDIR", str(temp))
    result = suite.runpytest_subprocess("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache",
                                        "--fm-pipeline=toy_threshold,toy_terminate", "--fm-results=out.json",
                                        "--fm-report=board.html", "--fm-markdown=board.md", "--junitxml=junit.xml",
                                        timeout=120)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = results(suite)
    assert [(c["id"], c["outcome"]) for c in data["cases"]] == [("toy_threshold-toy", "passed")]
    assert data["interrupted"] is True and data["unfinished"] == ["toy_terminate-toy"]
    assert "Interrupted run:</strong> 1 planned case did not finish" in (suite.path / "board.html").read_text()
    board = (suite.path / "board.md").read_text()
    assert board.startswith("### fmtest: 🟣 ERROR: 1 case, 1 passed; interrupted: 1 case did not finish")
    assert "**Interrupted run:** 1 planned case did not finish: `toy_terminate-toy`" in board
    assert ET.parse(suite.path / "junit.xml").getroot() is not None
    result.stdout.fnmatch_lines(["INTERRUPTED: 1 case(s) did not finish: toy_terminate-toy"])
    assert not list(temp.glob("fmtest-results-*"))  # the run's temporary store of finished cases is gone


USER_PIPELINE = '''
import numpy as np
from fmtest.pipelines.base import Pipeline, Prediction


class Finder(Pipeline):
    name, task = "finder", "segmentation"

    def predict(self, samples):
        return [Prediction.from_mask(s.image > LEVEL, score=float(s.image.max())) for s in samples]


LEVEL = 0.6
'''


def test_an_edited_user_pipeline_is_predicted_again_not_served_from_the_cache(suite):
    (suite.path / "userpipe.py").write_text(USER_PIPELINE)
    configure(suite, '[pipelines.finder]\nclass = "userpipe:Finder"', 'default_pipelines = ["finder"]')
    args = ("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-cache=cache", "-q", "--fm-results=out.json")
    suite.runpytest(*args).assert_outcomes(passed=1)
    assert cases(suite)["finder-toy"]["metrics"]["iou"] == pytest.approx(1.0)
    (suite.path / "userpipe.py").write_text(USER_PIPELINE.replace("LEVEL = 0.6", "LEVEL = 0.99"))  # finds nothing now
    suite.runpytest(*args).assert_outcomes(failed=1)
    case = cases(suite)["finder-toy"]
    assert case["metrics"]["iou"] == 0.0 and case["cache"] == {"hits": 0, "predicted": 10}


@pytest.mark.parametrize("option", ["--fm-markdown", "--fm-metrics"])
def test_every_output_is_checked_before_any_case_runs(suite, option):
    (suite.path / "blocker").write_text("a file where a folder should be")
    result = run(suite, f"{option}=blocker/out.file", "--fm-results=out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*fmtest: {option}: cannot write *blocker/out.file: *blocker is a file, not a folder"])
    assert not (suite.path / "out.json").exists()


@pytest.mark.parametrize("first, second", [("--fm-results", "--fm-report"), ("--fm-results", "--fm-markdown"),
                                           ("--fm-report", "--junitxml")])
def test_two_outputs_on_one_path_are_refused(suite, first, second):
    result = run(suite, f"{first}=out/same.file", f"{second}=out/same.file")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*fmtest: {second} and {first} both write */out/same.file: one would overwrite the "
                                 "other; give each output its own file"])


def test_a_file_where_the_reports_image_folder_goes_is_refused_at_start(suite):
    (suite.path / "board_files").write_text("in the way")
    result = run(suite, "--fm-report=board.html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*fmtest: --fm-report: cannot write the report's image folder *board_files: a file "
                                 "is in the way of that folder"])


# -- faults name themselves ---------------------------------------------------------------------------------

CRASHING = '''
import numpy as np
from fmtest.pipelines.base import Pipeline, Prediction


class Crash(Pipeline):
    name, task = "crash", "segmentation"

    def predict(self, samples):
        table = {"known": 1}
        return table["missing-key"]


class TooMany(Pipeline):
    name, task = "toomany", "segmentation"

    def predict(self, samples):
        return [Prediction.from_mask(np.zeros(s.image.shape[:2], bool)) for s in samples] * 2
'''


def test_a_crash_in_a_users_predict_and_a_count_mismatch_name_file_line_and_message(suite):
    (suite.path / "userpipe.py").write_text(CRASHING)
    configure(suite, '[pipelines.crash]\nclass = "userpipe:Crash"', '[pipelines.toomany]\nclass = "userpipe:TooMany"',
              'default_pipelines = ["crash", "toomany"]')
    result = run(suite, "--fm-results=out.json", "--fm-report=board.html")
    result.assert_outcomes(errors=2)
    crash = "userpipe.py:11: KeyError: 'missing-key'"
    count = "pipeline toomany returned 16 predictions for 8 images (expected one per image, in order)"
    found = cases(suite)
    assert found["crash-toy"]["message"] == crash and found["toomany-toy"]["message"] == count
    board = (suite.path / "board.html").read_text()
    assert crash.replace("'", "&#x27;") in board and count in board
    result.stdout.fnmatch_lines(["crash-toy *ERROR", f"*{crash}", "toomany-toy *ERROR", "*pipeline toomany returned 16*"])


def test_a_ray_address_where_nothing_answers_fails_at_once_naming_it(suite):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = run(suite, "--fm-executor=ray", f"--fm-ray-address=ray://fmuser:{SECRET}@127.0.0.1:{port}")
    assert time.monotonic() - started < 60  # Ray alone waits minutes for a head node
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*fmtest: Ray cluster at ray://<redacted>@127.0.0.1:{port} (--fm-ray-address, "
                                 f"[[]executor[]] address): nothing answers at 127.0.0.1:{port} within 10 s (*); "
                                 "start it (`ray start --head`) or fix the address"])
    assert SECRET not in result.stdout.str() + result.stderr.str()


@pytest.fixture
def parts(tmp_path):
    """An industrialsat folder (labels.csv layout) under a data root, scored by toy_threshold."""
    root = tmp_path / "data"
    folder = make_industrialsat(root, n_good=3, n_defective=3, size=48, bit_depth=8, n_train=2)
    return root, folder


def _run_on(suite, root, *args):
    configure(suite, 'default_pipelines = ["toy_threshold"]', 'default_datasets = ["industrialsat"]',
              "[guardrails]\nalignment = false")
    return run(suite, f"--fm-data-root={root}", "--fm-results=out.json", *args)


def test_a_symbolic_link_out_of_the_data_root_is_refused_naming_it(suite, parts, tmp_path):
    root, folder = parts
    outside = tmp_path / "elsewhere.png"
    image = folder / "images" / "good_001.png"
    shutil.copy(image, outside)
    image.unlink()
    image.symlink_to(outside)
    result = _run_on(suite, root)
    result.assert_outcomes(errors=1)
    message = cases(suite)["toy_threshold-industrialsat"]["message"]
    assert message == (f"{image}: a symbolic link to {outside}, outside the data root {root}: refused; set "
                       "follow_outside_links = true (--fm-follow-outside-links) to read files there")
    _run_on(suite, root, "--fm-follow-outside-links")
    assert cases(suite)["toy_threshold-industrialsat"]["outcome"] != "error"


def _write_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def test_an_inverted_mask_is_a_data_quality_finding_naming_the_file(suite, parts):
    root, folder = parts
    mask_file = sorted((folder / "masks").iterdir())[0]
    mask = np.asarray(Image.open(mask_file)) > 127
    _write_mask(mask_file, ~mask)  # defect black, background white
    result = _run_on(suite, root)
    finding = next(f for f in cases(suite)["toy_threshold-industrialsat"]["data_quality"]
                   if f["kind"] == "mask_covers_image")
    assert finding["detail"].startswith(f"{mask_file}: the defect mask covers ")
    assert "an inverted mask (defect black, background white)?" in finding["detail"]
    result.stdout.fnmatch_lines(["data quality, industrialsat: *1 mask covers image*"])


def test_images_left_out_of_iou_are_counted_in_every_report(suite, parts):
    root, folder = parts
    empty = sorted((folder / "masks").iterdir())[:2]
    for mask_file in empty:
        _write_mask(mask_file, np.zeros((48, 48), bool))
    (suite.path / "fmtest.toml").write_text(toy_config('default_pipelines = ["toy_threshold"]',
                                                       'default_datasets = ["industrialsat"]',
                                                       '[datasets.industrialsat]\nempty_nok_masks = "exclude"',
                                                       "[guardrails]\nenabled = false"))
    result = run(suite, f"--fm-data-root={root}", "--fm-results=out.json", "--fm-report=board.html")
    case = cases(suite)["toy_threshold-industrialsat"]
    excluded = [f for f in case["data_quality"] if f["kind"] == "excluded_from_iou"]
    assert sorted(f["detail"].split(":")[0] for f in excluded) == [str(p) for p in empty]
    result.stdout.fnmatch_lines(["data quality, industrialsat: 2 excluded from iou"])
    board = (suite.path / "board.html").read_text()
    assert "excluded_from_iou" in board and str(empty[0]) in board


def test_every_empty_mask_is_named_in_one_run(suite, parts):
    root, folder = parts
    masks = sorted((folder / "masks").iterdir())
    for mask_file in masks:
        _write_mask(mask_file, np.zeros((48, 48), bool))
    result = _run_on(suite, root)
    result.assert_outcomes(errors=1)
    message = cases(suite)["toy_threshold-industrialsat"]["message"]
    assert "3 of the 3 defective test images have one: " in message
    assert all(f"({m})" in message for m in masks)


# -- a password in a URL appears in no output ---------------------------------------------------------------

LEAKY = f'''
from fmtest.pipelines.base import Pipeline, Prediction

URL = "http://fmuser:{SECRET}@gateway.local:8080/v1"


class Leaky(Pipeline):
    name, task = "leaky", "segmentation"

    def predict(self, samples):
        return [Prediction.failed(f"HTTP 503 from {{URL}}") for s in samples]


class LeakyCrash(Pipeline):
    name, task = "leaky_crash", "segmentation"

    def predict(self, samples):
        raise ConnectionError(f"cannot reach {{URL}}")
'''


def test_a_password_in_a_url_appears_in_no_output(suite, monkeypatch):
    (suite.path / "userpipe.py").write_text(LEAKY)
    configure(suite, '[pipelines.leaky]\nclass = "userpipe:Leaky"', '[pipelines.leaky_crash]\nclass = '
              '"userpipe:LeakyCrash"', 'default_pipelines = ["leaky", "leaky_crash"]')
    # a process of its own: MLflow, once imported and failed, leaves state that later in-process runs would inherit
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))
    result = suite.runpytest_subprocess("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache", "-q",
                                        "--fm-results=out.json", "--fm-report=board.html", "--fm-markdown=board.md",
                                        "--fm-metrics=metrics.json", "--junitxml=junit.xml", "-o",
                                        "junit_family=xunit1", f"--fm-mlflow=http://fmuser:{SECRET}@127.0.0.1:9/")
    result.assert_outcomes(errors=2)
    written = {name: (suite.path / name).read_text() for name in ("out.json", "board.html", "board.md",
                                                                    "metrics.json", "junit.xml")}
    written["terminal"] = result.stdout.str() + result.stderr.str()
    assert all(SECRET not in text for text in written.values()), [k for k, v in written.items() if SECRET in v]
    assert "http://<redacted>@gateway.local:8080/v1" in written["out.json"]
    assert "fmtest: warning: could not log to MLflow at http://<redacted>@127.0.0.1:9/" in written["terminal"]
