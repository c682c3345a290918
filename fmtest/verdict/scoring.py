"""Case metrics from per-image records alone: a cached, stored or merged run re-scores without images.

Pure functions over `ImageResult` rows; `fmtest.metrics.functional` does the arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

from fmtest.config.rules import RegionRules, RiskRules
from fmtest.data.sample import NOK
from fmtest.metrics import functional as metrics
from fmtest.metrics.region import region_figures
from fmtest.metrics.specs import IOUS, METRICS, VERDICTS, MetricSpec
from fmtest.verdict.results import CaseResult, ImageResult, RegionSection, Risk


def nok_arrays(images: list[ImageResult]) -> tuple[np.ndarray, np.ndarray]:
    """(truth, verdict) as boolean arrays, True = NOK: the one place rows become arrays."""
    y_true = np.array([i.label == NOK for i in images], dtype=bool)
    y_pred = np.array([i.predicted == NOK for i in images], dtype=bool)
    return y_true, y_pred


def row_inputs(images: list[ImageResult]) -> dict[str, tuple[np.ndarray, ...]]:
    """The arrays a metric's statistic reads (`MetricSpec.rows`): every image's (truth, verdict), and the IoU of
    the defective images that have one."""
    ious = np.array([i.iou for i in images if i.label == NOK and i.iou is not None], dtype=np.float64)
    if np.isnan(ious).any() or ((ious < 0) | (ious > 1)).any():
        raise metrics.MetricInputError("per-image IoU values must lie in [0, 1] (no nan)")
    return {VERDICTS: nok_arrays(images), IOUS: (ious,)}


def value_of(spec: MetricSpec, arrays: tuple[np.ndarray, ...]) -> float:
    """The metric's value on the whole set: its statistic on one row; nan on no images."""
    if spec.rows == IOUS and not len(arrays[0]):  # no defective image: no mean IoU
        return math.nan
    return float(np.asarray(spec.compute(*(a[None] for a in arrays)))[0])


def score_images(images: list[ImageResult], *, task: str, n_resamples: int, seed: int) -> dict[str, float]:
    """Every metric a case of `task` computes from its rows, with the intervals their specs ask for: from per-image
    records alone, so a cached, stored or merged run re-scores without images."""
    return score_inputs(row_inputs(images), task=task, n_resamples=n_resamples, seed=seed)


def score_inputs(inputs: dict[str, tuple[np.ndarray, ...]], *, task: str, n_resamples: int,
                 seed: int) -> dict[str, float]:
    """`score_images` on the arrays `row_inputs` makes of the rows (benchmarks score arrays directly)."""
    out: dict[str, float] = {}
    for spec in METRICS.values():
        if spec.rows is None or task not in spec.recorded_by:
            continue
        arrays = inputs[spec.rows]
        out[spec.name] = value_of(spec, arrays)
        if spec.interval is not None:
            strata = arrays[0] if spec.interval == "stratified" else None
            out[f"{spec.name}_ci_low"], out[f"{spec.name}_ci_high"] = metrics.bootstrap_ci(
                spec.compute, *arrays, n_resamples=n_resamples, seed=seed, strata=strata)
    return out


def score_case(case: CaseResult, *, task: str, n_resamples: int, seed: int) -> None:
    """Fill a case's metrics and breakdown from its per-image rows: the one scoring of a case, fresh or
    merged from shards."""
    case.metrics = score_images(case.images, task=task, n_resamples=n_resamples, seed=seed)
    case.breakdown = breakdown(case.images, task=task)


def score_regions(case: CaseResult, rules: RegionRules) -> None:
    """The case's region figures from its images' region summaries: `au_pro`, `pixel_auroc` and `pixel_ap` among
    its metrics, their basis and the recall by defect size in `case.regions`. Only a segmentation case each of
    whose usable answers on an image with a mask has a summary (its pipeline gives a score map) has them; a
    figure the images leave undefined (no defect region, no good pixel) is absent, never NaN, and a non-finite
    value where the figure is defined is refused (MetricInputError), never recorded."""
    case.regions = None
    scored = [i for i in case.images if i.error is None and i.iou is not None]  # usable, with a mask
    if case.task != "segmentation" or not scored or any(i.region is None for i in scored):
        return
    figures = region_figures([i.region for i in scored], fpr_limit=rules.fpr_limit)
    defined = {"au_pro": figures.n_regions > 0 and figures.n_good_pixels > 0,
               "pixel_auroc": figures.n_defect_pixels > 0 and figures.n_good_pixels > 0,
               "pixel_ap": figures.n_defect_pixels > 0}
    values = {"au_pro": (figures.pro, figures.pro_error_bound),
              "pixel_auroc": (figures.pixel_auroc, figures.pixel_auroc_error_bound),
              "pixel_ap": (figures.pixel_ap, figures.pixel_ap_error_bound)}
    bounds = {}
    for name, (value, bound) in values.items():
        if not defined[name]:
            continue
        if not (math.isfinite(value) and math.isfinite(bound)):
            raise metrics.MetricInputError(f"{case.id}: {name} is {value} (bound {bound}) on "
                                           f"{figures.n_regions} defect regions: not a number to record")
        case.metrics[name], bounds[name] = value, bound
    if figures.n_regions == 0:
        return
    case.regions = RegionSection(
        fpr_limit=figures.fpr_limit, n_images=len(scored), n_regions=figures.n_regions,
        n_defect_pixels=figures.n_defect_pixels, n_good_pixels=figures.n_good_pixels, error_bounds=bounds,
        recall_by_size=[row for row in figures.recall_by_size if row.n_regions])


