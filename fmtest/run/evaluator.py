"""What one process measures: the objects that must exist once (datasets, their groups and folds, fitted
pipelines, the prediction cache, the executor) and each case's evidence, clean or perturbed. It judges
nothing: `fmtest.plugin.session` hands the evidence to the verdict layer."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import tempfile
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

from fmtest.config.settings import Settings
from fmtest.data import Dataset, Group, SampleRef, SampleSet
from fmtest.data.folds import stratified_folds
from fmtest.data.io import refuse_links_leaving
from fmtest.imaging.perturb import PERTURBATIONS
from fmtest.pipelines import Pipeline, PipelineContext
from fmtest.pipelines.vlm.store import store_folder
from fmtest.run.evaluate import (
    CaseEvidence,
    LayerSink,
    Part,
    ShardSlice,
    collect_case,
    predict_all,
)
from fmtest.run.executors import PipelineRecipe, make_executor
from fmtest.run.guardrails import Finding, check_data_quality
from fmtest.run.plan import Case
from fmtest.run.cache import SAMPLES_FOLDER
from fmtest.run.records import N_THUMBNAILS
from fmtest.run.samples import SampleStore
from fmtest.util.fsutil import atomic_write


class Evaluator:
    """Per-process owner of datasets and fitted pipelines, so each loads once per session."""

    def __init__(self, settings: Settings, *, progress: bool = True):
        self.settings = settings
        self.progress = progress
        self._datasets: dict[str, Dataset] = {}
        self._groups: dict[str, list[Group]] = {}
        self._pipelines: dict[tuple[str, str], Pipeline] = {}
        self._fitted: set[tuple[str, str]] = set()
        self._findings: dict[str, list[Finding]] = {}
        self._cache = None
        self._executor = None

    @property
    def cache(self):
        """The prediction cache, or None: none asked for, or its folder cannot take a write (one warning,
        then the run goes on predicting everything)."""
        if self._cache is None and self.settings.cache_dir is not None:
            from fmtest.run.cache import PredictionCache

            self._cache = PredictionCache.open_or_none(self.settings.cache_dir) or False
        return self._cache or None

    @property
    def executor(self):
        """Where cache misses are predicted (fmtest.run.executors), made on first need."""
        if self._executor is None:
            s = self.settings
            self._executor = make_executor(s.executor, {**s.executor_options, "address": s.ray_address})
        return self._executor

    def close(self) -> None:
        """Close the prediction cache: folds the SQLite journal back, so CI caches one compact file."""
        if self._cache:
            self._cache.close()
        if self._executor is not None:
            self._executor.close()

    def dataset(self, name: str) -> Dataset:
        """The dataset, opened once; a symbolic link in its folders that leaves the data root is refused."""
        if name not in self._datasets:
            config = self.settings.config
            dataset = config.dataset_class(name).from_config(self.settings.data_root, config.datasets.get(name, {}))
            if not self.settings.follow_outside_links:
                refuse_links_leaving(dataset.folders, self.settings.data_root)
            self._datasets[name] = dataset
        return self._datasets[name]

    def context(self, case: Case, group: str | None = None) -> PipelineContext:
        cfg = self.settings.config
        return PipelineContext(
            dataset=case.dataset, group=group, options=cfg.pipeline_options(case.pipeline, case.dataset, group),
            prompt=cfg.prompt_for(case.dataset, group, case.pipeline),
            weights_dir=self.settings.weights_dir, device=self.settings.device,
            work_dir=self.settings.cache_dir or Path(tempfile.gettempdir()) / "fmtest",
            request_store=store_folder(self.settings.cache_dir) if self.settings.cache_dir is not None else None,
            suite_dir=cfg.directory, progress=self.progress,
        )

    def check_available(self, case: Case) -> None:
        """Raise Unavailable when the pipeline (or a comparison's reference) cannot run here (weights, key, endpoint)."""
        for pipeline in (case.pipeline, case.against):
            if pipeline is not None:
                probe = dataclasses.replace(case, pipeline=pipeline, against=None)
                self.settings.config.pipeline_class(pipeline).check_available(self.context(probe))

    def groups(self, name: str) -> list[Group]:
        """The dataset's groups; with a usable prediction cache, generated samples are kept beside it
        (`fmtest.run.samples`), so a rerun reads them instead of generating them again."""
        if name not in self._groups:
            groups = self.dataset(name).groups()
            self.settings.config.check_groups(name, [g.name for g in groups])
            if self.cache is not None:
                store = SampleStore(Path(self.settings.cache_dir) / SAMPLES_FOLDER)
                groups = [store.group(g) for g in groups]
            self._groups[name] = groups
        return self._groups[name]

    def case_groups(self, case: Case) -> list[Group]:
        """The groups a case is fitted and scored by: the dataset's groups, or for a pipeline that learns
        from labelled images (`cross_validation_folds` = k) k stratified folds of each group's test images,
        each fold's model fitted on the other folds, so every image is predicted by a model that never saw it."""
        k = self.settings.config.pipeline_class(case.pipeline).cross_validation_folds
        if not k:
            return self.groups(case.dataset)
        folds = []
        for group in self.groups(case.dataset):
            for i, (train, held_out) in enumerate(stratified_folds(group.test, k, self.settings.config.seed)):
                folds.append(Group(f"{group.name}/fold{i + 1}", train, held_out, group.load_reference))
        return folds

    def pipeline(self, case: Case, group: Group) -> Pipeline:
        key = (case.id, group.name)
        if key not in self._pipelines:
            context = dataclasses.replace(self.context(case, group.name),
                                          data_fingerprint=self._data_fingerprint(case.dataset, group))
            self._pipelines[key] = self.settings.config.pipeline_class(case.pipeline)(context)
        return self._pipelines[key]

    def _data_fingerprint(self, name: str, group: Group) -> str:
        """What a pipeline may learn from: dataset options, the training images' ids, labels and content
        (sha256 of the decoded image), the reference image. A training image replaced under the same name
        changes the key, so its predictions are made again."""
        h = hashlib.sha256(json.dumps(self.settings.config.datasets.get(name, {}), sort_keys=True, default=str).encode())
        h.update(group.name.encode())
        for ref in group.train.refs:
            h.update(f"{ref.id}\t{ref.label}\t{ref.get().sha256}\n".encode())
        reference = group.load_reference()
        h.update((reference.sha256 if reference is not None else "no reference").encode())
        return h.hexdigest()[:16]

    def fit(self, case: Case, group: Group) -> None:
        """Fit a group's pipeline once per process, and only when some prediction is not cached."""
        key = (case.id, group.name)
        if key not in self._fitted:
            self.pipeline(case, group).fit(group.train, group.load_reference())
            self._fitted.add(key)

    def parts(self, case: Case, images: Callable[[Group], SampleSet] = lambda g: g.test) -> list[Part]:
        """The case split by group (or fold), each with its own pipeline that fits on first need."""
        return [Part(self.pipeline(case, g), images(g), lambda g=g: self.fit(case, g), g.load_reference, g.name,
                     PipelineRecipe.of(self.pipeline(case, g), g))
                for g in self.case_groups(case)]

    def predict(self, case: Case, images: Callable[[Group], SampleSet], *, desc: str = "", progress=None):
        """(sample, prediction, from_cache) over the chosen images of every group."""
        for part in self.parts(case, images):
            yield from predict_all(part.pipeline, part.test, cache=self.cache, prepare=part.fit, desc=desc,
                                   executor=self.executor, recipe=part.recipe,
                                   progress=self.progress if progress is None else progress)

    def evidence(self, case: Case, layers: LayerSink | None = None) -> CaseEvidence:
        """What the run measures for a case: its test images' rows (this shard's under --fm-shard), the good
        training images' scores for the risk table, the dataset's data-quality findings, how the case departs from
        the study (shown beside its published number), its options and start time (for trackers). `layers` receives
        each image's full-size layers for the scoreboard's viewer."""
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        evidence = self._collect(case, self._test_images(case), layers=layers)
        config = self.settings.config
        return replace(evidence, train_scores=self._good_train_scores(case, evidence),
                       data_quality=self.data_quality(case.dataset) + self._excluded_from_iou(case, evidence),
                       started=started,
                       departures=config.case_departures(case.pipeline, case.dataset, self.settings.weights_dir),
                       options=config.effective_options(case.pipeline, case.dataset),
                       shard=self._shard_slice(case) if self.settings.shard is not None else None)

    def _excluded_from_iou(self, case: Case, evidence: CaseEvidence) -> list[Finding]:
        """One finding per defective image the case scored without IoU because the dataset left its empty mask
        out (`empty_nok_masks = "exclude"`), naming the file, so reports count them (also with guardrails off)."""
        if evidence.task != "segmentation":
            return []
        files = self.dataset(case.dataset).excluded_mask_files
        return [Finding("excluded_from_iou", row.id, f"{files[row.id]}: the mask of this defective image is empty; "
                        "left out of IoU (empty_nok_masks = \"exclude\")")
                for row in evidence.images if row.label == "NOK" and row.iou is None and row.id in files]

    def _collect(self, case: Case, images: Callable[[Group], SampleSet], *, n_thumbnails: int = N_THUMBNAILS,
                 desc: str | None = None, layers: LayerSink | None = None, regions: bool = True) -> CaseEvidence:
        """The rows of the chosen images of every group."""
        dataset = self.dataset(case.dataset)
        return collect_case(
            case, self.parts(case, images), has_masks=dataset.has_masks, dataset_fingerprint=dataset.fingerprint,
            cache=self.cache, progress=self.progress, n_thumbnails=n_thumbnails, desc=desc, layers=layers,
            executor=self.executor, summarise_regions=regions,
        )

    def data_quality(self, name: str) -> list[Finding]:
        """Guardrail findings for a dataset (fmtest.run.guardrails), computed once and kept beside the cache.

        `[guardrails] enabled = false` turns them off; `alignment = false` skips the registration check;
        a table `[guardrails.<dataset>]` overrides settings for one dataset.
        """
        opts = self.settings.config.guardrails_for(name)
        if not opts.pop("enabled"):
            return []
        if name in self._findings:
            return self._findings[name]
        store = None
        if self.cache is not None:  # kept beside a usable prediction cache only
            key = hashlib.sha256(json.dumps([self.dataset(name).fingerprint, opts,
                                             [self._data_fingerprint(name, g) for g in self.groups(name)]],
                                            sort_keys=True, default=str).encode()).hexdigest()[:16]
            store = Path(self.settings.cache_dir) / "guardrails" / f"{name}-{key}.json"
            with contextlib.suppress(OSError, ValueError, TypeError):  # absent or damaged: computed again
                self._findings[name] = [Finding(**f) for f in json.loads(store.read_text())]
                return self._findings[name]
        from fmtest.imaging.align import estimate_alignment

        check_alignment = opts.pop("alignment")
        findings = []
        for group in self.groups(name):
            findings += check_data_quality(
                group.train, group.test, group.load_reference(), progress=self.progress,
                alignment=(lambda image, ref: estimate_alignment(image, ref).quality) if check_alignment else None,
                **opts)
        self._findings[name] = findings
        if store is not None:
            with contextlib.suppress(OSError):  # a full disk costs the next run a recomputation, nothing more
                atomic_write(store, json.dumps([dataclasses.asdict(f) for f in findings]))
        return findings

    def perturbed_evidence(self, case: Case, perturbation: str, level: float,
                           chosen: Collection[str]) -> CaseEvidence:
        """The rows of the chosen test images perturbed at one level of a ladder: an ordinary evaluation of
        perturbed copies (each with its own seed, so a rerun hits the cache)."""
        perturb = PERTURBATIONS[perturbation]
        shard_of = self._test_images(case)
        seed = self.settings.config.seed

        def perturbed(group: Group) -> SampleSet:
            return SampleSet([_perturbed_ref(r, perturb, level, seed) for r in shard_of(group).refs if r.id in chosen])

        return self._collect(case, perturbed, n_thumbnails=0, desc=f"{case.id} {perturbation}={level:g}",
                             regions=False)  # perturbed rows are compared with the clean ones, not scored

    def _test_images(self, case: Case) -> Callable[[Group], SampleSet]:
        """Each group's (or fold's) test images, or under --fm-shard only this shard's: chosen per dataset
        group, so every case of a shard, cross-validated or not, sees the same images."""
        shard = self.settings.shard
        if shard is None:
            return lambda g: g.test
        chosen = {r for g in self.groups(case.dataset) for r in shard.refs(g.test)}
        return lambda g: g.test.filter(lambda r: r in chosen)

    def _shard_slice(self, case: Case) -> ShardSlice:
        """Where this shard's images stand in the whole case's image order, so the merged rows (and their
        bootstrap intervals) equal an unsharded run's."""
        everything = [r for g in self.case_groups(case) for r in g.test.refs]
        mine = self._test_images(case)
        chosen = {r for g in self.case_groups(case) for r in mine(g).refs}
        return ShardSlice(str(self.settings.shard), len(everything),
                          tuple(i for i, r in enumerate(everything) if r in chosen))

    def _good_train_scores(self, case: Case, evidence: CaseEvidence) -> list[float] | None:
        """Scores of good TRAINING images, where a scoring pipeline's operating point is set (not for a
        cross-validated pipeline: its training images are the scored ones, seen by the model)."""
        cross_validated = self.settings.config.pipeline_class(case.pipeline).cross_validation_folds
        if not evidence.images or any(i.score is None for i in evidence.images) or cross_validated:
            return None
        n = int(self.settings.config.risk["n_train_scores"])
        return [p.score for _, p, _ in
                self.predict(case, lambda g: g.train.filter(lambda r: r.label == "OK")[:n], progress=False)]


def _perturbed_ref(ref: SampleRef, perturb, level: float, seed: int) -> SampleRef:
    """The same sample, perturbed on load with a per-image seed so reruns hit the cache."""
    image_seed = seed + int(hashlib.sha256(ref.id.encode()).hexdigest()[:8], 16)
    return SampleRef(ref.id, ref.label, lambda: perturb.apply(ref.get(), level, image_seed), memo=False)
