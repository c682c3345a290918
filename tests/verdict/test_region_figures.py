"""Region figures end to end: AU-PRO, pixel AUROC and AP, recall by defect size of a toy segmentation case whose
pipeline gives a score map. They equal an independent computation, come out bit for bit the same from a warm
cache and from two merged shards, are shown (JSON, HTML, Markdown, terminal) and not gated unless a threshold
says so, and are absent, never NaN, where they cannot be computed or the case cannot be judged."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from toy_fmtest import ToyRegions, region_sample, toy_config
from toy_fmtest import run_suite as run

from fmtest.cli import main
from fmtest.metrics.specs import REGION_METRICS

REGIONS = """
default_datasets = ["toy_regions"]
default_pipelines = ["toy_mapped"]
[datasets.toy_regions]
class = "toy_fmtest:ToyRegions"
[thresholds]
iou = 0.0
f2 = 0.0
[guardrails]
enabled = false
"""
CASE = "toy_mapped-toy_regions"
LEVEL = 0.6  # ToyMapped's default level: its score map is the image in units of it


@pytest.fixture
def regions(suite):
    (suite.path / "fmtest.toml").write_text(toy_config(REGIONS))
    return suite


def _case(path, case_id=CASE) -> dict:
    return next(c for c in json.loads(path.read_text())["cases"] if c["id"] == case_id)


def _region_part(case: dict) -> tuple[dict, dict, list]:
    """What the region figures are: the three metrics, the section, every image's summary."""
    return ({k: case["metrics"][k] for k in REGION_METRICS if k in case["metrics"]}, case["regions"],
            [i["region"] for i in case["images"]])


def _exact_au_pro(maps, masks, fpr_limit=0.3) -> float:
    """AU-PRO from every pixel's score, written for this test: one threshold per distinct score."""
    from scipy import ndimage

    good = np.sort(np.concatenate([m[~g] for m, g in zip(maps, masks, strict=True)]))
    regions = []
    for m, g in zip(maps, masks, strict=True):
        labels, n = ndimage.label(g, structure=np.ones((3, 3)))
        regions += [np.sort(m[labels == r]) for r in range(1, n + 1)]
    thresholds = np.unique(np.concatenate([good, *regions]))[::-1]  # highest first
    fpr = np.concatenate([[0.0], (good.size - np.searchsorted(good, thresholds)) / good.size])
    pro = np.concatenate([[0.0], np.mean([(r.size - np.searchsorted(r, thresholds)) / r.size for r in regions],
                                         axis=0)])
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    cut = np.flatnonzero(~keep)[0]  # the first point beyond the limit: interpolate there
    y_limit = pro[cut - 1] + (pro[cut] - pro[cut - 1]) * (fpr_limit - fpr[cut - 1]) / (fpr[cut] - fpr[cut - 1])
    x, y = np.append(x, fpr_limit), np.append(y, y_limit)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / fpr_limit)


def test_a_toy_cases_region_figures_equal_an_independent_computation_and_every_report_shows_them(regions):
    result = run(regions, "--fm-results=out.json", "--fm-report=board.html", "--fm-markdown=board.md")
    result.assert_outcomes(passed=1)
    case = _case(regions.path / "out.json")
    samples = [region_sample(i, ToyRegions.N_GOOD) for i in range(ToyRegions.N_GOOD + ToyRegions.N_DEFECTIVE)]
    maps = [s.image / LEVEL for s in samples]
    truth = np.concatenate([s.mask.ravel() for s in samples])
    scores = np.concatenate([m.ravel() for m in maps])
    bounds = case["regions"]["error_bounds"]

    assert abs(case["metrics"]["pixel_auroc"] - roc_auc_score(truth, scores)) <= bounds["pixel_auroc"] + 1e-12
    assert abs(case["metrics"]["pixel_ap"] - average_precision_score(truth, scores)) <= bounds["pixel_ap"] + 1e-12
    exact = _exact_au_pro([m.astype(np.float64) for m in maps], [s.mask for s in samples])
    assert exact < 0.99  # image 1's half-dark region: not a trivially perfect curve
    assert abs(case["metrics"]["au_pro"] - exact) <= bounds["au_pro"] + 1e-12
    assert max(bounds.values()) < 0.01
    # recall by size, by hand (region_sample): under 16 pixels 2 of 4 found, 16-63 1 of 1, 64-255 4 of 4
    assert [(r["min_area"], r["max_area"], r["n_regions"], r["n_found"]) for r in case["regions"]["recall_by_size"]] \
        == [(1, 16, 4, 2), (16, 64, 1, 1), (64, 256, 4, 4)]
    assert case["regions"]["recall_by_size"][0]["recall"] == 0.5
    assert (case["regions"]["n_images"], case["regions"]["n_regions"], case["regions"]["fpr_limit"]) == (6, 9, 0.3)
    assert case["thresholds"] == {"iou": 0.0, "f2": 0.0}  # shown, not gated by default

    html = (regions.path / "board.html").read_text()
    assert "Region figures (shown, not gated)" in html and "AU-PRO" in html and "pixel AUROC (threshold-free)" in html
    assert "region-sizes" in html and "2 / 4" in html
    row = next(line for line in (regions.path / "board.md").read_text().splitlines() if line.startswith(f"| `{CASE}`"))
    assert f"AU-PRO {case['metrics']['au_pro']:.3f}" in row and "(shown, not gated)" in row
    result.stdout.fnmatch_lines([f"*au_pro {case['metrics']['au_pro']:.3f} (not gated)*"])


