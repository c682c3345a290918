"""The run's settings after precedence: command line > environment > suite config > default.

Every setting is a key of the schema's run table (`fmtest.config.schema.RUN_SETTINGS`), so the pytest
option, the config key, its type, default and help are written once there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fmtest.config import schema
from fmtest.config.lookup import find_config
from fmtest.config.suite import SuiteConfig, load_config
from fmtest.data.shards import Shard
from fmtest.errors import ConfigError


@dataclass
class Settings:
    """What a run was asked for, each value resolved from its schema setting (`resolve_settings`)."""

    config: SuiteConfig
    datasets: list[str]
    pipelines: list[str]
    data_root: Path | None
    follow_outside_links: bool  # read what a symbolic link in a dataset folder points to outside the data root
    weights_dir: Path | None
    device: str
    report: Path | None
    results: Path | None
    baseline: Path | None  # a results file
    baseline_run: str | None  # or a stored run: its id, `last`, `last~N`, a branch (fmtest.report.runs resolves it)
    cache_dir: Path | None  # None: --fm-no-cache
    strict: bool
    require_judged: bool  # a run that judged no case fails
    markdown: Path | None  # the scoreboard as Markdown
    metrics: Path | None  # flat metrics file: JSON (DVC), or OpenMetrics text (.txt, GitLab)
    step_summary: Path | None  # $GITHUB_STEP_SUMMARY: the Markdown scoreboard is appended there
    runs_dir: Path  # where every run's results are kept (and `--fm-baseline=last` is looked up)
    store_run: bool  # keep this run there (not with --fm-no-store)
    samples: Path | None  # one JSON line per image of every case
    csv: Path | None  # the scoreboard as CSV
    mlflow: str | None  # tracking URI
    mlflow_experiment: str
    shard: Shard | None  # this run scores shard K of N of every case's test images
    executor: str  # where predictions are computed
    executor_options: dict[str, float]  # [executor] actors, num_gpus, num_cpus
    ray_address: str


def _split(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [v.strip() for v in items if v.strip()]


def resolve_settings(option, invocation_dir: Path, *, worker_index: int | None = None, args=()) -> Settings:
    """Each setting from, in order: its command-line option (`option(flag)` returns `--fm-<flag>`'s value, None
    when not given), its environment variable, the suite config, the schema's default. `args` are the test
    paths named on the command line, beside which the suite config is looked for. Paths from the command line,
    the environment or a default are relative to `invocation_dir`, paths in the file to the file."""
    cfg_path = option(schema.COMMAND_LINE.setting("config").flag)
    config = load_config(_cli_path(cfg_path, invocation_dir) if cfg_path else find_config(args, invocation_dir))

    def get(table: schema.Table, key: str):
        return _value(table, key, option, config, invocation_dir)

    top, run = schema.TOP, lambda key: get(schema.TOP, key)
    datasets = _split(run("dataset")) or config.default_datasets
    pipelines = _split(run("pipeline")) or config.default_pipelines or config.pipeline_names()
    config.check_selection(datasets, pipelines)
    data_root = run("data_root")
    if data_root is not None and not data_root.is_dir():
        raise ConfigError(f"data root {data_root} is not a folder ({top.setting('data_root').option} / "
                          f"{top.setting('data_root').env})")
    shard = get(schema.COMMAND_LINE, "shard")
    baseline = get(schema.BASELINE, "results")
    baseline_run = stored_run_name(_value(schema.BASELINE, "results", option, config, invocation_dir, raw=True),
                                   baseline)
    return Settings(
        config=config, datasets=datasets, pipelines=pipelines, data_root=data_root,
        follow_outside_links=bool(run("follow_outside_links")), weights_dir=run("weights"),
        device=_device(run("device"), worker_index), report=run("report"), results=run("results"),
        baseline=baseline if baseline_run is None else None, baseline_run=baseline_run,
        runs_dir=run("runs_dir"), store_run=not run("no_store"), samples=run("samples"), csv=run("csv"),
        cache_dir=None if run("no_cache") else run("cache"),
        strict=bool(run("strict")), require_judged=bool(run("require_judged")), markdown=run("markdown"), metrics=run("metrics"),
        step_summary=Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None,
        mlflow=get(schema.MLFLOW, "tracking_uri"), mlflow_experiment=get(schema.MLFLOW, "experiment"),
        shard=Shard.parse(shard) if shard else None, executor=get(schema.EXECUTOR, "kind"),
        executor_options={k: get(schema.EXECUTOR, k) for k in ("actors", "num_gpus", "num_cpus")},
        ray_address=get(schema.EXECUTOR, "address"),
    )


def _value(table: schema.Table, key: str, option, config: SuiteConfig, invocation_dir: Path, *, raw: bool = False):
    """One setting's value: its command-line option, its environment variable, the file, the schema's default, in
    that order; a path resolved (relative to the file when it came from the file), unless `raw`."""
    setting = table.setting(key)
    value, origin = setting.default, "default"
    if setting.flag and option(setting.flag) not in (None, False, ""):
        value, origin = option(setting.flag), "command line"
    elif setting.env and os.environ.get(setting.env):
        value, origin = os.environ[setting.env], "environment"
    elif key in config.file_settings.get(table.name, {}):
        value, origin = config.file_settings[table.name][key], "file"
    elif setting.kind is schema.PATH and value is None:
        return None
    if origin in ("command line", "environment"):
        value = _checked(setting, value)
    if setting.kind is schema.PATH and not raw:
        return config.resolve_path(value) if origin == "file" else _cli_path(value, invocation_dir)
    return value


def stored_run_name(text: object, path: Path | None) -> str | None:
    """`--fm-baseline=last` names a stored run, not a file: a value that is no existing file, has no folder in it
    and does not end in .json is a stored run's name (an id, `last`, `last~1`, a branch); None for a file."""
    if path is None or not isinstance(text, str) or path.exists():
        return None
    if "/" in text or "\\" in text or text.lower().endswith(".json"):
        return None
    return text


