"""One verdict however a run is made: in one process, sharded 2 or 3 ways and merged with `fmtest merge`,
against a baseline; for plain cases, cross-validated ones, candidate-vs-current pairs, and robustness
cases (refused when a shard starts). And a case that cannot be judged shows no figure anywhere."""

from __future__ import annotations

import json
import shutil

import pytest
from toy_fmtest import COMPARE, SUITES, toy_config
from toy_fmtest import run_suite as run

from fmtest.cli import main

PIPELINES = "--fm-pipeline=toy_threshold,toy_empty,toy_learned,toy_same"  # toy_learned: 2-fold cross-validation
TIMING = {"images_per_second", "fit_seconds"}
ZERO_THRESHOLDS = "[thresholds]\niou = 0.0\nf2 = 0.0"  # only a baseline can fail a case
WORSE = "[pipelines.toy_threshold]\nlevel = 0.95\n"  # finds no defect: IoU 1.0 -> 0.0


def _cases(path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads(path.read_text())["cases"]}


def _comparable(case: dict) -> dict:
    """A case without what may differ between the ways of running it: timing (and when it started), thumbnails, the shard record."""
    case = {k: v for k, v in case.items() if k not in ("duration_s", "started", "thumbnails")}
    case["metrics"] = {k: v for k, v in case["metrics"].items() if k not in TIMING}
    for section in ("shard", "shard_sides", "cache"):
        case.pop(section, None)
    return case


@pytest.fixture
def pairs(suite):
    """The toy suite with its comparison file and two pairs: a copy of the reference, and a worse candidate."""
    shutil.copy(SUITES / "test_comparison.py", suite.path / "test_comparison.py")
    (suite.path / "fmtest.toml").write_text(toy_config(COMPARE))
    return suite


def _merge(suite, names, *extra) -> int:
    return main(["merge", *(str(suite.path / n) for n in names), "--results", str(suite.path / "merged.json"), *extra])


@pytest.mark.parametrize("n", [2, 3])
def test_shards_merged_equal_the_run_in_one_process_for_every_case_kind(pairs, n):
    run(pairs, PIPELINES, "--fm-results=whole.json").assert_outcomes(passed=4, failed=2)
    for k in range(1, n + 1):
        run(pairs, PIPELINES, f"--fm-shard={k}/{n}", f"--fm-results=s{k}.json")
    assert _merge(pairs, [f"s{k}.json" for k in range(n, 0, -1)]) == 1  # shards in any order
    whole, merged = _cases(pairs.path / "whole.json"), _cases(pairs.path / "merged.json")
    assert list(merged) == list(whole)
    for case_id, case in whole.items():
        assert _comparable(merged[case_id]) == _comparable(case), case_id
    worse = merged["toy_empty-vs-toy_threshold-toy"]  # compared again from both merged cases, not a shard's share
    assert worse["outcome"] == "failed" and worse["metrics"]["new_slips"] == 4
    assert [c["change"] for c in worse["comparison"]["image_changes"]] == ["new_slips"] * 4
    assert "new_slips = 4 is above the maximum 0" in worse["message"]
    assert merged["toy_same-vs-toy_threshold-toy"]["outcome"] == "passed"
    assert len(merged["toy_learned-toy"]["breakdown"]) >= 2  # each fold's figures, from the merged rows


def test_a_regression_against_the_baseline_fails_in_process_and_after_merge(suite):
    (suite.path / "fmtest.toml").write_text(toy_config(ZERO_THRESHOLDS))
    run(suite, "--fm-pipeline=toy_threshold", "--fm-results=base.json").assert_outcomes(passed=1)
    (suite.path / "fmtest.toml").write_text(toy_config(ZERO_THRESHOLDS, WORSE))

    result = run(suite, "--fm-pipeline=toy_threshold", "--fm-baseline=base.json", "--fm-results=now.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*regression against the baseline: iou dropped 1.000 (1.000 -> 0.000)*"])
    now = _cases(suite.path / "now.json")["toy_threshold-toy"]
    assert now["outcome"] == "failed" and now["baseline"]["changes"]["iou"]["regressed"] is True

    for k in (1, 2):  # the shards are judged at the merge, against the same baseline, not each on its half
        run(suite, "--fm-pipeline=toy_threshold", f"--fm-shard={k}/2", "--fm-baseline=base.json",
            f"--fm-results=s{k}.json")
        assert _cases(suite.path / f"s{k}.json")["toy_threshold-toy"]["baseline"] is None
    assert _merge(suite, ["s1.json", "s2.json"], "--baseline", str(suite.path / "base.json")) == 1
    merged = _cases(suite.path / "merged.json")["toy_threshold-toy"]
    assert merged["outcome"] == "failed" and merged["message"] == now["message"]
    assert _comparable(merged) == _comparable(now)
    assert _merge(suite, ["s1.json", "s2.json"]) == 0  # without the baseline nothing fails: the regression did


