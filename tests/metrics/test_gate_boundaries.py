"""Where the gate's edges are, pinned exactly: a metric at its threshold passes, a drop exactly at the
tolerance is no regression, the interval called 95 % is the 95 % one, a failed prediction overlaps
nothing, and pixels marked ignore stay out of the IoU."""

from __future__ import annotations

import numpy as np
import pytest

from fmtest.data.sample import Sample
from fmtest.metrics import functional as metrics
from fmtest.pipelines.base import Prediction
from fmtest.run.evaluate import image_iou
from fmtest.verdict.gates import judge, threshold_failures
from fmtest.verdict.regression import compare_results
from fmtest.verdict.results import CaseResult, ImageResult
from fmtest.verdict.scoring import score_images


def _case(metrics_: dict, thresholds: dict) -> CaseResult:
    images = [ImageResult("a", "s", "OK", "OK"), ImageResult("b", "s", "NOK", "NOK", iou=0.5)]
    return CaseResult("p-d", "p", "d", "segmentation", metrics={"n_images": 2.0, "n_defective": 1.0, **metrics_},
                      thresholds=thresholds, images=images)


@pytest.mark.parametrize("value,outcome", [(0.6, "passed"), (np.nextafter(0.6, 0), "failed")])
def test_a_minimum_is_met_at_the_threshold_itself(value, outcome):
    assert judge(_case({"iou": float(value)}, {"iou": 0.6})).outcome == outcome


@pytest.mark.parametrize("value,outcome", [(0.05, "passed"), (np.nextafter(0.05, 1), "failed")])
def test_a_maximum_is_met_at_the_threshold_itself(value, outcome):
    case = judge(_case({"false_alarm_rate": float(value)}, {"max_false_alarm_rate": 0.05}))
    assert case.outcome == outcome
    if outcome == "failed":
        assert threshold_failures(case) == ["false_alarm_rate = 0.050 is above the maximum 0.050"]


def _rows(ious):
    return [ImageResult(f"i{k}", "s", "NOK", "NOK", iou=v) for k, v in enumerate(ious)]


@pytest.mark.parametrize("current,regressed", [(0.25, False), (0.2421875, True)])
def test_a_drop_exactly_at_the_tolerance_is_no_regression(current, regressed):
    """Binary fractions, so the edge is exact: 0.5 -> 0.25 with tolerance 0.25 is allowed."""
    old = CaseResult("p-d", "p", "d", "segmentation", metrics={"iou": 0.5}, images=_rows([0.5, 0.5]))
    new = CaseResult("p-d", "p", "d", "segmentation", metrics={"iou": current}, images=_rows([current, current]))
    comparison = compare_results(new, old, 0.25, n_resamples=50, seed=0)
    assert comparison.metrics["iou"].regressed is regressed


def test_the_interval_reported_as_95_percent_is_the_95_percent_one():
    rng = np.random.default_rng(3)
    truth = np.repeat([True, False], [30, 60])
    verdict = np.where(rng.random(90) < 0.3, ~truth, truth)
    rows = [ImageResult(f"i{k}", "", "NOK" if t else "OK", "NOK" if v else "OK") for k, (t, v) in
            enumerate(zip(truth, verdict, strict=True))]
    summary = score_images(rows, task="classification", n_resamples=400, seed=7)
    at_95 = metrics.bootstrap_ci(metrics.f2_from_labels, truth, verdict, n_resamples=400, seed=7, strata=truth,
                                 confidence=0.95)
    at_90 = metrics.bootstrap_ci(metrics.f2_from_labels, truth, verdict, n_resamples=400, seed=7, strata=truth,
                                 confidence=0.90)
    assert (summary["f2_ci_low"], summary["f2_ci_high"]) == at_95
    assert at_90[0] > at_95[0] and at_90[1] < at_95[1]  # the narrower interval is not what is reported


def _sample(ignore=None):
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    return Sample(id="x", image=np.zeros((8, 8), np.float32), label="NOK", mask=mask, ignore=ignore)


def test_a_failed_prediction_overlaps_nothing_and_stays_in_the_mean():
    assert image_iou(_sample(), Prediction.failed("HTTP 503")) == 0.0


def test_pixels_marked_ignore_stay_out_of_the_iou():
    predicted = np.zeros((8, 8), bool)
    predicted[2:4, 2:5] = True  # one column over the true defect, on the trimap border
    ignore = np.zeros((8, 8), bool)
    ignore[:, 4] = True
    prediction = Prediction.from_mask(predicted)
    assert image_iou(_sample(ignore), prediction) == 1.0
    assert image_iou(_sample(), prediction) == pytest.approx(4 / 6)
