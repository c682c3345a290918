"""One evaluation run as the plugin sees it: resolved settings, the planned cases, and the
per-process objects that must exist once (datasets, fitted pipelines, cache, result store)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fmtest.config import SuiteConfig, load_config
from fmtest.data import DATASETS, Dataset, dataset_class, open_dataset
from fmtest.errors import ConfigError, Unavailable
from fmtest.evaluate import Case, evaluate_case, predict_all, risk_summary
from fmtest.pipelines import PIPELINES, TASKS, Pipeline, PipelineContext, pipeline_class
from fmtest.report.results import CaseResult

TASK_ORDER = {"segmentation": 0, "classification": 1, "robustness": 2}


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
    progress: bool = True
    extras: dict = field(default_factory=dict)


def _split(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [v.strip() for v in items if v.strip()]


def resolve_settings(option, invocation_dir: Path, *, worker_index: int | None = None) -> Settings:
    """`option(name)` returns the command-line value of `--fm-<name>` (None when not given)."""
    cfg_path = option("config")
    config = load_config(_cli_path(cfg_path, invocation_dir) if cfg_path else _default_config(invocation_dir))
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
    pipelines = _split(pick("pipeline")[0]) or config.default_pipelines or list(PIPELINES)
    for name in datasets:
        if name not in DATASETS:
            raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    for name in pipelines:
        if name not in PIPELINES:
            raise ConfigError(f"unknown pipeline {name!r}; known: {', '.join(PIPELINES)}")
    data_root = path("data_root", "FMTEST_DATA")
    if data_root is not None and not data_root.is_dir():
        raise ConfigError(f"data root {data_root} is not a folder (--fm-data-root / FMTEST_DATA)")
    no_cache = bool(pick("no_cache")[0])
    return Settings(
        config=config, datasets=datasets, pipelines=pipelines, data_root=data_root,
        weights_dir=path("weights", "FMTEST_WEIGHTS"),
        device=_device(pick("device")[0] or "auto", worker_index),
        report=path("report"), results=path("results"), baseline=path("baseline"),
        cache_dir=None if no_cache else (path("cache") or invocation_dir / ".fmtest_cache"),
        strict=bool(pick("strict")[0]),
    )


def _default_config(invocation_dir: Path) -> Path | None:
    candidate = invocation_dir / "suites" / "fmtest.toml"
    return candidate if candidate.exists() else None


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
    cases = []
    for d in settings.datasets:
        has_masks = dataset_has_masks(settings.config, d)
        for p in settings.pipelines:
            pipeline_task = TASKS[p]
            if task == "segmentation" and pipeline_task == "segmentation" and has_masks:
                cases.append(Case(p, d, "segmentation"))
            elif task == "classification" and (pipeline_task == "classification" or not has_masks):
                cases.append(Case(p, d, "classification"))
    return cases


def dataset_has_masks(config: SuiteConfig, name: str) -> bool:
    return dataset_class(name).has_masks and config.datasets.get(name, {}).get("masks", True) is not False


class Evaluator:
    """Per-process owner of datasets and fitted pipelines, so each loads once per session."""

    def __init__(self, settings: Settings, *, progress: bool = True):
        self.settings = settings
        self.progress = progress
        self._datasets: dict[str, Dataset] = {}
        self._pipelines: dict[str, Pipeline] = {}
        self._cache = None
        self.results: dict[str, CaseResult] = {}

    @property
    def cache(self):
        if self._cache is None and self.settings.cache_dir is not None:
            from fmtest.cache import PredictionCache

            self._cache = PredictionCache(self.settings.cache_dir)
        return self._cache

    def dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            self._datasets[name] = open_dataset(name, self.settings.data_root, self.settings.config.datasets.get(name))
        return self._datasets[name]

    def context(self, case: Case) -> PipelineContext:
        cfg = self.settings.config
        return PipelineContext(
            dataset=case.dataset, options=cfg.pipelines.get(case.pipeline, {}), prompt=cfg.prompt_for(case.dataset),
            weights_dir=self.settings.weights_dir, device=self.settings.device,
            work_dir=self.settings.cache_dir or Path(tempfile.gettempdir()) / "fmtest",
            suite_dir=cfg.directory, progress=self.progress,
        )

    def check_available(self, case: Case) -> None:
        """Raise Unavailable when the pipeline cannot run here (weights, key, endpoint)."""
        pipeline_class(case.pipeline).check_available(self.context(case))

    def pipeline(self, case: Case) -> Pipeline:
        if case.id not in self._pipelines:
            self._pipelines[case.id] = pipeline_class(case.pipeline)(self.context(case))
        return self._pipelines[case.id]

    def evaluate(self, case: Case) -> CaseResult:
        if case.id in self.results and self.results[case.id].outcome in ("passed", "failed"):
            return self.results[case.id]
        cfg = self.settings.config
        result = evaluate_case(
            case, self.pipeline(case), self.dataset(case.dataset),
            cfg.thresholds_for(case.id), cache=self.cache, progress=self.progress,
            n_resamples=cfg.bootstrap_resamples, seed=cfg.seed,
        )
        result.extra["risk"] = self._risk(case, result)
        self.results[case.id] = result
        return result

    def _risk(self, case: Case, result: CaseResult) -> dict:
        """Risk figures; a scoring pipeline's operating point is set on good TRAINING images only."""
        opts = self.settings.config.risk
        train_scores = None
        if result.images and all(i.score is not None for i in result.images):
            train = self.dataset(case.dataset).train.filter(lambda r: r.label == "OK")
            train = train[: int(opts.get("n_train_scores", 40))]
            train_scores = [p.score for _, p, _ in predict_all(self.pipeline(case), train, cache=self.cache,
                                                               progress=False)]
        return risk_summary(result.images, train_scores,
                            target_slip_rate=float(opts.get("target_slip_rate", 0.01)),
                            false_alarm_budget=float(opts.get("false_alarm_budget", 0.01)))


class ResultStore:
    """Finished cases as one JSON file each in a folder shared by all pytest-xdist workers.

    Each case is written the moment it finishes, so an interrupted or crashed run still reports
    every case that completed.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, result: CaseResult) -> None:
        from fmtest.report.results import RunResults

        payload = RunResults(cases=[result]).to_dict()["cases"][0]
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, default=_default)
        os.replace(tmp, self.directory / f"{result.id}.json")

    def load_all(self) -> list[CaseResult]:
        cases = []
        for path in self.directory.glob("*.json"):
            cases.append(CaseResult.from_dict(json.loads(path.read_text())))
        return cases


def _default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def order_key(settings: Settings):
    """Stable report order: task, then dataset and pipeline as the user listed them."""
    d_index = {d: i for i, d in enumerate(settings.datasets)}
    p_index = {p: i for i, p in enumerate(PIPELINES)}

    def key(c: CaseResult):
        return (TASK_ORDER.get(c.task, 9), d_index.get(c.dataset, 99), p_index.get(c.pipeline, 99), c.id)

    return key


__all__ = ["Case", "Evaluator", "ResultStore", "Settings", "Unavailable", "order_key", "plan_cases",
           "resolve_settings"]
