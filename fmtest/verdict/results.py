"""Results of a run as plain data: what the JSON file holds and what every report reads.

Nothing here computes metrics or runs models; the evaluation layer fills these in.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fmtest import __version__
from fmtest.run.records import ImageResult, Thumbnail
from fmtest.util.fsutil import atomic_write

Outcome = str  # "passed" | "failed" | "skipped" | "error"
OUTCOME_WORD = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}


@dataclass
class CaseResult:
    id: str  # "<pipeline>-<dataset>"
    pipeline: str
    dataset: str
    task: str
    outcome: Outcome = "passed"
    message: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    images: list[ImageResult] = field(default_factory=list)
    thumbnails: list[Thumbnail] = field(default_factory=list)
    model_sha256: str | None = None
    config_fingerprint: str | None = None
    dataset_fingerprint: str | None = None
    duration_s: float | None = None
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)  # per group and defect type
    extra: dict[str, object] = field(default_factory=dict)  # sections added by later layers (robustness, risk)

    @classmethod
    def from_dict(cls, d: dict) -> CaseResult:
        d = dict(d)
        d["images"] = [_known_fields(ImageResult, i) for i in d.get("images", [])]
        d["thumbnails"] = [_known_fields(Thumbnail, t) for t in d.get("thumbnails", [])]
        return _known_fields(cls, d)


@dataclass
class RunResults:
    cases: list[CaseResult] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    git_commit: str | None = None
    fmtest_version: str = __version__
    interrupted: bool = False  # the session was stopped (Ctrl-C) before every planned case finished
    unfinished: list[str] = field(default_factory=list)  # planned case ids without a result

    def to_dict(self) -> dict:
        d = _finite(asdict(self))
        # fixed key order: the documented head first
        head = ["fmtest_version", "created", "git_commit", "config", "environment", "cases"]
        out = {k: d[k] for k in head}
        if self.interrupted or self.unfinished:
            out.update(interrupted=self.interrupted, unfinished=self.unfinished)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> RunResults:
        return cls(
            cases=[CaseResult.from_dict(c) for c in d.get("cases", [])],
            config=d.get("config", {}),
            environment=d.get("environment", {}),
            created=d.get("created", ""),
            git_commit=d.get("git_commit"),
            fmtest_version=d.get("fmtest_version", "unknown"),
            interrupted=bool(d.get("interrupted", False)),
            unfinished=list(d.get("unfinished", [])),
        )

    def case(self, case_id: str) -> CaseResult | None:
        return next((c for c in self.cases if c.id == case_id), None)


def _known_fields(cls, d: dict):
    """Fields a newer fmtest added are ignored, so older code can still read its results."""
    return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def write_json(results: RunResults, path: Path) -> None:
    """Write atomically: a run killed mid-write leaves the previous file, never half a file."""
    atomic_write(path, results_json(results))


def results_json(results: RunResults | CaseResult, indent: int | None = 1) -> str:
    """The one JSON form of results (strict JSON: NaN becomes null), for files and stores alike."""
    payload = results.to_dict() if isinstance(results, RunResults) else case_dict(results)
    return json.dumps(payload, indent=indent, default=_json_default, allow_nan=False)


def case_dict(case: CaseResult) -> dict:
    """A case as plain, strict-JSON data (NaN becomes None)."""
    return _finite(asdict(case))


def read_json(path: Path) -> RunResults:
    from fmtest.errors import DataError

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError("results file not found", path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not a JSON results file ({e})", path) from None
    if not isinstance(data, dict) or "cases" not in data:
        raise DataError("not an fmtest results file (no 'cases')", path)
    return RunResults.from_dict(data)


def _finite(obj):
    """NaN/inf become null: the results file must be strict JSON for other tools to read."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):
        return _finite(obj.item())
    return obj


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def environment() -> dict:
    """Package versions that can change a number: recorded so two runs can be compared honestly."""
    from importlib import metadata

    env = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("numpy", "torch", "torchvision", "segment-anything", "open-clip-torch", "transformers",
                "google-genai", "openai", "opencv-python-headless"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        import torch

        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        pass
    return env


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def perturbation_of(case: CaseResult) -> str:
    """The perturbation a robustness case ran: from its level rows, else the end of its id."""
    rows = case.extra.get("robustness")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and isinstance(rows[0].get("perturbation"), str):
        return rows[0]["perturbation"]
    return case.id.removeprefix(f"{case.pipeline}-{case.dataset}-")


def case_properties(case: CaseResult) -> dict[str, object]:
    """A case's figures as JUnit test properties: metrics, thresholds (`threshold_<name>`), breakdown
    (`iou[carpet]`), what an API pipeline spent, the model, a skip's reason. The plugin and `fmtest merge`
    both write these, so their JUnit files carry the same names."""
    props: dict[str, object] = {"pipeline": case.pipeline, "dataset": case.dataset, "task": case.task}
    props.update({k: _property(v) for k, v in case.metrics.items()})
    props.update({f"threshold_{k}": _property(v) for k, v in case.thresholds.items()})
    for part, figures in case.breakdown.items():
        props.update({f"{k}[{part}]": _property(v) for k, v in figures.items()})
    usage = case.extra.get("usage") if isinstance(case.extra.get("usage"), dict) else {}
    props.update({k: _property(usage[k]) for k in ("prompt_tokens", "output_tokens", "cost_usd") if k in usage})
    if case.model_sha256:
        props["model_sha256"] = case.model_sha256
    if case.outcome == "skipped" and case.message:
        props["skip_reason"] = case.message
    return props


def _property(value):
    if isinstance(value, float):
        return "nan" if math.isnan(value) else round(value, 6)
    return value