def test_a_warm_rerun_gives_the_cold_runs_region_figures_bit_for_bit(regions):
    common = ("-p", "no:randomly", "-q", "--fm-config=fmtest.toml", "--fm-cache=cache")
    regions.runpytest(*common, "--fm-results=cold.json").assert_outcomes(passed=1)
    regions.runpytest(*common, "--fm-results=warm.json").assert_outcomes(passed=1)
    cold, warm = _case(regions.path / "cold.json"), _case(regions.path / "warm.json")
    assert warm["cache"] == {"hits": 6, "predicted": 0}  # the cache keeps the score map only as the viewer draws it
    assert json.dumps(_region_part(warm)) == json.dumps(_region_part(cold)) and len(_region_part(cold)[0]) == 3

    # a cached answer without its region summary (an older cache, a relabelled mask) is predicted again
    with sqlite3.connect(regions.path / "cache" / "predictions.sqlite") as db:
        db.execute("DELETE FROM region_summaries WHERE image_sha256 IN "
                   "(SELECT image_sha256 FROM region_summaries ORDER BY image_sha256 LIMIT 2)")
    regions.runpytest(*common, "--fm-results=again.json").assert_outcomes(passed=1)
    again = _case(regions.path / "again.json")
    assert again["cache"] == {"hits": 4, "predicted": 2}
    assert json.dumps(_region_part(again)) == json.dumps(_region_part(cold))


def test_two_shards_merged_give_the_one_process_region_figures(regions):
    run(regions, "--fm-results=whole.json").assert_outcomes(passed=1)
    for k in (1, 2):
        run(regions, f"--fm-shard={k}/2", f"--fm-results=s{k}.json")
    assert main(["merge", str(regions.path / "s2.json"), str(regions.path / "s1.json"),
                 "--results", str(regions.path / "merged.json")]) == 0
    whole, merged = _case(regions.path / "whole.json"), _case(regions.path / "merged.json")
    shard = _case(regions.path / "s1.json")
    assert 0 < len(shard["images"]) < len(whole["images"])
    assert json.dumps(_region_part(merged)) == json.dumps(_region_part(whole)) and len(_region_part(whole)[0]) == 3


def test_a_threshold_on_au_pro_gates_and_one_the_case_cannot_check_is_an_error(regions):
    (regions.path / "fmtest.toml").write_text(toy_config(REGIONS, f'[thresholds."{CASE}"]\nau_pro = 0.99\n'
                                                         '[thresholds."toy_threshold-toy_regions"]\nau_pro = 0.5'))
    result = run(regions, "--fm-pipeline=toy_mapped,toy_threshold", "--fm-results=out.json")
    result.assert_outcomes(failed=1, errors=1)
    gated = _case(regions.path / "out.json")
    assert gated["outcome"] == "failed" and gated["thresholds"]["au_pro"] == 0.99
    assert gated["message"] == f"au_pro = {gated['metrics']['au_pro']:.3f} is below the threshold 0.990"
    unmapped = _case(regions.path / "out.json", "toy_threshold-toy_regions")  # no score map: nothing to check
    assert unmapped["outcome"] == "error" and "au_pro has a threshold but was not computed" in unmapped["message"]

    (regions.path / "fmtest.toml").write_text(toy_config(REGIONS, f'[thresholds."{CASE}"]\nau_pro = 0.5'))
    run(regions).assert_outcomes(passed=1)


def test_figures_are_absent_without_a_score_map_or_a_judgeable_case_and_a_nan_map_is_an_unusable_answer(regions):
    result = run(regions, "--fm-pipeline=toy_threshold,toy_flaky_mapped,toy_nan_mapped", "--fm-results=out.json",
                 "--fm-report=board.html", "--fm-markdown=board.md")
    result.assert_outcomes(passed=1, errors=2)
    plain = _case(regions.path / "out.json", "toy_threshold-toy_regions")  # no score map
    assert plain["outcome"] == "passed" and plain["regions"] is None
    assert not set(REGION_METRICS) & set(plain["metrics"]) and all(i["region"] is None for i in plain["images"])
    flaky = _case(regions.path / "out.json", "toy_flaky_mapped-toy_regions")  # unusable answers: not judged
    assert flaky["outcome"] == "error" and flaky["regions"] is None
    assert not set(REGION_METRICS) & set(flaky["metrics"])
    assert any(i["region"] is not None for i in flaky["images"])  # measured, withheld
    nan = _case(regions.path / "out.json", "toy_nan_mapped-toy_regions")
    assert nan["outcome"] == "error" and "score map holds 1 NaN or infinite values" in nan["message"]
    assert not set(REGION_METRICS) & set(nan["metrics"])
    assert "Region figures" not in (regions.path / "board.html").read_text()
    assert "AU-PRO" not in (regions.path / "board.md").read_text()
