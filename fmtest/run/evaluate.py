"""Run one case (pipeline x dataset): fit, predict in batches through the cache, record each image.

This is the only place that sees a pipeline's predictions next to the ground truth; it turns them
into per-image rows (label, answer, score, IoU) and what the run cost: a case's evidence. Judging
it is the verdict's job (`fmtest.verdict.finish.finish_case`), the same for a fresh, a parallel or
a merged run.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import heapq
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from fmtest.data.base import Group
from fmtest.data.departures import Departure
from fmtest.data.sample import LABELS, NOK, OK, Sample, SampleSet
from fmtest.errors import PipelineError
from fmtest.imaging.overlay import overlay_thumbnail, thumbnail_key
from fmtest.metrics import functional as metrics
from fmtest.metrics.region import DEFAULT_GRID, ImageRegionSummary, summarise_image
from fmtest.pipelines.base import Pipeline, Prediction
from fmtest.run.cache import THUMBNAILS_FOLDER
from fmtest.run.executors import Executor, PipelineRecipe
from fmtest.run.executors.local import LocalExecutor
from fmtest.run.guardrails import Finding
from fmtest.run.plan import Case
from fmtest.run.records import N_THUMBNAILS, ImageResult, Thumbnail, badness


class LayerSink(Protocol):
    """Receives each scored image's full-size layers for the scoreboard's viewer (`fmtest.report.layers`)."""

    def add(self, sample: Sample, prediction: Prediction, reference: Sample | None) -> None: ...

    def manifest(self) -> dict: ...


@dataclass(frozen=True)
class ShardSlice:
    """Where a shard's images stand in the whole case (`fmtest merge` puts the rows back in that order)."""

    shard: str  # "K/N"
    n_images: int  # of the whole case
    positions: tuple[int, ...]  # of this shard's rows, in the whole case's image order

    def as_dict(self) -> dict:
        return {"shard": self.shard, "n_images": self.n_images, "positions": list(self.positions)}

    @classmethod
    def from_dict(cls, d: Mapping) -> ShardSlice:
        return cls(str(d["shard"]), int(d["n_images"]), tuple(int(p) for p in d["positions"]))


@dataclass(frozen=True)
class CaseEvidence:
    """What a run measured for one case, before any verdict: its per-image rows and what they cost."""

    id: str
    pipeline: str
    dataset: str
    task: str  # how the rows are scored: "segmentation" (IoU and F2) or "classification" (F2)
    images: Sequence[ImageResult]
    thumbnails: Sequence[Thumbnail] = ()
    model_sha256: str | None = None
    config_fingerprint: str | None = None
    dataset_fingerprint: str | None = None
    predict_seconds: float = 0.0  # inside the pipeline's predict, over `n_predicted` images
    n_predicted: int = 0  # images predicted this run (the rest came from the cache)
    fit_seconds: float = 0.0
    cache_hits: int = 0
    duration_s: float | None = None
    usage: Mapping[str, float] = field(default_factory=dict)  # what an API pipeline spent this run
    train_scores: Sequence[float] | None = None  # good training images' scores: the risk table's operating point
    data_quality: Sequence[Finding] = ()  # guardrail findings of the dataset
    image_layers: Mapping | None = None  # the viewer's layer manifest, when a report is written
    shard: ShardSlice | None = None
    departures: Sequence[Departure] = ()  # how the case departs from the study's run of it (fmtest.data.departures)
    options: Mapping[str, object] = field(default_factory=dict)  # every option the pipeline ran with (defaults too)
    started: str | None = None  # when the case started, UTC (ISO 8601): where a tracker places its run in time


