"""The threshold gate, defined once: which thresholds a case has, and which it misses.

A threshold named like a metric is a minimum (`iou = 0.6`); one named `max_<metric>` is a maximum
(`max_false_alarm_rate = 0.05`). A `max_` threshold whose metric is not recorded is a setting of
the case (the robustness suite's `max_metric_drop`), shown but never judged here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fmtest.metrics.specs import (
    DEFAULT_MAX_INVALID_ANSWER_RATE,
    INVALID_ANSWER_GATE,
    MAX_PREFIX,
    REGION_METRICS,
    format_metric,
    headline_metric,
)
from fmtest.verdict.results import CaseResult, ImageResult


@dataclass(frozen=True)
class Gate:
    """One threshold of a case."""

    name: str
    metric: str | None
    limit: float
    upper: bool

    @property
    def relation(self) -> str:
        return "<=" if self.upper else ">="

    def met(self, value: object) -> bool:
        """NaN or missing never meets a gate: an undefined metric cannot pass."""
        if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
            return False
        return value <= self.limit if self.upper else value >= self.limit


def gate_of(name: str, limit: float, recorded: object = ()) -> Gate:
    """The gate a threshold `name` sets; `recorded` holds the metric names the case has."""
    if name.startswith(MAX_PREFIX) and name not in recorded:
        bounded = name.removeprefix(MAX_PREFIX)
        return Gate(name, bounded if bounded in recorded else None, float(limit), upper=True)
    return Gate(name, name, float(limit), upper=False)


def metric_of_threshold(name: str) -> str:
    """The metric a threshold name judges (`max_false_alarm_rate` -> false_alarm_rate)."""
    return name.removeprefix(MAX_PREFIX)


def gates(case: CaseResult) -> list[Gate]:
    return [gate_of(name, limit, case.metrics) for name, limit in case.thresholds.items()]


def gate_for(case: CaseResult, metric: str | None) -> Gate | None:
    return next((g for g in gates(case) if metric is not None and g.metric == metric), None)


def main_metric(case: CaseResult) -> str | None:
    """The headline metric of the case's task (specs), else the first gated one."""
    preferred = headline_metric(case.task)
    if preferred and (preferred in case.metrics or gate_for(case, preferred)):
        return preferred
    return next((g.metric for g in gates(case) if g.metric), preferred)


def threshold_failures(case: CaseResult) -> list[str]:
    """One line per metric on the wrong side of its threshold: value, 95 % interval, threshold."""
    lines = []
    for gate in gates(case):
        if gate.metric is None or gate.name == INVALID_ANSWER_GATE:
            continue
        value = case.metrics.get(gate.metric, math.nan)
        if gate.met(value):
            continue
        lo, hi = case.metrics.get(f"{gate.metric}_ci_low"), case.metrics.get(f"{gate.metric}_ci_high")
        interval = f" (95% CI [{lo:.3f}, {hi:.3f}])" if lo is not None and hi is not None else ""
        side = "above the maximum" if gate.upper else "below the threshold"
        lines.append(f"{gate.metric} = {format_metric(gate.metric, value)}{interval} is {side} "
                     f"{format_metric(gate.metric, gate.limit)}")
    return lines


def cannot_judge(case: CaseResult) -> list[str]:
    """Why the case's numbers cannot be judged at all: no images, no usable answer (whatever
    max_invalid_answer_rate allows), too many unusable answers, a gated metric the test set leaves
    undefined. Such a case is an error, never a pass or a plain miss."""
    n_images, n_defective = image_counts(case)
    if not n_images:
        return ["no test images: nothing to judge"]
    problems = []
    unusable = unusable_answers(case.images, invalid_answer_limit(case))
    if unusable:
        problems.append(unusable)
    for gate in gates(case):
        value = case.metrics.get(gate.metric) if gate.metric else None
        if gate.metric is not None and gate.metric not in case.metrics:  # a threshold on a figure not computed
            problems.append(f"{gate.metric} has a threshold but was not computed: {not_computed(gate.metric)}")
            continue
        if gate.name == INVALID_ANSWER_GATE or not isinstance(value, float) or not math.isnan(value):
            continue
        if not n_defective:
            problems.append(f"no defective images: {gate.metric} undefined")
        elif n_defective == n_images:
            problems.append(f"no good images: {gate.metric} undefined")
        else:
            problems.append(f"{gate.metric} undefined on these {n_images} images ({n_defective} defective)")
    return list(dict.fromkeys(problems))


def not_computed(metric: str) -> str:
    """Why a case recorded no value of a metric that its task records (a region figure)."""
    if metric in REGION_METRICS:
        return ("region figures need the pipeline's score map on every usable answer and, for this one, "
                "defect and good pixels in the ground-truth masks")
    return "this case does not record it"


def invalid_answer_limit(case: CaseResult) -> float:
    """The share of unusable answers the case allows (`max_invalid_answer_rate`, default none)."""
    return case.thresholds.get(INVALID_ANSWER_GATE, DEFAULT_MAX_INVALID_ANSWER_RATE)


def unusable_answers(images: Sequence[ImageResult], limit: float) -> str | None:
    """Why these answers cannot be judged, or None: more unusable than `limit` allows, or none usable at all
    (whatever the limit: a case without one usable answer is never judged)."""
    invalid = [i for i in images if i.error is not None]
    if not invalid:
        return None
    first = f"first: {invalid[0].id}: {invalid[0].error}"
    if len(invalid) / len(images) > limit:
        return (f"{len(invalid)} of {len(images)} answers unusable ({len(invalid) / len(images):.1%} > "
                f"{INVALID_ANSWER_GATE} {limit:.1%}); {first}")
    if len(invalid) == len(images):
        return (f"no usable answer: {len(invalid)} of {len(images)} answers unusable, and a case without one is "
                f"never judged, whatever {INVALID_ANSWER_GATE} allows; {first}")
    return None


def judge(case: CaseResult, extra_failures: list[str] = ()) -> CaseResult:
    """Set the case's outcome and message: error when it cannot be judged (`cannot_judge`), else failed
    when a threshold (or another gate's `extra_failures`) is missed, else passed."""
    errors = cannot_judge(case)
    failures = threshold_failures(case) + list(extra_failures)
    case.outcome = "error" if errors else "failed" if failures else "passed"
    case.message = "; ".join(errors or failures) or None
    return case


def image_counts(case: CaseResult) -> tuple[int | None, int | None]:
    """(n_images, n_defective): the recorded metrics when present, else counted from the per-image rows."""
    n_images, n_defective = case.metrics.get("n_images"), case.metrics.get("n_defective")
    if n_images is None and case.images:
        n_images = len(case.images)
        n_defective = sum(img.label == "NOK" for img in case.images)
    return (None if n_images is None else int(n_images), None if n_defective is None else int(n_defective))


def regressed_metrics(case: CaseResult) -> dict[str, float]:
    """Metric -> delta for metrics the baseline comparison flagged as regressed."""
    if case.baseline is None:
        return {}
    return {name: change.delta for name, change in case.baseline.changes.items() if change.regressed}


__all__ = ["Gate", "gate_for", "gate_of", "gates", "image_counts", "invalid_answer_limit", "judge", "main_metric",
           "metric_of_threshold", "regressed_metrics", "threshold_failures", "unusable_answers"]
