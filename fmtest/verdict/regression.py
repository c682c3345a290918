"""Regression gate: compare a run with an earlier run (the baseline) case by case.

A metric regresses when it drops by more than the tolerance. Whether the drop is more than
noise is judged by a paired bootstrap over the same images (both runs scored identical images,
so resampling them together cancels the image-to-image variation the runs share); without
per-image results in both runs the comparison is unpaired and says so. Cases whose images
changed are reported as `dataset_changed` and not compared: a different test set makes any
difference meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fmtest import __version__
from fmtest.data.sample import NOK
from fmtest.errors import ConfigError
from fmtest.metrics.functional import paired_bootstrap_delta
from fmtest.metrics.specs import IOUS, regression_gated, spec
from fmtest.verdict.results import (
    BaselineComparison,
    CaseResult,
    ImageResult,
    MetricChange,
    RunResults,
)
from fmtest.verdict.scoring import nok_arrays

COMPARED, NEW, VANISHED, DATASET_CHANGED, INCOMPATIBLE = "compared", "new", "vanished", "dataset_changed", "incompatible"
STATUSES = (COMPARED, NEW, VANISHED, DATASET_CHANGED, INCOMPATIBLE)



@dataclass
class CaseComparison:
    """One case against the baseline (or a candidate against its reference): what `record` stores in the case."""

    case_id: str
    status: str
    message: str
    metrics: dict[str, MetricChange] = field(default_factory=dict)
    tolerance: float = 0.0
    paired: bool = False

    @property
    def regressed(self) -> bool:
        return any(m.regressed for m in self.metrics.values())

    def record(self, case: CaseResult) -> None:
        """Store the comparison in the case, so every report and the run's summary read it from the results
        instead of comparing again."""
        case.baseline = BaselineComparison(self.status, self.message, self.tolerance, self.paired, dict(self.metrics))

    @classmethod
    def recorded(cls, case: CaseResult) -> CaseComparison | None:
        """The comparison `record` stored in a case, or None when the case was not compared."""
        b = case.baseline
        return None if b is None else cls(case.id, b.status, b.message, dict(b.changes), b.tolerance, b.paired)


def incompatibility(baseline: RunResults) -> str | None:
    """Why a baseline cannot be compared with results of this fmtest version, or None."""
    theirs, ours = _major(baseline.fmtest_version), _major(__version__)
    if theirs is None:
        return (f"baseline written by an unknown fmtest version ({baseline.fmtest_version!r}); "
                f"rerun the baseline with fmtest {__version__}")
    if theirs != ours:
        return (f"baseline written by fmtest {baseline.fmtest_version}, this is {__version__}: results of "
                f"another major version are not comparable; rerun the baseline")
    return None


def _major(version: str) -> int | None:
    head = str(version).split(".")[0]
    return int(head) if head.isdigit() else None


def compare_to_baseline(current: RunResults, baseline: RunResults, tolerance: float, *,
                        n_resamples: int, seed: int) -> dict[str, CaseComparison]:
    """One CaseComparison per case of either run, current cases first, then vanished ones."""
    if not tolerance >= 0:
        raise ConfigError(f"baseline tolerance must be a number >= 0, got {tolerance!r}")
    problem = incompatibility(baseline)
    before = {c.id: c for c in baseline.cases}
    out: dict[str, CaseComparison] = {}
    for case in current.cases:
        old = before.get(case.id)
        if problem is not None:
            out[case.id] = CaseComparison(case.id, INCOMPATIBLE, problem, tolerance=tolerance)
        elif old is None:
            out[case.id] = CaseComparison(case.id, NEW, "new case: not in the baseline", tolerance=tolerance)
        else:
            out[case.id] = compare_results(case, old, tolerance, n_resamples=n_resamples, seed=seed)
    now = {c.id for c in current.cases}
    for case in baseline.cases:
        if case.id not in now:
            out[case.id] = CaseComparison(case.id, VANISHED, "vanished: in the baseline, not in this run",
                                          tolerance=tolerance)
    return out


def compare_case(case: CaseResult, baseline: RunResults, tolerance: float, *, n_resamples: int,
                 seed: int) -> CaseComparison:
    """One case against the baseline run (the gate that runs as each case finishes)."""
    return compare_to_baseline(RunResults(cases=[case]), baseline, tolerance, n_resamples=n_resamples,
                               seed=seed)[case.id]


def baseline_failures(case: CaseResult, baseline: RunResults, tolerance: float, *, n_resamples: int,
                      seed: int) -> list[str]:
    """Compare a case with the baseline, record the comparison in it, and say why it fails, if it does
    (the failures `judge` adds to the thresholds')."""
    comparison = compare_case(case, baseline, tolerance, n_resamples=n_resamples, seed=seed)
    comparison.record(case)
    return ["regression against the baseline: " + format_regression(comparison)] if comparison.regressed else []


def recorded_comparisons(current: RunResults, baseline: RunResults) -> dict[str, CaseComparison]:
    """The run's comparisons as its cases recorded them, plus the baseline's cases this run lacks."""
    out = {c.id: comparison for c in current.cases if (comparison := CaseComparison.recorded(c)) is not None}
    now = {c.id for c in current.cases}
    for case in baseline.cases:
        if case.id not in now:
            out[case.id] = CaseComparison(case.id, VANISHED, "vanished: in the baseline, not in this run")
    return out


def compare_results(case: CaseResult, old: CaseResult, tolerance: float, *, n_resamples: int,
                    seed: int) -> CaseComparison:
    """Two results of the same images (this run and the baseline, or a candidate and the model it would
    replace): each gated metric's change, paired over the images where both runs have per-image rows."""
    changed = _dataset_change(case, old)
    if changed:
        return CaseComparison(case.id, DATASET_CHANGED, f"dataset changed since the baseline ({changed}): not compared",
                              tolerance=tolerance)
    if not isinstance(old.metrics, dict):
        return CaseComparison(case.id, INCOMPATIBLE, "the baseline case has no metrics table", tolerance=tolerance)
    gated = regression_gated()
    bad = [s.name for s in gated if s.name in old.metrics and not _is_number(old.metrics[s.name])]
    if bad:
        return CaseComparison(case.id, INCOMPATIBLE, f"baseline metric(s) {', '.join(bad)} are not numbers",
                              tolerance=tolerance)
    paired_images, unpaired_reason = _pairable(case, old)
    changes: dict[str, MetricChange] = {}
    for metric in gated:
        name = metric.name
        now, before = case.metrics.get(name), old.metrics.get(name)
        if not (_is_number(now) and _is_number(before) and math.isfinite(now) and math.isfinite(before)):
            continue
        delta = float(now) - float(before)
        change = MetricChange(baseline=float(before), current=float(now), delta=delta,
                              higher_is_better=bool(metric.higher_is_better), regressed=metric.worse(delta, tolerance))
        if paired_images is None:
            change.note = f"unpaired comparison ({unpaired_reason})"
        else:
            _add_paired_interval(change, name, paired_images, n_resamples, seed)
        changes[name] = change
    if not changes:
        what = f"this run: {case.outcome}" if not case.metrics else "no gated metric in both runs"
        message = f"nothing to compare ({what})"
    else:
        how = f"paired over {len(paired_images)} images" if paired_images else f"unpaired: {unpaired_reason}"
        deltas = ", ".join(f"{k} {c.delta:+.3f}" for k, c in changes.items())
        message = f"compared with the baseline ({how}): {deltas}"
    return CaseComparison(case.id, COMPARED, message, changes, tolerance, paired=paired_images is not None)


def _dataset_change(case: CaseResult, old: CaseResult) -> str:
    """A description of how the scored images differ between the runs; empty when they do not."""
    if case.images and old.images:
        now = {i.id: i for i in case.images}
        before = {i.id: i for i in old.images}
        parts = []
        if added := len(now.keys() - before.keys()):
            parts.append(f"{added} image(s) added")
        if removed := len(before.keys() - now.keys()):
            parts.append(f"{removed} image(s) removed")
        common = now.keys() & before.keys()
        if content := sum(now[k].sha256 != before[k].sha256 for k in common):
            parts.append(f"{content} image(s) with different content (sha256)")
        if labels := sum(now[k].label != before[k].label for k in common):
            parts.append(f"{labels} label(s) changed")
        return ", ".join(parts)
    if case.dataset_fingerprint and old.dataset_fingerprint and case.dataset_fingerprint != old.dataset_fingerprint:
        return f"dataset fingerprint {old.dataset_fingerprint} -> {case.dataset_fingerprint}"
    return ""


def _pairable(case: CaseResult, old: CaseResult) -> tuple[list[tuple[ImageResult, ImageResult]] | None, str]:
    """(current, baseline) image pairs in a fixed order, or None and the reason they cannot be paired."""
    if not old.images:
        return None, "the baseline has no per-image results"
    if not case.images:
        return None, "this run has no per-image results"
    before = {i.id: i for i in old.images}
    return [(i, before[i.id]) for i in sorted(case.images, key=lambda i: i.id)], ""


def _add_paired_interval(change: MetricChange, name: str, pairs: list[tuple[ImageResult, ImageResult]],
                         n_resamples: int, seed: int) -> None:
    """The paired bootstrap interval of the change, from the metric's own statistic over the same images."""
    metric = spec(name)
    if metric is None or metric.statistic is None:
        change.note = f"no paired interval for {name}"
        return
    if metric.rows == IOUS:
        defective = [(a, b) for a, b in pairs if a.label == NOK]
        if any(a.iou is None or b.iou is None for a, b in defective):
            change.note = "unpaired comparison (a defective image has no per-image IoU)"
            return
        current = (np.array([a.iou for a, _ in defective], dtype=np.float64),)
        before = (np.array([b.iou for _, b in defective], dtype=np.float64),)
    else:
        truth, verdicts = nok_arrays([a for a, _ in pairs])
        current, before = (truth, verdicts), (truth, nok_arrays([b for _, b in pairs])[1])
    _, low, high = paired_bootstrap_delta(current, before, metric.compute, n_resamples=n_resamples, seed=seed)
    if math.isnan(low) or math.isnan(high):
        change.note = "paired interval undefined (no defective image)"
        return
    change.ci_low, change.ci_high = low, high
    change.significant = not (low <= 0.0 <= high)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_regression(comparison: CaseComparison) -> str:
    """The failure message: one line per regressed metric, with its interval and whether it is noise."""
    if comparison.status != COMPARED:
        return comparison.message
    lines = [_format_change(name, change, comparison.tolerance)
             for name, change in comparison.metrics.items() if change.regressed]
    return "\n".join(lines) or f"no metric dropped by more than the tolerance {comparison.tolerance:g}"


def _format_change(name: str, change: MetricChange, tolerance: float) -> str:
    verb = "dropped" if change.higher_is_better else "rose"
    head = (f"{name} {verb} {abs(change.delta):.3f} ({change.baseline:.3f} -> {change.current:.3f}), "
            f"tolerance {tolerance:g}")
    if change.ci_low is None or change.ci_high is None:
        return f"{head}; {change.note}: no noise estimate"
    worse = change.ci_high < 0 if change.higher_is_better else change.ci_low > 0
    verdict = "outside noise" if worse else "within noise (the interval includes no change)"
    return f"{head}; paired bootstrap 95% CI of the change [{change.ci_low:.3f}, {change.ci_high:.3f}]: {verdict}"


def format_summary(comparisons: dict[str, CaseComparison]) -> str:
    """Terminal summary: counts by status, the regressed cases, and a hint when nothing matched."""
    by_status = {s: [c for c in comparisons.values() if c.status == s] for s in STATUSES}
    counts = ", ".join(f"{len(v)} {s.replace('_', ' ')}" for s, v in by_status.items() if v)
    lines = [f"baseline comparison: {counts or 'no cases'}"]
    regressed = [c for c in by_status[COMPARED] if c.regressed]
    for c in regressed:
        lines.append(f"  REGRESSED {c.case_id}: " + format_regression(c).replace("\n", "\n    "))
    for status in (DATASET_CHANGED, INCOMPATIBLE):
        lines += [f"  {status.replace('_', ' ')} {c.case_id}: {c.message}" for c in by_status[status]]
    if by_status[NEW] and not by_status[COMPARED] and not by_status[DATASET_CHANGED]:
        lines.append("  no case of this run is in the baseline: was it made for other datasets or pipelines?")
    if by_status[VANISHED]:
        lines.append("  vanished: " + ", ".join(c.case_id for c in by_status[VANISHED]))
    return "\n".join(lines)