def predict_all(pipeline: Pipeline, samples, *, cache=None, progress: bool = True, desc: str = "",
                timing: dict | None = None, prepare: Callable[[], None] | None = None,
                executor: Executor | None = None, recipe: PipelineRecipe | None = None,
                regions: dict[str, ImageRegionSummary] | None = None):
    """Yield (sample, prediction, from_cache) for every sample, predicting only cache misses, in batches.

    `prepare` (fitting, usually) runs before the first real prediction, so a warm cache skips it.
    `timing`, when given, accumulates the seconds spent inside `pipeline.predict` and the images it saw.
    `executor` computes the misses (default: this process; `recipe` builds the pipeline on a Ray actor);
    the answers come back in order and only this process reads and writes the cache.
    `regions`, when given, receives each image's region summary by sample id before the image is yielded
    (`region_summary`: a usable answer with a score map, on an image with a mask). It is computed from the
    full-size score map, which the cache does not keep, so the cache keeps the summary beside the answer, for
    this ground truth; a cached answer whose summary is not there is predicted again.
    """
    looked_up: collections.deque = collections.deque()  # (batch, cached, summaries) of every batch handed out
    # the cache key, once: one model answers for all of these samples
    fingerprint, model_id = (pipeline.fingerprint, pipeline.model_id) if cache is not None else ("", "")

    def misses():
        for batch in samples.batches(pipeline.batch_size):
            cached = cache.get_many(fingerprint, model_id, [s.sha256 for s in batch]) if cache is not None else {}
            summaries: dict[str, ImageRegionSummary] = {}
            if regions is not None and cached:
                wanted = {s.sha256: truth_sha256(s) for s in batch
                          if s.sha256 in cached and summarised(pipeline, s, cached[s.sha256])}
                stored = cache.get_regions(fingerprint, model_id, wanted) if wanted else {}
                summaries = {sha: summary for sha, summary in stored.items() if summary.grid == DEFAULT_GRID.name}
                for sha in sorted(wanted.keys() - summaries.keys()):  # no summary for this truth: predicted again
                    del cached[sha]
                    cache.stats.hits, cache.stats.misses = cache.stats.hits - 1, cache.stats.misses + 1
            looked_up.append((batch, cached, summaries))
            yield [s for s in batch if s.sha256 not in cached]

    bar = tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, leave=False)
    answers = (executor or LocalExecutor()).predict_batches(pipeline, misses(), prepare=prepare, recipe=recipe)
    try:
        for predictions, seconds in answers:
            batch, cached, summaries = looked_up.popleft()
            todo = [s for s in batch if s.sha256 not in cached]
            predictions = list(predictions)
            if len(predictions) != len(todo):
                raise PipelineError(f"pipeline {pipeline.name} returned {len(predictions)} predictions for "
                                    f"{len(todo)} images (expected one per image, in order)")
            fresh = {s.sha256: checked_prediction(pipeline, s, p) for s, p in zip(todo, predictions, strict=True)}
            if timing is not None and todo:
                timing["seconds"] = timing.get("seconds", 0.0) + seconds
                timing["images"] = timing.get("images", 0) + len(todo)
            fresh_summaries = {s.sha256: region_summary(s, fresh[s.sha256]) for s in todo
                               if regions is not None and summarised(pipeline, s, fresh[s.sha256])}
            if cache is not None:
                kept = {k: p for k, p in fresh.items() if cacheable(pipeline, p)}
                cache.put_many(fingerprint, model_id, kept, pipeline=pipeline.name)
                by_sha = {s.sha256: s for s in todo}
                cache.put_regions(fingerprint, model_id, {k: (truth_sha256(by_sha[k]), v) for k, v in
                                                          fresh_summaries.items() if k in kept}, pipeline=pipeline.name)
            for sample in batch:
                hit = sample.sha256 in cached
                if regions is not None:
                    summary = (summaries if hit else fresh_summaries).get(sample.sha256)
                    regions.pop(sample.id, None)
                    if summary is not None:
                        regions[sample.id] = dataclasses.replace(summary, image_id=sample.id)
                yield sample, cached[sample.sha256] if hit else fresh[sample.sha256], hit
            bar.update(len(batch))
    finally:
        answers.close()
        bar.close()


