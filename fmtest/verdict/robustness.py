"""The robustness verdict: how a case's answers move under one perturbation, level by level.

The clean and the perturbed runs are both ordinary case results (fmtest.run.evaluate.evaluate_case);
this module compares their per-image rows and holds the gated level to the tolerances.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fmtest.metrics.functional import invariance_summary
from fmtest.verdict.gates import Gate
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
                      max_flip_rate: float, max_metric_drop: float, min_clean_recall: float) -> CaseResult:
    """The case `<pipeline>-<dataset>-<perturbation>`, judged at the gated level of its ladder.

    A case whose unperturbed recall is below `min_clean_recall` is skipped as not meaningful: a model
    that (almost) always answers OK keeps its answers under any perturbation, and that is no robustness."""
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
    if not gated.clean_recall >= min_clean_recall:
        result.outcome = "skipped"
        result.message = (f"not meaningful: the unperturbed run finds {gated.clean_recall:.1%} of the defects, below "
                          f"the floor {min_clean_recall:.1%} ([robustness] min_clean_recall); a model that answers OK "
                          f"keeps its answers under any perturbation")
    return result
