"""Run one case (pipeline x dataset): fit, predict in batches through the cache, score, judge.

This is the only place that sees a pipeline's predictions next to the ground truth; it turns
them into a CaseResult with per-image records, metrics, intervals and the thresholds' verdict.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from fmtest import metrics
from fmtest.data.base import Group
from fmtest.data.sample import NOK, Sample, SampleSet
from fmtest.executors import Executor, PipelineRecipe
from fmtest.executors.local import LocalExecutor
from fmtest.overlay import overlay_thumbnail
from fmtest.pipelines.base import Pipeline, Prediction, Task
from fmtest.verdict.comparison import comparison_id
from fmtest.verdict.gates import judge, metric_of_threshold
from fmtest.verdict.layers import MANIFEST_KEY, LayerStore
from fmtest.verdict.results import N_THUMBNAILS, CaseResult, ImageResult, Thumbnail
from fmtest.verdict.scoring import badness, record_invalid_answers, score_case


@dataclass(frozen=True)
class Case:
    """A pipeline on a dataset; with `against`, a comparison of that pipeline with another on it."""

    pipeline: str
    dataset: str
    task: Task
    against: str | None = None

    @property
    def id(self) -> str:
        if self.against is not None:
            return comparison_id(self.pipeline, self.against, self.dataset)
        return f"{self.pipeline}-{self.dataset}"


def predict_all(pipeline: Pipeline, samples, *, cache=None, progress: bool = True, desc: str = "",
                timing: dict | None = None, prepare: Callable[[], None] | None = None,
                executor: Executor | None = None, recipe: PipelineRecipe | None = None):
    """Yield (sample, prediction, from_cache) for every sample, predicting only cache misses, in batches.

    `prepare` (fitting, usually) runs before the first real prediction, so a warm cache skips it.
    `timing`, when given, accumulates the seconds spent inside `pipeline.predict` and the images it saw.
    `executor` computes the misses (default: this process; `recipe` builds the pipeline on a Ray actor);
    the answers come back in order and only this process reads and writes the cache.
    """
    looked_up: collections.deque = collections.deque()  # (batch, cached) of every batch handed to the executor

    def misses():
        for batch in samples.batches(pipeline.batch_size):
            cached = (cache.get_many(pipeline.fingerprint, pipeline.model_id, [s.sha256 for s in batch])
                      if cache is not None else {})
            looked_up.append((batch, cached))
            yield [s for s in batch if s.sha256 not in cached]

    bar = tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, leave=False)
    answers = (executor or LocalExecutor()).predict_batches(pipeline, misses(), prepare=prepare, recipe=recipe)
    try:
        for predictions, seconds in answers:
            batch, cached = looked_up.popleft()
            todo = [s for s in batch if s.sha256 not in cached]
            fresh = dict(zip((s.sha256 for s in todo), predictions))
            if timing is not None and todo:
                timing["seconds"] = timing.get("seconds", 0.0) + seconds
                timing["images"] = timing.get("images", 0) + len(todo)
            for sample in todo:
                _check_prediction(pipeline, sample, fresh[sample.sha256])
            if cache is not None:  # failed answers are retried on the next run, never cached
                cache.put_many(pipeline.fingerprint, pipeline.model_id,
                               {k: p for k, p in fresh.items() if p.error is None}, pipeline=pipeline.name)
            for sample in batch:
                hit = sample.sha256 in cached
                yield sample, cached[sample.sha256] if hit else fresh[sample.sha256], hit
            bar.update(len(batch))
    finally:
        answers.close()
        bar.close()


def _check_prediction(pipeline: Pipeline, sample: Sample, prediction: Prediction) -> None:
    if pipeline.task == "segmentation" and prediction.error is None:
        if prediction.mask is None:
            raise RuntimeError(f"pipeline {pipeline.name} returned no mask for {sample.id}")
        if prediction.mask.shape != sample.image.shape[:2]:
            raise RuntimeError(
                f"pipeline {pipeline.name} returned a {prediction.mask.shape} mask for {sample.id}, "
                f"whose image is {sample.image.shape[:2]}"
            )


@dataclass(frozen=True)
class Part:
    """One group of a case: its fitted-on-demand pipeline and the test images it answers for."""

    pipeline: Pipeline
    test: SampleSet
    fit: Callable[[], None]
    reference: Callable[[], Sample | None] = lambda: None  # the group's defect-free image, for the viewer
    group: str | None = None  # its name, recorded per image for the case's breakdowns
    recipe: PipelineRecipe | None = None  # how a worker process builds and fits its own copy of `pipeline`

    @classmethod
    def of(cls, pipeline: Pipeline, group: Group) -> Part:
        return cls(pipeline, group.test, lambda: pipeline.fit(group.train, group.load_reference()),
                   group.load_reference, group.name, PipelineRecipe.of(pipeline, group))


def evaluate_case(
    case: Case,
    parts: Sequence[Part],
    thresholds: Mapping[str, float],
    *,
    has_masks: bool = True,
    dataset_fingerprint: str | None = None,
    cache=None,
    progress: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
    n_thumbnails: int = N_THUMBNAILS,
    desc: str | None = None,
    layers: LayerStore | None = None,
    executor: Executor | None = None,
) -> CaseResult:
    """Predict every test image of every part, fitting a part's pipeline only if a prediction is
    not cached, then pool all images and score. Thresholds judge, never tune.

    The parts are the source of images: a case's test images, or (robustness) perturbed copies of them.
    `layers`, when given, receives every scored image's full-size layers for the scoreboard's viewer.
    """
    started = time.perf_counter()
    fit_seconds = {"fit": 0.0}

    def timed(fit):
        def run():
            t0 = time.perf_counter()
            fit()
            fit_seconds["fit"] += time.perf_counter() - t0
        return run

    images: list[ImageResult] = []
    worst: list = []  # min-heap of (badness, tiebreak, sample, prediction): the strip of worst images
    tiebreak = itertools.count()
    timing: dict = {}
    n_cached = 0
    usage: dict[str, float] = {}
    scored_segmentation = case.task == "segmentation" and has_masks
    stream = itertools.chain.from_iterable(
        ((part, *item) for item in predict_all(
            part.pipeline, part.test, cache=cache, progress=progress, timing=timing, prepare=timed(part.fit),
            executor=executor, recipe=part.recipe,
            desc=(desc or case.id) if len(parts) == 1 else f"{desc or case.id} [{i + 1}/{len(parts)}]"))
        for i, part in enumerate(parts)
    )
    references: dict[int, Sample | None] = {}  # each part's reference, loaded once
    for part, sample, prediction, from_cache in stream:
        n_cached += from_cache
        iou = None
        if scored_segmentation and sample.mask is not None:
            iou = image_iou(sample, prediction)
        images.append(ImageResult(
            id=sample.id, sha256=sample.sha256, label=sample.label, predicted=prediction.label,
            score=_finite_or_none(prediction.score), iou=iou, reasoning=prediction.reasoning,
            error=prediction.error, group=part.group,
            defect_type=_text_or_none(sample.meta.get("defect_type")) if sample.label == NOK else None,
        ))
        if layers is not None:
            if id(part) not in references:
                references[id(part)] = part.reference()
            layers.add(sample, prediction, references[id(part)])
        for k, v in ({} if from_cache else prediction.usage).items():  # a cache hit cost nothing this run
            if isinstance(v, int | float):
                usage[k] = usage.get(k, 0.0) + float(v)
        entry = (badness(sample.label, prediction.label, iou), next(tiebreak), sample, prediction, iou)
        if len(worst) < n_thumbnails:
            heapq.heappush(worst, entry)
        elif worst and entry[0] > worst[0][0]:
            heapq.heapreplace(worst, entry)

    first = parts[0].pipeline
    fingerprints = sorted({p.pipeline.fingerprint for p in parts})
    result = CaseResult(id=case.id, pipeline=case.pipeline, dataset=case.dataset, task=case.task,
                        images=images, model_sha256=first.model_id,
                        config_fingerprint=fingerprints[0] if len(fingerprints) == 1 else
                        hashlib.sha256("".join(fingerprints).encode()).hexdigest()[:16],
                        dataset_fingerprint=dataset_fingerprint)
    score_case(result, task=case.task if scored_segmentation else "classification", n_resamples=n_resamples,
               seed=seed)
    n_predicted = timing.get("images", 0)
    result.metrics["images_per_second"] = n_predicted / timing["seconds"] if n_predicted else math.nan
    result.metrics["fit_seconds"] = fit_seconds["fit"]
    result.thumbnails = [_thumbnail(s, p, iou) for _, _, s, p, iou in sorted(worst, key=lambda e: -e[0])]
    result.extra["cache"] = {"hits": n_cached, "predicted": n_predicted}
    record_invalid_answers(result)
    if layers is not None:
        result.extra[MANIFEST_KEY] = layers.manifest()
    if usage:
        result.extra["usage"] = usage
    result.thresholds = {k: float(v) for k, v in thresholds.items() if metric_of_threshold(k) in result.metrics}
    result.duration_s = time.perf_counter() - started
    return judge(result)


def image_iou(sample: Sample, prediction: Prediction) -> float:
    """IoU of one image; an unusable prediction (error, no mask) overlaps nothing, so it cannot
    drop out of the mean."""
    return 0.0 if prediction.mask is None else metrics.iou(prediction.mask, sample.mask, sample.ignore)


def _thumbnail(sample: Sample, prediction: Prediction, iou: float | None) -> Thumbnail:
    """`iou` is the one computed while scoring (None when the image was not scored for IoU)."""
    caption = f"{sample.id}: {sample.label} -> {prediction.label}"
    if sample.label == NOK and iou is not None and prediction.mask is not None:
        caption += f", IoU {iou:.2f}"
    png = overlay_thumbnail(sample.image, prediction.mask, sample.mask, sample.ignore, image_id=sample.id)
    return Thumbnail(id=sample.id, png_base64=png, caption=caption)


def _text_or_none(x) -> str | None:
    return None if x is None else str(x)


def _finite_or_none(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)