def cacheable(pipeline: Pipeline, prediction: Prediction) -> bool:
    """Whether a rerun may take this answer from the cache instead of asking again. A local pipeline's
    failed answer (an image that cannot be aligned, a non-finite score) is what the same image and
    settings give every time, so it is cached like any answer; a remote service's failure (refused,
    timed out, malformed) may not recur and is asked again on the next run."""
    return prediction.error is None or not pipeline.remote_api


def summarised(pipeline: Pipeline, sample: Sample, prediction: Prediction) -> bool:
    """Whether an image gets a region summary: a segmentation pipeline's usable answer with a score map, on an
    image whose ground truth is a mask."""
    return (pipeline.task == "segmentation" and sample.mask is not None and prediction.error is None
            and prediction.score_map is not None and prediction.mask is not None)


def region_summary(sample: Sample, prediction: Prediction) -> ImageRegionSummary:
    """The image's score map against its ground truth, on the fixed grid (`fmtest.metrics.region`): a
    deterministic function of the answer and the truth, so the cache keeps it by both (`truth_sha256`)."""
    return summarise_image(sample.id, prediction.score_map, sample.mask, prediction.mask, sample.ignore)


def truth_sha256(sample: Sample) -> str:
    """Content hash of an image's ground truth (mask and ignored pixels): the image's own hash does not cover a
    relabelled mask, so a region summary is kept by both."""
    h = hashlib.sha256()
    for part in (sample.mask, sample.ignore):
        if part is None:
            h.update(b"none")
        else:
            h.update(str(part.shape).encode())
            h.update(np.packbits(np.asarray(part, dtype=bool), axis=None).tobytes())
    return h.hexdigest()


def checked_prediction(pipeline: Pipeline, sample: Sample, prediction: Prediction) -> Prediction:
    """The prediction, or a failed one saying what is wrong with it: an answer that is neither OK nor NOK,
    a non-finite score, a segmentation mask that marks a defect under an OK label are unusable answers,
    counted by the gate, never read as OK. (NOK with an empty mask is an answer: a defect found but not
    located, IoU 0.) A missing or misshapen mask is the pipeline's bug and stops the case."""
    if prediction.error is not None:
        return prediction
    where = f"pipeline {pipeline.name} for {sample.id}"
    if prediction.label not in LABELS:
        return Prediction.failed(f"{where}: answer {prediction.label!r} is neither OK nor NOK")
    if prediction.score is not None and not (isinstance(prediction.score, int | float) and
                                             math.isfinite(prediction.score)):
        return Prediction.failed(f"{where}: score {prediction.score!r} is not a finite number")
    if pipeline.task == "segmentation":
        if prediction.mask is None:
            raise PipelineError(f"{where}: no mask (a segmentation pipeline answers with one)")
        if prediction.mask.shape != sample.image.shape[:2]:
            raise PipelineError(f"{where}: a {prediction.mask.shape} mask for an image of {sample.image.shape[:2]}")
        if prediction.score_map is not None and np.shape(prediction.score_map) != sample.image.shape[:2]:
            raise PipelineError(f"{where}: a {np.shape(prediction.score_map)} score map for an image of "
                                f"{sample.image.shape[:2]}")
        if prediction.score_map is not None and not np.isfinite(prediction.score_map).all():
            return Prediction.failed(f"{where}: the score map holds "
                                     f"{int((~np.isfinite(prediction.score_map)).sum())} NaN or infinite values")
        if prediction.label == OK and np.any(prediction.mask):
            return Prediction.failed(f"{where}: label OK contradicts its mask, which marks "
                                     f"{int(np.count_nonzero(prediction.mask))} defect pixels")
    return prediction


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


