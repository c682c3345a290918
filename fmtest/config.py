"""The suite config (suites/fmtest.toml): thresholds, per-pipeline and per-dataset settings, prompts.

Every command-line option can also be set here at top level (`data_root = "/data"`); the command
line wins. Per-case threshold overrides are tables named by case id: `[thresholds."padim-satsim"]`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from fmtest.errors import ConfigError

DEFAULT_CONFIG = Path("suites/fmtest.toml")
RUN_OPTIONS = ("dataset", "pipeline", "data_root", "weights", "device", "report", "results", "baseline",
               "cache", "no_cache", "strict", "markdown", "metrics")  # settable at top level; baseline as [baseline] results
MLFLOW_KEYS = {"tracking_uri": "mlflow", "experiment": "mlflow_experiment"}  # [mlflow] key -> run option
DEFAULT_PROMPTS = {"industrialsat": "defect", "mvtec": "defect", "oxford_pets": "cat", "satsim": "defect",
                   "elpv": "defect", "folder": "defect"}


@dataclass
class SuiteConfig:
    path: Path | None = None
    default_datasets: list[str] = field(default_factory=lambda: ["satsim", "elpv"])
    default_pipelines: list[str] | None = None  # None: every pipeline that applies
    thresholds: dict[str, float] = field(default_factory=lambda: {"iou": 0.60, "f2": 0.80})
    case_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline_tolerance: float = 0.02
    pipelines: dict[str, dict] = field(default_factory=dict)
    datasets: dict[str, dict] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    robustness: dict = field(default_factory=dict)
    risk: dict = field(default_factory=dict)  # target_slip_rate, false_alarm_budget, n_train_scores
    run_options: dict[str, object] = field(default_factory=dict)
    bootstrap_resamples: int = 1000
    seed: int = 0
    raw: dict = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.path.parent if self.path else Path(".")

    def thresholds_for(self, case_id: str, metrics: list[str] | None = None) -> dict[str, float]:
        """Thresholds a case is held to: defaults, then the case's overrides, restricted to `metrics`."""
        merged = {**self.thresholds, **self.case_thresholds.get(case_id, {})}
        if metrics is not None:
            merged = {k: v for k, v in merged.items() if k in metrics}
        return merged

    def prompt_for(self, dataset: str) -> str:
        return self.prompts.get(dataset, "defect")

    def resolve_path(self, value: str | Path) -> Path:
        """Paths in the config file are relative to the file; on the command line, to the cwd."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.directory / p


def load_config(path: Path | None) -> SuiteConfig:
    """Read a suite config; a missing default file means built-in defaults, a missing named file is an error."""
    if path is None:
        if not DEFAULT_CONFIG.exists():
            return SuiteConfig()
        path = DEFAULT_CONFIG
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("suite config not found", path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path) from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: Path | None = None) -> SuiteConfig:
    cfg = SuiteConfig(path=path.resolve() if path else None, raw=raw)
    known = {"default_datasets", "default_pipelines", "thresholds", "baseline", "pipelines", "datasets",
             "prompts", "robustness", "risk", "guardrails", "history_url", "bootstrap_resamples", "seed", "mlflow",
             *RUN_OPTIONS}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))}", path)
    if "default_datasets" in raw:
        cfg.default_datasets = _str_list(raw["default_datasets"], "default_datasets", path)
    if "default_pipelines" in raw:
        cfg.default_pipelines = _str_list(raw["default_pipelines"], "default_pipelines", path)
    for key, value in raw.get("thresholds", {}).items():
        if isinstance(value, dict):
            cfg.case_thresholds[key] = {k: _number(v, f"thresholds.{key}.{k}", path) for k, v in value.items()}
        else:
            cfg.thresholds[key] = _number(value, f"thresholds.{key}", path)
    cfg.pipelines = {k: dict(v) for k, v in raw.get("pipelines", {}).items()}
    cfg.datasets = {k: dict(v) for k, v in raw.get("datasets", {}).items()}
    cfg.prompts.update(raw.get("prompts", {}))
    cfg.robustness = dict(raw.get("robustness", {}))
    cfg.risk = dict(raw.get("risk", {}))
    cfg.bootstrap_resamples = int(raw.get("bootstrap_resamples", 1000))
    cfg.seed = int(raw.get("seed", 0))
    cfg.run_options = {k: raw[k] for k in RUN_OPTIONS if k in raw and k != "baseline"}
    baseline = raw.get("baseline", {})
    if not isinstance(baseline, dict):
        raise ConfigError("baseline must be a table: [baseline] tolerance = 0.02, results = \"main.json\"", path)
    cfg.baseline_tolerance = _number(baseline.get("tolerance", 0.02), "baseline.tolerance", path)
    if "results" in baseline:  # the run option --fm-baseline, set in the file
        cfg.run_options["baseline"] = baseline["results"]
    mlflow = raw.get("mlflow", {})
    if not isinstance(mlflow, dict) or set(mlflow) - set(MLFLOW_KEYS):
        raise ConfigError("mlflow must be a table with tracking_uri and experiment: "
                          "[mlflow] tracking_uri = \"http://mlflow:5000\", experiment = \"fmtest\"", path)
    cfg.run_options.update({MLFLOW_KEYS[k]: str(v) for k, v in mlflow.items()})
    return cfg


def _str_list(value, name, path) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of names", path)
    return value


def _number(value, name, path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}", path)
    return float(value)