def record_invalid_answers(case: CaseResult) -> None:
    """How many answers were unusable, and their share: the gate's `max_invalid_answer_rate` reads it."""
    case.invalid_answers = sum(i.error is not None for i in case.images)
    case.metrics["invalid_answer_rate"] = case.invalid_answers / len(case.images) if case.images else math.nan


def breakdown(images: list[ImageResult], *, task: str) -> dict[str, dict[str, float]]:
    """The case's figures per group (MVTec category, cross-validation fold; only when there are several)
    and per defect type. A defect type's row scores that type's defective images together with all good
    images, so its F2 still counts false alarms; its IoU is the mean over that type's images."""
    subsets: dict[str, list[ImageResult]] = {}
    groups = sorted({i.group for i in images if i.group is not None})
    if len(groups) > 1:
        for name in groups:
            subsets[name] = [i for i in images if i.group == name]
    good = [i for i in images if i.label != NOK]
    for kind in sorted({i.defect_type for i in images if i.defect_type is not None}):
        name = kind if kind not in subsets else f"{kind} (defect type)"
        subsets[name] = [i for i in images if i.defect_type == kind] + good
    return {name: _subset_figures(rows, task) for name, rows in subsets.items()}


def _subset_figures(images: list[ImageResult], task: str) -> dict[str, float]:
    """The breakdown's figures of one group or defect type (specs with `in_breakdown`), without intervals."""
    inputs = row_inputs(images)
    return {s.name: value_of(s, inputs[s.rows]) for s in METRICS.values()
            if s.in_breakdown and task in s.recorded_by}


def risk_summary(images: list[ImageResult], good_train_scores, rules: RiskRules) -> Risk:
    """The factory figures at the operating point: exact intervals, and what the sample size can prove.

    AUROC is added only beside these, labelled, because it is threshold-free and not a factory figure.
    """
    target_slip_rate, false_alarm_budget = rules.target_slip_rate, rules.false_alarm_budget
    y_true, y_pred = nok_arrays(images)
    c = metrics.confusion_counts(y_true, y_pred)
    n_def, n_good = c.tp + c.fn, c.fp + c.tn
    slip_lo, slip_hi = metrics.clopper_pearson(c.fn, n_def) if n_def else (math.nan, math.nan)
    fa_lo, fa_hi = metrics.clopper_pearson(c.fp, n_good) if n_good else (math.nan, math.nan)
    needed = metrics.defectives_needed(target_slip_rate)
    risk = Risk(
        slip_rate=metrics.slip_rate(c), slip_rate_ci_low=slip_lo, slip_rate_ci_high=slip_hi,
        slip_rate_upper_95=metrics.slip_rate_upper(c.fn, n_def) if n_def else math.nan,
        false_alarm_rate=metrics.false_alarm_rate(c), false_alarm_rate_ci_low=fa_lo, false_alarm_rate_ci_high=fa_hi,
        target_slip_rate=target_slip_rate, defectives_needed_for_target=needed, n_defective=n_def,
        verdict=(f"showing a slip rate below {target_slip_rate:.1%} with 95% confidence needs >= {needed} "
                 f"defective images and zero slips; this test set has {n_def}: "
                 + ("enough" if n_def >= needed else "NOT enough")))
    scores = [i.score for i in images]
    if all(s is not None for s in scores) and images:
        risk.auroc_threshold_free_not_a_factory_figure = metrics.auroc(np.array(scores, float), y_true)
        if good_train_scores is not None and len(good_train_scores):
            at = metrics.recall_at_false_alarm(good_train_scores, np.array(scores, float), y_true, false_alarm_budget)
            risk.false_alarm_budget = false_alarm_budget
            risk.recall_at_false_alarm_budget = at["recall"]
            risk.false_alarm_rate_at_budget_threshold = at["false_alarm_rate"]
    return risk
