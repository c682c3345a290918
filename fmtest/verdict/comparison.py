"""Candidate against current: the model a team would ship, scored on exactly the images of the model
it would replace.

The pair is compared as a regression is (fmtest.verdict.regression: paired bootstrap intervals of
each gated metric's change), and image by image: the defective parts the reference caught that the
candidate passes (new slips) are what a factory fears most, so any beyond `max_new_slips` fail the
pair whatever the averages say.
"""

from __future__ import annotations

from fmtest.data.sample import NOK, OK
from fmtest.metrics.specs import MAX_PREFIX
from fmtest.run.plan import comparison_id
from fmtest.verdict.gates import judge
from fmtest.verdict.regression import COMPARED, compare_results
from fmtest.verdict.results import (
    CaseRef,
    CaseResult,
    Comparison,
    ImageChange,
    ImageResult,
)

CHANGES = ("new_slips", "new_false_alarms", "fixed_slips", "fixed_false_alarms")  # worst first
_CHANGE = {(NOK, NOK, OK): "new_slips", (OK, OK, NOK): "new_false_alarms", (NOK, OK, NOK): "fixed_slips",
           (OK, NOK, OK): "fixed_false_alarms"}  # (truth, reference verdict, candidate verdict)


def image_changes(candidate: list[ImageResult], reference: list[ImageResult]) -> list[ImageChange]:
    """The images whose verdict differs, worst first: each with both verdicts and IoUs."""
    before = {i.id: i for i in reference}
    rows = []
    for image in candidate:
        old = before.get(image.id)
        change = _CHANGE.get((image.label, old.predicted, image.predicted)) if old is not None else None
        if change is not None:
            rows.append(ImageChange(id=image.id, change=change, label=image.label, candidate=image.predicted,
                                    reference=old.predicted, candidate_iou=image.iou, reference_iou=old.iou))
    return sorted(rows, key=lambda r: CHANGES.index(r.change))


def compare_candidate(candidate: CaseResult, reference: CaseResult, *, tolerance: float, max_new_slips: int,
                      n_resamples: int, seed: int) -> CaseResult:
    """The comparison case: `delta_<metric>` (candidate - reference) with paired 95 % intervals, the
    verdict changes image by image, judged by the tolerance and `max_new_slips`."""
    result = CaseResult(id=comparison_id(candidate.pipeline, reference.pipeline, candidate.dataset),
                        pipeline=candidate.pipeline, dataset=candidate.dataset, task="comparison",
                        model_sha256=candidate.model_sha256, config_fingerprint=candidate.config_fingerprint,
                        dataset_fingerprint=candidate.dataset_fingerprint)
    result.comparison = Comparison(
        candidate=CaseRef(candidate.id, candidate.pipeline, candidate.outcome, candidate.model_sha256),
        reference=CaseRef(reference.id, reference.pipeline, reference.outcome, reference.model_sha256),
        tolerance=tolerance)
    for unjudged in (candidate, reference):
        if unjudged.outcome in ("error", "skipped"):
            result.outcome, result.message = "error", f"{unjudged.id} could not be judged: {unjudged.message}"
            return result
    comparison = compare_results(candidate, reference, tolerance, n_resamples=n_resamples, seed=seed)
    if comparison.status != COMPARED:  # e.g. the two cases scored different images
        result.outcome, result.message = "error", comparison.message
        return result
    for name, change in comparison.metrics.items():
        result.metrics[f"delta_{name}"] = change.delta
        if change.ci_low is not None and change.ci_high is not None:
            result.metrics[f"delta_{name}_ci_low"], result.metrics[f"delta_{name}_ci_high"] = change.ci_low, change.ci_high
        # a change worse than the tolerance fails: a minimum on higher-is-better deltas, a maximum otherwise
        if change.higher_is_better:
            result.thresholds[f"delta_{name}"] = -tolerance
        else:
            result.thresholds[f"{MAX_PREFIX}delta_{name}"] = tolerance
    changes = image_changes(candidate.images, reference.images)
    for kind in CHANGES:
        result.metrics[kind] = float(sum(r.change == kind for r in changes))
    result.metrics["n_images"] = float(len(candidate.images))
    result.metrics["n_defective"] = float(sum(i.label == NOK for i in candidate.images))
    result.thresholds[f"{MAX_PREFIX}new_slips"] = float(max_new_slips)
    result.comparison.image_changes = changes
    return judge(result)