def collect_case(
    case: Case,
    parts: Sequence[Part],
    *,
    has_masks: bool = True,
    dataset_fingerprint: str | None = None,
    cache=None,
    progress: bool = True,
    n_thumbnails: int = N_THUMBNAILS,
    desc: str | None = None,
    layers: LayerSink | None = None,
    executor: Executor | None = None,
    summarise_regions: bool = True,
) -> CaseEvidence:
    """Predict every test image of every part, fitting a part's pipeline only if a prediction is
    not cached, and record each image, pooled over the parts.

    The parts are the source of images: a case's test images, or (robustness) perturbed copies of them.
    `layers`, when given, receives every scored image's full-size layers for the scoreboard's viewer.
    `summarise_regions` records each image's region summary where there is one (not wanted for the
    robustness suite's perturbed copies, whose rows are compared, not scored).
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
    regions: dict[str, ImageRegionSummary] = {}  # filled by predict_all with each image's region summary
    stream = itertools.chain.from_iterable(
        ((part, *item) for item in predict_all(
            part.pipeline, part.test, cache=cache, progress=progress, timing=timing, prepare=timed(part.fit),
            executor=executor, recipe=part.recipe,
            regions=regions if scored_segmentation and summarise_regions else None,
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
            score=prediction.score, iou=iou, reasoning=prediction.reasoning,
            error=prediction.error, group=part.group,
            defect_type=_text_or_none(sample.meta.get("defect_type")) if sample.label == NOK else None,
            region=regions.pop(sample.id, None),
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
    return CaseEvidence(
        id=case.id, pipeline=case.pipeline, dataset=case.dataset,
        task=case.task if scored_segmentation else "classification", images=images,
        thumbnails=[_thumbnail(s, p, iou, cache) for _, _, s, p, iou in sorted(worst, key=lambda e: -e[0])],
        model_sha256=first.model_id,
        config_fingerprint=fingerprints[0] if len(fingerprints) == 1 else
        hashlib.sha256("".join(fingerprints).encode()).hexdigest()[:16],
        dataset_fingerprint=dataset_fingerprint, predict_seconds=timing.get("seconds", 0.0),
        n_predicted=timing.get("images", 0), fit_seconds=fit_seconds["fit"], cache_hits=n_cached,
        duration_s=time.perf_counter() - started, usage=usage,
        image_layers=layers.manifest() if layers is not None else None,
    )


def image_iou(sample: Sample, prediction: Prediction) -> float:
    """IoU of one image; an unusable prediction (error, no mask) overlaps nothing, so it cannot
    drop out of the mean."""
    return 0.0 if prediction.mask is None else metrics.iou(prediction.mask, sample.mask, sample.ignore)


_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def _thumbnail(sample: Sample, prediction: Prediction, iou: float | None, cache=None) -> Thumbnail:
    """`iou` is the one computed while scoring (None when the image was not scored for IoU). With a prediction
    cache, the PNG is kept beside it under a key naming everything it is drawn from (`thumbnail_key`), so a
    warm rerun reads the same bytes instead of drawing and encoding them again."""
    caption = f"{sample.id}: {sample.label} -> {prediction.label}"
    if sample.label == NOK and iou is not None and prediction.mask is not None:
        caption += f", IoU {iou:.2f}"
    key = thumbnail_key(sample.sha256, prediction.mask, sample.mask, sample.ignore) if cache is not None else None
    stored = cache.get_file(THUMBNAILS_FOLDER, f"{key}.png") if key else None
    if stored and stored.startswith(_PNG_START) and stored.endswith(_PNG_END):  # a damaged file is drawn again
        png = base64.b64encode(stored).decode("ascii")
    else:
        png = overlay_thumbnail(sample.image, prediction.mask, sample.mask, sample.ignore, image_id=sample.id)
        if key:
            cache.put_file(THUMBNAILS_FOLDER, f"{key}.png", base64.b64decode(png))
    return Thumbnail(id=sample.id, png_base64=png, caption=caption)


def _text_or_none(x) -> str | None:
    return None if x is None else str(x)
