"""The robustness verdict: how a case's answers move under one perturbation, level by level.

The clean and the perturbed runs are both ordinary case results (fmtest.run.evaluate.evaluate_case);
this module compares their per-image rows and holds the gated level to the tolerances.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from fmtest.metrics.functional import invariance_summary
from fmtest.verdict.gates import Gate, invalid_answer_limit, unusable_answers
from fmtest.verdict.results import CaseResult, ImageResult, LevelRow, Robustness
from fmtest.verdict.scoring import nok_arrays

DELTA_METRICS = ("delta_iou", "delta_f2")


def invariance_row(perturbation: str, level: float, clean: list[ImageResult],
                   perturbed: list[ImageResult]) -> LevelRow:
    """One ladder level: flip rate, metric deltas and the perturbed run's error rates, image by image."""
    by_id = {i.id: i for i in perturbed}
    if [i.id for i in clean] != [i.id for i in perturbed if i.id in by_id] or len(by_id) != len(clean):
        raise RuntimeError(f"{perturbation}={level:g}: the perturbed run scored other images than the clean run")
    paired = [by_id[i.id] for i in clean]
    y_true, clean_nok = nok_arrays(clean)
    _, perturbed_nok = nok_arrays(paired)
    scored_iou = any(i.iou is not None for i in clean)
    ious = (np.array([math.nan if i.iou is None else i.iou for i in clean]),
            np.array([math.nan if i.iou is None else i.iou for i in paired])) if scored_iou else (None, None)
    summary = invariance_summary(clean_nok, ious[0], perturbed_nok, ious[1], y_true)
    return LevelRow(perturbation=perturbation, level=float(level), **{k: float(v) for k, v in summary.items()})


def robustness_result(base: CaseResult, perturbation: str, rows: list[LevelRow], gate_index: int, *,
                      perturbed: Sequence[Sequence[ImageResult]], max_flip_rate: float, max_metric_drop: float,
                      min_clean_recall: float, max_clean_false_alarm_rate: float) -> CaseResult:
    """The case `<pipeline>-<dataset>-<perturbation>`, judged at the gated level of its ladder.

    `perturbed` holds each level's rows. A case whose unperturbed run could not be judged, or one level of
    whose answers are unusable beyond the case's `max_invalid_answer_rate` (an API outage while the
    perturbed copies were sent), is an error: failed answers are NOK, and a model that answers NOK
    everywhere flips nothing. A case whose unperturbed recall is below `min_clean_recall`, or whose
    unperturbed false-alarm rate is above `max_clean_false_alarm_rate`, is skipped as not meaningful: a
    model that (almost) always answers OK, or always NOK, keeps its answers under any perturbation, and
    that is no robustness."""
    gated = rows[gate_index]
    where = f"{perturbation}={gated.level:g}"
    failures = []
    if not Gate("max_flip_rate", "flip_rate", max_flip_rate, upper=True).met(gated.flip_rate):
        failures.append(f"{gated.flip_rate:.1%} of verdicts flip at {where} (tolerance {max_flip_rate:.1%})")
    for metric in DELTA_METRICS:
        value = getattr(gated, metric)
        if math.isnan(value):  # that metric does not apply to this case
            continue
        if not Gate("max_metric_drop", metric, -max_metric_drop, upper=False).met(value):
            failures.append(f"{metric.removeprefix('delta_')} drops {-value:.3f} at {where} "
                            f"(tolerance {max_metric_drop:.3f})")
    for row in rows:
        row.outcome = "failed" if row is gated and failures else "passed"
    figures = {k: v for k, v in dataclasses.asdict(gated).items() if isinstance(v, float)}
    result = CaseResult(
        id=f"{base.id}-{perturbation}", pipeline=base.pipeline, dataset=base.dataset, task="robustness",
        outcome="failed" if failures else "passed", message="; ".join(failures) or None, metrics=figures,
        thresholds={"max_flip_rate": max_flip_rate, "max_metric_drop": max_metric_drop},
        model_sha256=base.model_sha256, config_fingerprint=base.config_fingerprint,
        dataset_fingerprint=base.dataset_fingerprint,
        robustness=Robustness(perturbation=perturbation, gate_level=gated.level, levels=rows),
    )
    errors = _cannot_judge(base, perturbation, rows, perturbed)
    if errors:
        result.outcome, result.message = "error", "; ".join(errors)
        result.metrics = {}  # no flip rate of a broken run may be read as a result
    elif not gated.clean_recall >= min_clean_recall:
        result.outcome = "skipped"
        result.message = (f"not meaningful: the unperturbed run finds {gated.clean_recall:.1%} of the defects, below "
                          f"the floor {min_clean_recall:.1%} ([robustness] min_clean_recall); a model that answers OK "
                          f"keeps its answers under any perturbation")
    elif gated.clean_false_alarm_rate > max_clean_false_alarm_rate:
        result.outcome = "skipped"
        result.message = (f"not meaningful: the unperturbed run flags {gated.clean_false_alarm_rate:.1%} of the good "
                          f"images NOK, above the ceiling {max_clean_false_alarm_rate:.1%} ([robustness] "
                          f"max_clean_false_alarm_rate); a model that answers NOK keeps its answers under any "
                          f"perturbation")
    return result


def _cannot_judge(base: CaseResult, perturbation: str, rows: list[LevelRow],
                  perturbed: Sequence[Sequence[ImageResult]]) -> list[str]:
    """Why the ladder cannot be judged: the clean case could not be, or a level's answers are unusable."""
    if base.outcome == "error":
        return [f"the unperturbed case {base.id} could not be judged: {base.message}"]
    limit = invalid_answer_limit(base)
    problems = []
    for row, images in zip(rows, perturbed, strict=True):
        unusable = unusable_answers(images, limit)
        if unusable:
            problems.append(f"at {perturbation}={row.level:g}: {unusable}")
    return problems
