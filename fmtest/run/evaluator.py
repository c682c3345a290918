"""One evaluation run as the plugin sees it: resolved settings, the planned cases, and the
per-process objects that must exist once (datasets, fitted pipelines, cache, result store)."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import replace
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fmtest.config import schema
from fmtest.config.suite import SuiteConfig, load_config
from fmtest.config.lookup import find_config
from fmtest.data import Dataset, Group, SampleRef, SampleSet
from fmtest.data.folds import stratified_folds
from fmtest.data.shards import Shard
from fmtest.errors import ConfigError
from fmtest.run.evaluate import Case, CaseEvidence, Part, ShardSlice, collect_case, predict_all
from fmtest.run.executors import EXECUTORS, PipelineRecipe, make_executor
from fmtest.util.fsutil import atomic_write
from fmtest.pipelines import Pipeline, PipelineContext
from fmtest.verdict.finish import SHARD_KEY, finish_case, finish_comparison
from fmtest.report.layers import LayerStore
from fmtest.verdict.regression import load_baseline
from fmtest.verdict.results import N_THUMBNAILS, CaseResult, case_dict, results_json
from fmtest.verdict.robustness import invariance_row, robustness_result

TASK_ORDER = {"segmentation": 0, "classification": 1, "comparison": 2, "robustness": 3}


@dataclass
class Settings:
    """Options after precedence is applied: command line > environment > suite config > default."""

    config: SuiteConfig
    datasets: list[str]
    pipelines: list[str]
    data_root: Path | None = None
    weights_dir: Path | None = None
    device: str = "cpu"
    report: Path | None = None
    results: Path | None = None
    baseline: Path | None = None
    cache_dir: Path | None = Path(".fmtest_cache")
    strict: bool = False
    markdown: Path | None = None  # the scoreboard as Markdown
    metrics: Path | None = None  # flat metrics file: JSON (DVC), or OpenMetrics text (.txt, GitLab)
    step_summary: Path | None = None  # $GITHUB_STEP_SUMMARY: the Markdown scoreboard is appended there
    mlflow: str | None = None  # tracking URI: --fm-mlflow, $MLFLOW_TRACKING_URI, [mlflow] tracking_uri
    mlflow_experiment: str = "fmtest"
    shard: Shard | None = None  # --fm-shard=K/N: this run scores shard K of N of every case's test images
    executor: str = "local"  # --fm-executor, [executor] kind: where predictions are computed
    executor_options: dict = dataclasses.field(default_factory=dict)  # [executor] actors, num_gpus, num_cpus
    ray_address: str | None = None  # --fm-ray-address, $RAY_ADDRESS, [executor] address


def _split(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [v.strip() for v in items if v.strip()]


def resolve_settings(option, invocation_dir: Path, *, worker_index: int | None = None, args=()) -> Settings:
    """`option(name)` returns the command-line value of `--fm-<name>` (None when not given); `args` are
    the test paths named on the command line, beside which the suite config is looked for."""
    cfg_path = option("config")
    config = load_config(_cli_path(cfg_path, invocation_dir) if cfg_path else find_config(args, invocation_dir))
    file_opts = config.run_options

    def pick(name, env=None):
        cli = option(name)
        if cli not in (None, False, ""):
            return cli, "cli"
        if env and os.environ.get(env):
            return os.environ[env], "cli"  # environment paths are relative to the cwd too
        if name in file_opts:
            return file_opts[name], "file"
        return None, None

    def path(name, env=None):
        value, origin = pick(name, env)
        if value is None:
            return None
        return _cli_path(value, invocation_dir) if origin == "cli" else config.resolve_path(value)

    datasets = _split(pick("dataset")[0]) or config.default_datasets
    pipelines = _split(pick("pipeline")[0]) or config.default_pipelines or config.pipeline_names()
    config.check_selection(datasets, pipelines)
    data_root = path("data_root", "FMTEST_DATA")
    if data_root is not None and not data_root.is_dir():
        raise ConfigError(f"data root {data_root} is not a folder (--fm-data-root / FMTEST_DATA)")
    no_cache = bool(pick("no_cache")[0])
    executor = schema.EXECUTOR.check(config.raw.get("executor", {}), "[executor]", config.path)
    if option("executor") not in (None, *EXECUTORS):
        raise ConfigError(f"--fm-executor={option('executor')}: unknown executor; known: {', '.join(EXECUTORS)}")
    return Settings(
        config=config, datasets=datasets, pipelines=pipelines, data_root=data_root,
        weights_dir=path("weights", "FMTEST_WEIGHTS"),
        device=_device(pick("device")[0] or "auto", worker_index),
        report=path("report"), results=path("results"), baseline=path("baseline"),
        cache_dir=None if no_cache else (path("cache") or invocation_dir / ".fmtest_cache"),
        strict=bool(pick("strict")[0]),
        markdown=path("markdown"), metrics=path("metrics"),
        step_summary=Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None,
        mlflow=pick("mlflow", "MLFLOW_TRACKING_URI")[0] or config.mlflow.get("tracking_uri"),
        mlflow_experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or config.mlflow.get("experiment") or "fmtest",
        shard=Shard.parse(option("shard")) if option("shard") else None,
        executor=option("executor") or executor["kind"], ray_address=option("ray_address") or os.environ.get(
            "RAY_ADDRESS") or executor.get("address"),
        executor_options={k: v for k, v in executor.items() if k in ("actors", "num_gpus", "num_cpus")},
    )


def _cli_path(value, invocation_dir: Path) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else invocation_dir / p


def _device(choice: str, worker_index: int | None) -> str:
    """`auto` picks CUDA when present; pytest-xdist workers are spread one per GPU."""
    if choice not in ("auto", "cpu", "cuda") and not choice.startswith("cuda:"):
        raise ConfigError(f"--fm-device must be cpu, cuda or auto, got {choice!r}")
    if choice == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        if choice == "auto":
            return "cpu"
        raise ConfigError("--fm-device=cuda but torch sees no CUDA device")
    if choice in ("auto", "cuda") and worker_index is not None:
        return f"cuda:{worker_index % torch.cuda.device_count()}"
    return "cuda" if choice == "auto" else choice


def plan_cases(settings: Settings, task: str) -> list[Case]:
    """Every (pipeline, dataset) pair that applies to a task.

    Segmentation needs masks; a segmentation pipeline on a labels-only dataset is scored as a
    classifier (its mask decides OK/NOK), so it appears under classification there.
    """
    if task == "comparison":
        return _comparison_cases(settings)
    study = settings.config.study_cases  # a preset that names its grid ([study] cases) runs exactly that
    cases = [c for c in _applicable_cases(settings, task) if study is None or c.id in study]
    return cases


def _applicable_cases(settings: Settings, task: str) -> list[Case]:
    cases = []
    for d in settings.datasets:
        has_masks = dataset_has_masks(settings.config, d)
        for p in settings.pipelines:
            pipeline_task = settings.config.pipeline_task(p)
            if task == "segmentation" and pipeline_task == "segmentation" and has_masks:
                cases.append(Case(p, d, "segmentation"))
            elif task == "classification" and (pipeline_task == "classification" or not has_masks):
                cases.append(Case(p, d, "classification"))
            elif task == "any":  # the robustness suite: every pipeline on every dataset, scored as it can be
                cases.append(Case(p, d, "segmentation" if pipeline_task == "segmentation" and has_masks
                                  else "classification"))
    return cases


def _comparison_cases(settings: Settings) -> list[Case]:
    """`[compare.<candidate>]` pairs on every dataset of the run where both are scored the same way."""
    scored = {(c.pipeline, c.dataset): c.task for task in ("segmentation", "classification")
              for c in plan_cases(dataclasses.replace(settings, pipelines=_with_compared(settings)), task)}
    cases = []
    for spec in settings.config.compare.values():
        if spec.candidate not in settings.pipelines and spec.against not in settings.pipelines:
            continue  # neither is selected in this run
        for d in settings.datasets:
            task = scored.get((spec.candidate, d))
            if task is not None and task == scored.get((spec.against, d)):
                cases.append(Case(spec.candidate, d, task, against=spec.against))
    return cases


def _with_compared(settings: Settings) -> list[str]:
    names = list(settings.pipelines)
    for spec in settings.config.compare.values():
        names += [n for n in (spec.candidate, spec.against) if n not in names]
    return names


def robustness_perturbations(settings: Settings) -> list[str]:
    """Perturbations the robustness suite runs: `[robustness] perturbations`, default all."""
    from fmtest.imaging.perturb import PERTURBATIONS

    names = settings.config.robustness.get("perturbations") or list(PERTURBATIONS)
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ConfigError(f"unknown perturbation(s) {', '.join(unknown)}; known: {', '.join(PERTURBATIONS)}")
    return list(names)


def dataset_has_masks(config: SuiteConfig, name: str) -> bool:
    return config.dataset_class(name).has_masks and config.datasets.get(name, {}).get("masks", True) is not False


class Evaluator:
    """Per-process owner of datasets and fitted pipelines, so each loads once per session."""

    def __init__(self, settings: Settings, *, progress: bool = True):
        self.settings = settings
        self.progress = progress
        self._datasets: dict[str, Dataset] = {}
        self._groups: dict[str, list[Group]] = {}
        self._pipelines: dict[tuple[str, str], Pipeline] = {}
        self._fitted: set[tuple[str, str]] = set()
        self._findings: dict[str, list[dict]] = {}
        self._cache = None
        self._executor = None
        self.results: dict[str, CaseResult] = {}
        self.baseline = load_baseline(settings.baseline) if settings.baseline else None

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
            self._executor = make_executor(s.executor, s.executor_options, s.ray_address)
        return self._executor

    def close(self) -> None:
        """Close the prediction cache: folds the SQLite journal back, so CI caches one compact file."""
        if self._cache:
            self._cache.close()
        if self._executor is not None:
            self._executor.close()

    def dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            config = self.settings.config
            self._datasets[name] = config.dataset_class(name).from_config(self.settings.data_root,
                                                                          config.datasets.get(name, {}))
        return self._datasets[name]

    def context(self, case: Case, group: str | None = None) -> PipelineContext:
        cfg = self.settings.config
        return PipelineContext(
            dataset=case.dataset, group=group, options=cfg.pipeline_options(case.pipeline, case.dataset, group),
            prompt=cfg.prompt_for(case.dataset, group, case.pipeline),
            weights_dir=self.settings.weights_dir, device=self.settings.device,
            work_dir=self.settings.cache_dir or Path(tempfile.gettempdir()) / "fmtest",
            suite_dir=cfg.directory, progress=self.progress,
        )

    def check_available(self, case: Case) -> None:
        """Raise Unavailable when the pipeline (or a comparison's reference) cannot run here (weights, key, endpoint)."""
        for pipeline in (case.pipeline, case.against):
            if pipeline is not None:
                probe = dataclasses.replace(case, pipeline=pipeline, against=None)
                self.settings.config.pipeline_class(pipeline).check_available(self.context(probe))

    def groups(self, name: str) -> list[Group]:
        if name not in self._groups:
            self._groups[name] = self.dataset(name).groups()
            self.settings.config.check_groups(name, [g.name for g in self._groups[name]])
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

    def evaluate(self, case: Case) -> CaseResult:
        """The case's result, finished once per process (`fmtest.verdict.finish.finish_case`)."""
        if case.id not in self.results:
            self.results[case.id] = finish_case(self.evidence(case), self.settings.config.rules, self.baseline)
        return self.results[case.id]

    def evidence(self, case: Case) -> CaseEvidence:
        """What the run measures for a case: its test images' rows (this shard's under --fm-shard), the good
        training images' scores for the risk table, the dataset's data-quality findings."""
        layers = LayerStore(self.settings.report, case.id) if self.settings.report else None
        evidence = self._collect(case, self._test_images(case), layers=layers)
        return replace(evidence, train_scores=self._good_train_scores(case, evidence),
                       data_quality=self.data_quality(case.dataset),
                       shard=self._shard_slice(case) if self.settings.shard is not None else None)

    def compare(self, case: Case) -> CaseResult:
        """A `[compare.<candidate>]` pair on one dataset: both cases evaluated (or reused), then compared.
        A shard's pair carries both cases, so `fmtest merge` compares the merged cases, never a share."""
        rules = self.settings.config.rules
        candidate = self.evaluate(Case(case.pipeline, case.dataset, case.task))
        reference = self.evaluate(Case(case.against, case.dataset, case.task))
        result = finish_comparison(candidate, reference, rules.compare[case.pipeline], rules)
        if self.settings.shard is not None:
            result.extra[SHARD_KEY] = {"candidate": case_dict(candidate), "reference": case_dict(reference)}
        return result

    def _collect(self, case: Case, images: Callable[[Group], SampleSet], *, n_thumbnails: int = N_THUMBNAILS,
                 desc: str | None = None, layers: LayerStore | None = None) -> CaseEvidence:
        """The rows of the chosen images of every group."""
        dataset = self.dataset(case.dataset)
        return collect_case(
            case, self.parts(case, images), has_masks=dataset.has_masks, dataset_fingerprint=dataset.fingerprint,
            cache=self.cache, progress=self.progress, n_thumbnails=n_thumbnails, desc=desc, layers=layers,
            executor=self.executor,
        )

    def data_quality(self, name: str) -> list[dict]:
        """Guardrail findings for a dataset (fmtest.run.guardrails), computed once and kept beside the cache.

        `[guardrails] enabled = false` turns them off; `alignment = false` skips the registration check;
        a table `[guardrails.<dataset>]` overrides settings for one dataset.
        """
        table = self.settings.config.raw.get("guardrails", {})
        opts = {k: v for k, v in table.items() if not isinstance(v, dict)}
        opts.update(table.get(name, {}))
        if not opts.pop("enabled", True):
            return []
        if name in self._findings:
            return self._findings[name]
        store = None
        if self.cache is not None:  # kept beside a usable prediction cache only
            key = hashlib.sha256(json.dumps([self.dataset(name).fingerprint, opts,
                                             [self._data_fingerprint(name, g) for g in self.groups(name)]],
                                            sort_keys=True, default=str).encode()).hexdigest()[:16]
            store = Path(self.settings.cache_dir) / "guardrails" / f"{name}-{key}.json"
            if store.exists():
                self._findings[name] = json.loads(store.read_text())
                return self._findings[name]
        from fmtest.imaging.align import estimate_alignment
        from fmtest.run.guardrails import check_data_quality

        check_alignment = opts.pop("alignment", True)
        findings = []
        for group in self.groups(name):
            findings += check_data_quality(
                group.train, group.test, group.load_reference(), progress=self.progress,
                alignment=(lambda image, ref: estimate_alignment(image, ref).quality) if check_alignment else None,
                **opts)
        self._findings[name] = [dataclasses.asdict(f) for f in findings]
        if store is not None:
            with contextlib.suppress(OSError):  # a full disk costs the next run a recomputation, nothing more
                atomic_write(store, json.dumps(self._findings[name]))
        return self._findings[name]

    def invariance(self, case: Case, perturbation: str) -> CaseResult:
        """How the case's verdicts and metrics move under one perturbation, level by level: each level
        is an ordinary evaluation of the perturbed images, compared image by image with the clean run."""
        from fmtest.imaging.perturb import PERTURBATIONS, ladders

        opts = self.settings.config.robustness
        base = self.evaluate(case)
        ladder = [float(x) for x in ladders(opts.get("ladders"))[perturbation]]
        gate = int(opts.get("gate_level", len(ladder) // 2))
        if not 0 <= gate < len(ladder):
            raise ConfigError(f"robustness.gate_level {gate} is outside the {perturbation} ladder {ladder}")
        test = self.dataset(case.dataset).test
        chosen = set(test.ids[: int(opts["n_images"])] if opts.get("n_images") else test.ids)
        clean = [i for i in base.images if i.id in chosen]
        perturb = PERTURBATIONS[perturbation]
        shard_of = self._test_images(case)
        seed = self.settings.config.seed
        rows = []
        for level in ladder:
            def perturbed(group: Group, level=level) -> SampleSet:
                return SampleSet([_perturbed_ref(r, perturb, level, seed) for r in shard_of(group).refs
                                  if r.id in chosen])

            run = self._collect(case, perturbed, n_thumbnails=0, desc=f"{case.id} {perturbation}={level:g}")
            rows.append(invariance_row(perturbation, level, clean, run.images))
        thresholds = self.settings.config.thresholds_for(case.id)
        floor = opts.get("min_clean_recall", thresholds.get("recall", thresholds.get("f2", 0.0)))
        return robustness_result(base, perturbation, rows, gate,
                                 max_flip_rate=float(opts["max_flip_rate"]),
                                 max_metric_drop=float(opts["max_metric_drop"]),
                                 min_clean_recall=float(floor))

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


class ResultStore:
    """Finished cases as one JSON file each in a folder shared by all pytest-xdist workers.

    Each case is written the moment it finishes, so an interrupted or crashed run still reports
    every case that completed.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, result: CaseResult) -> None:
        atomic_write(self.directory / f"{result.id}.json", results_json(result, indent=None))

    def load_all(self) -> list[CaseResult]:
        cases = []
        for path in self.directory.glob("*.json"):
            cases.append(CaseResult.from_dict(json.loads(path.read_text())))
        return cases


def order_key(settings: Settings):
    """Stable report order: task, then dataset and pipeline as the user listed them."""
    d_index = {d: i for i, d in enumerate(settings.datasets)}
    p_index = {p: i for i, p in enumerate(settings.config.pipeline_names())}

    def key(c: CaseResult):
        return (TASK_ORDER.get(c.task, 9), d_index.get(c.dataset, 99), p_index.get(c.pipeline, 99), c.id)

    return key


__all__ = ["Case", "Evaluator", "ResultStore", "Settings", "order_key", "plan_cases", "resolve_settings"]