def test_robustness_cases_are_refused_when_a_shard_starts_not_after_the_work(suite):
    shutil.copy(SUITES / "test_robustness.py", suite.path / "test_robustness.py")
    result = run(suite, "test_robustness.py", "--fm-shard=1/2", "--fm-results=out.json")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # stopped while collecting: no case ran
    result.stdout.fnmatch_lines(["*--fm-shard=1/2: robustness cases compare every image with its perturbed copies "
                                 "and are not sharded; run test_robustness.py unsharded*"])
    assert not (suite.path / "out.json").exists()


def test_a_case_that_cannot_be_judged_shows_no_figure_in_any_output(suite):
    """Every answer failed: F2 would be high (failed answers count as NOK). The case errors, and its F2 is
    in none of the outputs: JSON, JUnit, the metrics file, the Markdown page."""
    (suite.path / "fmtest.toml").write_text(toy_config('default_pipelines = ["toy_dead_api"]',
                                                       "[datasets.toy]\nn_good = 1\nn_defective = 9"))
    result = run(suite, "--fm-results=out.json", "--fm-metrics=metrics.json", "--fm-markdown=board.md",
                 "--junitxml=junit.xml")
    result.assert_outcomes(errors=1)
    case = _cases(suite.path / "out.json")["toy_dead_api-toy"]
    assert case["outcome"] == "error" and "f2" not in case["metrics"] and not case["breakdown"]
    assert case["risk"] is None
    assert set(json.loads((suite.path / "metrics.json").read_text())["toy_dead_api-toy"]) <= {
        "n_images", "n_defective", "invalid_answer_rate", "images_per_second", "fit_seconds"}
    assert 'name="f2"' not in (suite.path / "junit.xml").read_text()
    row = next(line for line in (suite.path / "board.md").read_text().splitlines() if line.startswith("| `toy_dead_api-toy`"))
    assert "ERROR" in row and "not judged" in row and "0.9" not in row


def test_merged_shards_count_every_cache_hit_and_the_training_scores_reach_the_risk_table(suite):
    """Shards served from a cache filled by a whole run: the merged case counts each shard's hits, and the
    risk table's budget figure (which needs the good training images' scores) is there as in one process."""
    (suite.path / "fmtest.toml").write_text(toy_config('default_pipelines = ["toy_mapped"]'))
    cached = ("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-cache=cache", "-q")
    suite.runpytest(*cached, "--fm-results=whole.json")
    for k in (1, 2):
        suite.runpytest(*cached, f"--fm-shard={k}/2", f"--fm-results=s{k}.json")
    _merge(suite, ["s1.json", "s2.json"])
    whole, merged = _cases(suite.path / "whole.json"), _cases(suite.path / "merged.json")
    case = merged["toy_mapped-toy"]
    assert case["cache"] == {"hits": case["metrics"]["n_images"], "predicted": 0}
    assert whole["toy_mapped-toy"]["risk"]["recall_at_false_alarm_budget"] is not None
    assert case["risk"] == whole["toy_mapped-toy"]["risk"]


def test_an_api_case_counts_only_what_this_run_spent(suite):
    """A rerun served from the cache sent no request: its usage is nothing, not the first run's bill again."""
    (suite.path / "fmtest.toml").write_text(toy_config('default_pipelines = ["toy_paid_api"]'))
    cached = ("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-cache=cache", "-q")
    suite.runpytest(*cached, "--fm-results=cold.json")
    suite.runpytest(*cached, "--fm-results=warm.json")
    cold, warm = _cases(suite.path / "cold.json")["toy_paid_api-toy"], _cases(suite.path / "warm.json")["toy_paid_api-toy"]
    assert cold["usage"] == {"prompt_tokens": 10.0 * cold["metrics"]["n_images"]}
    assert warm["cache"]["predicted"] == 0 and not warm["usage"].get("prompt_tokens")
