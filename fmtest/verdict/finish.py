"""One finished case: the one function that turns what a run measured into a case's verdict.

The in-process run, every pytest-xdist worker and `fmtest merge` call `finish_case` (and
`finish_comparison` for a candidate-vs-current pair); nothing else scores, judges or compares a
case, so its metrics, intervals, thresholds, risk figures, invalid answers and baseline regression
cannot depend on how the run was made. A case that cannot be judged keeps its per-image rows and
counts but no figure: a number from a broken run must not be read as a result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fmtest.config.rules import CompareRules, RunRules
from fmtest.metrics.specs import is_diagnostic, spec
from fmtest.run.evaluate import CaseEvidence
from fmtest.run.records import N_THUMBNAILS, badness
from fmtest.verdict.comparison import compare_candidate
from fmtest.verdict.gates import judge, metric_of_threshold
from fmtest.verdict.regression import baseline_failures
from fmtest.verdict.results import CacheUse, CaseResult, LayerManifest, RunResults
from fmtest.verdict.scoring import (
    record_invalid_answers,
    risk_summary,
    score_case,
    score_regions,
)


def finish_case(evidence: CaseEvidence, rules: RunRules, baseline: RunResults | None = None) -> CaseResult:
    """The case's result from its measured rows: scored, thresholded, compared with `baseline`, judged."""
    result = CaseResult(id=evidence.id, pipeline=evidence.pipeline, dataset=evidence.dataset, task=evidence.task,
                        images=list(evidence.images), thumbnails=list(evidence.thumbnails),
                        model_sha256=evidence.model_sha256, config_fingerprint=evidence.config_fingerprint,
                        dataset_fingerprint=evidence.dataset_fingerprint, duration_s=evidence.duration_s)
    score_case(result, task=evidence.task, n_resamples=rules.bootstrap_resamples, seed=rules.seed)
    score_regions(result, rules.regions)
    result.metrics["images_per_second"] = (evidence.n_predicted / evidence.predict_seconds
                                           if evidence.n_predicted and evidence.predict_seconds > 0 else math.nan)
    result.metrics["fit_seconds"] = evidence.fit_seconds
    result.cache = CacheUse(hits=evidence.cache_hits, predicted=evidence.n_predicted)
    record_invalid_answers(result)
    result.usage = dict(evidence.usage)
    if evidence.image_layers is not None:
        result.image_layers = LayerManifest(**evidence.image_layers)
    if evidence.train_scores is not None:  # kept so `fmtest merge` recomputes the risk figures from the rows
        result.train_scores = list(evidence.train_scores)
    result.risk = risk_summary(result.images, evidence.train_scores, rules.risk)
    result.study = dict(rules.study_results.get(evidence.id, {}))  # the published number, shown beside the case
    result.departures = list(evidence.departures)
    result.options, result.started = dict(evidence.options), evidence.started
    result.data_quality = list(evidence.data_quality)
    result.shard = evidence.shard
    result.thresholds = {k: float(v) for k, v in rules.thresholds_for(evidence.id).items()
                         if metric_of_threshold(k) in result.metrics or _recorded_by(metric_of_threshold(k),
                                                                                     evidence.task)}
    regression = []
    if baseline is not None and evidence.shard is None:  # a shard's share means nothing: `fmtest merge` compares
        regression = baseline_failures(result, baseline, rules.baseline_tolerance,
                                       n_resamples=rules.bootstrap_resamples, seed=rules.seed)
    judge(result, regression)
    if result.outcome == "error":
        withhold_figures(result)
    return result


def finish_comparison(candidate: CaseResult, reference: CaseResult, compare: CompareRules,
                      rules: RunRules) -> CaseResult:
    """A `[compare.<candidate>]` pair on one dataset, from the two finished cases."""
    return compare_candidate(candidate, reference, tolerance=compare.tolerance, max_new_slips=compare.max_new_slips,
                             n_resamples=rules.bootstrap_resamples, seed=rules.seed)


def withhold_figures(result: CaseResult) -> None:
    """An unjudgeable case keeps its rows, counts and the share of unusable answers (why it cannot be
    judged), never a metric, interval, breakdown or risk figure that a reader could take for a result."""
    result.metrics = {k: v for k, v in result.metrics.items() if is_diagnostic(k)}
    result.breakdown = {}
    result.risk = None
    result.regions = None


def _recorded_by(metric: str, task: str) -> bool:
    """Whether cases of `task` record `metric`: a threshold on such a metric this case lacks (a region figure
    without a score map) stays, and the case cannot be judged, rather than being silently not gated."""
    found = spec(metric)
    return found is not None and task in found.recorded_by


def evidence_of(result: CaseResult) -> CaseEvidence:
    """What a stored case measured, read back from its results (a shard's, to be merged)."""
    cache = result.cache or CacheUse()
    rate = result.metrics.get("images_per_second")
    seconds = (cache.predicted / rate if cache.predicted and isinstance(rate, int | float) and math.isfinite(rate)
               and rate > 0 else 0.0)
    return CaseEvidence(
        id=result.id, pipeline=result.pipeline, dataset=result.dataset, task=result.task, images=list(result.images),
        thumbnails=list(result.thumbnails), model_sha256=result.model_sha256,
        config_fingerprint=result.config_fingerprint, dataset_fingerprint=result.dataset_fingerprint,
        predict_seconds=seconds, n_predicted=cache.predicted, fit_seconds=float(result.metrics.get("fit_seconds") or 0.0),
        cache_hits=cache.hits, duration_s=result.duration_s, usage=dict(result.usage),
        train_scores=result.train_scores, data_quality=list(result.data_quality), image_layers=None,
        shard=result.shard, departures=tuple(result.departures), options=dict(result.options), started=result.started)


def merge_evidence(parts: Sequence[CaseEvidence], place) -> CaseEvidence:
    """One case's evidence from its shards: the rows at their recorded positions (`place(parts)` puts
    them there and refuses gaps and overlaps), the costs summed, the worst thumbnails kept."""
    first = parts[0]
    images = place(parts)
    order = {row.id: (-badness(row.label, row.predicted, row.iou), i) for i, row in enumerate(images)}
    thumbnails = {t.id: t for p in parts for t in p.thumbnails if t.id in order}
    usage: dict[str, float] = {}
    for p in parts:
        for k, v in p.usage.items():
            usage[k] = usage.get(k, 0.0) + v
    return CaseEvidence(
        id=first.id, pipeline=first.pipeline, dataset=first.dataset, task=first.task, images=images,
        thumbnails=sorted(thumbnails.values(), key=lambda t: order[t.id])[:N_THUMBNAILS],
        model_sha256=first.model_sha256, config_fingerprint=first.config_fingerprint,
        dataset_fingerprint=first.dataset_fingerprint,
        predict_seconds=sum(p.predict_seconds for p in parts), n_predicted=sum(p.n_predicted for p in parts),
        fit_seconds=sum(p.fit_seconds for p in parts), cache_hits=sum(p.cache_hits for p in parts),
        duration_s=sum(p.duration_s or 0.0 for p in parts), usage=usage, train_scores=first.train_scores,
        data_quality=first.data_quality, image_layers=None, shard=None, departures=first.departures,
        options=first.options, started=min((p.started for p in parts if p.started), default=None))


__all__ = ["evidence_of", "finish_case", "finish_comparison", "merge_evidence", "withhold_figures"]