def runs_folder(invocation_dir: Path, *, config_path: Path | None = None, runs_dir: str | None = None) -> Path:
    """The runs folder a command reads (`fmtest runs`, `fmtest compare`): `runs_dir` (its --runs-dir), else as
    a run resolves `--fm-runs-dir` (environment, the suite config, the default) from `invocation_dir`."""
    config = load_config(config_path if config_path else find_config([], invocation_dir))
    flag = schema.TOP.setting("runs_dir").flag
    return _value(schema.TOP, "runs_dir", lambda f: runs_dir if f == flag else None, config, invocation_dir)


def _checked(setting: schema.Setting, value: object) -> object:
    """A value from the command line or the environment (text), checked like the file's, one line naming the option."""
    if setting.kind is schema.BOOL or setting.kind is schema.NAMES:
        return value
    if setting.kind is schema.SHARD:
        return value  # Shard.parse names the option
    converted = setting.kind(value)
    if converted is None:
        where = setting.option or setting.env
        raise ConfigError(f"{where}={value}: accepted: {setting.kind.accepts}")
    return converted


def _cli_path(value, invocation_dir: Path) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else invocation_dir / p


def _device(choice: str, worker_index: int | None) -> str:
    """`auto` picks CUDA when present; pytest-xdist workers are spread one per GPU. `choice` is checked already
    (the schema's DEVICE)."""
    if choice == "cpu" or (choice == "auto" and not _gpu_device_files()):
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        if choice == "auto":
            return "cpu"
        raise ConfigError("--fm-device=cuda but torch sees no CUDA device")
    if choice in ("auto", "cuda") and worker_index is not None:
        return f"cuda:{worker_index % torch.cuda.device_count()}"
    return "cuda" if choice == "auto" else choice


# Device files a GPU that torch can use shows on Linux: NVIDIA's driver, AMD's ROCm, WSL2's GPU passthrough.
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def _gpu_device_files() -> bool:
    """Whether this machine may have a GPU: on Linux without any of its device files `auto` is the CPU, known
    without importing torch (seconds a rerun whose predictions are all cached need not pay); elsewhere, ask torch."""
    return sys.platform != "linux" or any(os.path.exists(path) for path in _GPU_DEVICE_FILES)
