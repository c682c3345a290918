"""The run's settings after precedence: command line > environment > suite config > default.

Every setting is a key of the schema's run table (`fmtest.config.schema.RUN_SETTINGS`), so the pytest
option, the config key, its type, default and help are written once there.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from fmtest.config import schema
from fmtest.config.lookup import find_config
from fmtest.config.suite import SuiteConfig, load_config
from fmtest.data.shards import Shard
from fmtest.errors import ConfigError


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
    if option("executor") not in (None, *schema.EXECUTORS):
        raise ConfigError(f"--fm-executor={option('executor')}: unknown executor; known: {', '.join(schema.EXECUTORS)}")
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


