"""Results of a run as typed data: what the JSON file holds and what every report reads.

Every section of a case is a named field of a dataclass here, so a reader sees what a result holds
without reading its writers. `to_plain` turns results into strict-JSON data and `from_plain` reads them
back (unknown keys are ignored, so an older fmtest reads a newer file); `migrate` brings a file of an
earlier format (`RESULTS_FORMAT`) up to date. Nothing here computes or judges: the verdict functions do.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from fmtest import __version__
from fmtest.config.rules import RunRules
from fmtest.data.departures import Departure
from fmtest.errors import DataError
from fmtest.metrics.region import SizeRecall
from fmtest.metrics.specs import MAX_PREFIX, is_count
from fmtest.run.evaluate import ShardSlice
from fmtest.run.guardrails import Finding
from fmtest.run.records import ImageResult, Thumbnail

RESULTS_FORMAT = 2  # 1: sections in an untyped `extra` dict, rules flat in `config`
Outcome = str  # "passed" | "failed" | "skipped" | "error"
OUTCOME_WORD = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}


@dataclass
class CacheUse:
    """How many of a case's predictions came from the cache, and how many were made this run."""

    hits: int = 0
    predicted: int = 0


@dataclass
class Risk:
    """The factory figures at the operating point (`fmtest.verdict.scoring.risk_summary`); NaN where the test set
    leaves a figure undefined (no good images for a false-alarm rate)."""

    slip_rate: float = math.nan
    slip_rate_ci_low: float = math.nan
    slip_rate_ci_high: float = math.nan
    slip_rate_upper_95: float = math.nan
    false_alarm_rate: float = math.nan
    false_alarm_rate_ci_low: float = math.nan
    false_alarm_rate_ci_high: float = math.nan
    target_slip_rate: float = math.nan
    defectives_needed_for_target: int = 0
    n_defective: int = 0
    verdict: str = ""  # can the test set show the target slip rate at all?
    auroc_threshold_free_not_a_factory_figure: float | None = None
    false_alarm_budget: float | None = None
    recall_at_false_alarm_budget: float | None = None
    false_alarm_rate_at_budget_threshold: float | None = None


@dataclass
class RegionSection:
    """What the case's region figures (`au_pro`, `pixel_auroc`, `pixel_ap` among its metrics) were computed on,
    how far each may be from the exact value (the score grid's bound, `fmtest.metrics.region`), and the recall
    of its defect regions by size (bins without a region are left out). Shown, never gated by default."""

    fpr_limit: float
    n_images: int  # images summarised (usable answers with a score map, on images with a mask)
    n_regions: int
    n_defect_pixels: int
    n_good_pixels: int
    error_bounds: dict[str, float] = field(default_factory=dict)  # metric -> bound of its grid error
    recall_by_size: list[SizeRecall] = field(default_factory=list)


@dataclass
class MetricChange:
    """One gated metric in this run and the baseline (or candidate and reference). `delta` = current - baseline;
    the interval is of that delta, paired over the same images."""

    baseline: float
    current: float
    delta: float
    ci_low: float | None = None
    ci_high: float | None = None
    regressed: bool = False
    significant: bool | None = None  # interval excludes 0; None without a paired interval
    higher_is_better: bool = True
    note: str = ""  # why there is no interval, when there is none


@dataclass
class BaselineComparison:
    """The case against the earlier run (`--fm-baseline`), recorded as the run compared it."""

    status: str  # compared | new | vanished | dataset_changed | incompatible
    message: str
    tolerance: float
    paired: bool = False
    changes: dict[str, MetricChange] = field(default_factory=dict)

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.changes.values())


@dataclass
class CaseRef:
    """One side of a candidate-vs-current pair."""

    case: str
    pipeline: str
    outcome: str
    model_sha256: str | None = None


@dataclass
class ImageChange:
    """An image whose verdict differs between the candidate and the reference."""

    id: str
    change: str  # new_slips | new_false_alarms | fixed_slips | fixed_false_alarms
    label: str
    candidate: str
    reference: str
    candidate_iou: float | None = None
    reference_iou: float | None = None


@dataclass
class Comparison:
    """A `[compare.<candidate>]` pair: both sides and the images whose verdict changes, worst first."""

    candidate: CaseRef
    reference: CaseRef
    tolerance: float
    image_changes: list[ImageChange] = field(default_factory=list)


@dataclass
class LevelRow:
    """One level of a perturbation's ladder: how far the answers moved from the clean run (NaN: does not apply,
    as delta_iou on a classification case)."""

    perturbation: str
    level: float
    flip_rate: float = math.nan
    new_slips: float = math.nan
    new_false_alarms: float = math.nan
    new_slip_rate: float = math.nan
    new_false_alarm_rate: float = math.nan
    clean_recall: float = math.nan
    clean_false_alarm_rate: float = math.nan
    delta_iou: float = math.nan
    delta_f2: float = math.nan
    false_alarm_rate: float = math.nan
    slip_rate: float = math.nan
    outcome: str = "passed"  # of the gated level; the others are shown, not judged


@dataclass
class Robustness:
    """A robustness case's ladder, judged at `gate_level`."""

    perturbation: str
    gate_level: float
    levels: list[LevelRow] = field(default_factory=list)


@dataclass
class LayerManifest:
    """Where the scoreboard's viewer finds a case's full-size image layers (`fmtest.report.layers`)."""

    folder: str  # relative to the report's folder
    images: dict[str, dict[str, str]] = field(default_factory=dict)  # image id -> layer -> file


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
    cache: CacheUse | None = None
    usage: dict[str, float] = field(default_factory=dict)  # what an API pipeline spent this run
    invalid_answers: int = 0  # images whose answer was unusable
    risk: Risk | None = None
    regions: RegionSection | None = None  # the region figures' basis and recall by defect size
    train_scores: list[float] | None = None  # good training images' scores: where the risk table's threshold is set
    study: dict[str, float] = field(default_factory=dict)  # the published figures, shown beside the case
    departures: list[Departure] = field(default_factory=list)  # how this run departs from the study's, for its row
    options: dict[str, object] = field(default_factory=dict)  # every option the pipeline ran with, defaults included
    started: str | None = None  # when the case started (UTC, ISO 8601); `duration_s` is how long it took
    data_quality: list[Finding] = field(default_factory=list)
    image_layers: LayerManifest | None = None
    shard: ShardSlice | None = None  # a shard's place in the whole case, for `fmtest merge`
    shard_sides: ShardSides | None = None  # a shard's pair: both cases, compared again after the merge
    baseline: BaselineComparison | None = None
    comparison: Comparison | None = None
    robustness: Robustness | None = None

    @classmethod
    def from_dict(cls, d: dict) -> CaseResult:
        return from_plain(cls, d)


@dataclass
class ShardSides:
    candidate: CaseResult
    reference: CaseResult


@dataclass
class RunConfig:
    """What ran and the rules every verdict used (read back by `fmtest merge`, which judges by exactly these)."""

    config_file: str | None = None
    datasets: list[str] = field(default_factory=list)
    pipelines: list[str] = field(default_factory=list)
    device: str | None = None
    pipeline_options: dict[str, dict[str, object]] = field(default_factory=dict)
    dataset_options: dict[str, dict[str, object]] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    rules: RunRules | None = None
    shard: str | None = None  # "K/N" for a shard's results
    merged_shards: int | None = None  # how many shards `fmtest merge` joined


@dataclass
class RunResults:
    cases: list[CaseResult] = field(default_factory=list)
    config: RunConfig = field(default_factory=RunConfig)
    environment: dict[str, str | None] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    git_commit: str | None = None
    git_branch: str | None = None  # the branch the run was made on, when known (`fmtest compare main`)
    fmtest_version: str = __version__
    interrupted: bool = False  # the session was stopped (Ctrl-C, SIGTERM) before every planned case finished
    unfinished: list[str] = field(default_factory=list)  # planned case ids without a result
    format: int = RESULTS_FORMAT

    def to_dict(self) -> dict:
        plain = to_plain(self)
        head = ["format", "fmtest_version", "created", "git_commit", "git_branch", "config", "environment", "cases"]
        out = {k: plain[k] for k in head}  # fixed key order: the documented head first
        if self.interrupted or self.unfinished:
            out.update(interrupted=self.interrupted, unfinished=self.unfinished)
        return out

    @classmethod
    def from_dict(cls, d: dict, where: object = None) -> RunResults:
        return from_plain(cls, {"created": "", **migrate(d, where)})  # no timestamp is an unknown time, not now

    def case(self, case_id: str) -> CaseResult | None:
        return next((c for c in self.cases if c.id == case_id), None)


# -- plain data ---------------------------------------------------------------------------------------
def to_plain(obj: object) -> object:
    """Results as strict-JSON data: dataclasses as dicts, NaN and infinity as None, numpy scalars as numbers.
    A type with `as_summary` (the run's rules) is written as that summary."""
    if hasattr(obj, "as_summary"):
        return to_plain(obj.as_summary())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):  # numpy scalars
        return to_plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def from_plain(tp, data):
    """`data` (as `to_plain` wrote it) read back as type `tp`; keys a type does not know are ignored. A type
    with `from_summary` (the run's rules) reads itself, with its defaults for what a file lacks."""
    if data is None:
        return math.nan if tp is float else None  # a float written as null was NaN
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return from_plain(options[0], data) if len(options) == 1 else data
    if origin is list:
        (item,) = typing.get_args(tp)
        return [from_plain(item, v) for v in data]
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return tuple(from_plain(item, v) for v in data)
    if origin is dict:
        _, value = typing.get_args(tp)
        return {k: from_plain(value, v) for k, v in data.items()}
    if isinstance(tp, type) and hasattr(tp, "from_summary"):
        return tp.from_summary(data)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: from_plain(hints[k], v) for k, v in data.items() if k in known})
    if tp is float and isinstance(data, int | float):
        return float(data)
    return data


def migrate(data: dict, where: object = None) -> dict:
    """A results file of an earlier format brought to `RESULTS_FORMAT` (format 1: sections in `extra`, rules flat
    in `config`); a file of a newer format than this fmtest knows is refused in one line."""
    version = data.get("format", 1)
    if not isinstance(version, int) or version > RESULTS_FORMAT:
        raise DataError(f"results format {version!r} is newer than this fmtest reads ({RESULTS_FORMAT}); "
                        f"upgrade fmtest (this is {__version__})", where)
    if version == RESULTS_FORMAT:
        return data
    rule_keys = ("thresholds", "case_thresholds", "bootstrap_resamples", "seed", "baseline_tolerance", "risk",
                 "compare", "study_results")
    config = dict(data.get("config") or {})
    rules = {k: config.pop(k) for k in rule_keys if k in config}
    return {**data, "format": RESULTS_FORMAT, "config": {**config, "rules": rules or None},
            "cases": [_migrated_case(c) for c in data.get("cases", [])]}


def _migrated_case(case: dict) -> dict:
    """A format-1 case: its `extra` sections become the named fields."""
    case = dict(case)
    extra = dict(case.pop("extra", None) or {})
    moved = {k: extra[k] for k in ("cache", "usage", "invalid_answers", "risk", "train_scores", "study",
                                   "data_quality", "image_layers") if k in extra}
    shard = extra.get("shard")
    if isinstance(shard, dict) and "candidate" in shard:
        moved["shard_sides"] = {side: _migrated_case(shard[side]) for side in ("candidate", "reference")}
    elif isinstance(shard, dict):
        moved["shard"] = shard
    if isinstance(extra.get("baseline"), dict):
        moved["baseline"] = {**extra["baseline"], "changes": extra.get("regression") or {}}
    if isinstance(extra.get("reference"), dict):
        reference, candidate = extra["reference"], extra.get("candidate") or {}
        moved["comparison"] = {
            "candidate": {"case": candidate.get("case"), "pipeline": case.get("pipeline"),
                          "outcome": candidate.get("outcome"), "model_sha256": case.get("model_sha256")},
            "reference": {"case": reference.get("case"), "pipeline": reference.get("pipeline"),
                          "outcome": reference.get("outcome"), "model_sha256": reference.get("model_sha256")},
            "tolerance": extra.get("tolerance"), "image_changes": extra.get("image_changes") or []}
    rows = extra.get("robustness")
    if isinstance(rows, list) and rows:
        moved["robustness"] = {"perturbation": rows[0].get("perturbation"), "gate_level": extra.get("gate_level"),
                               "levels": rows}
    return {**case, **moved}


def case_dict(case: CaseResult) -> dict:
    """A case as plain, strict-JSON data."""
    return to_plain(case)


def perturbation_of(case: CaseResult) -> str:
    """The perturbation a robustness case ran: from its ladder, else the end of its id."""
    if case.robustness is not None:
        return case.robustness.perturbation
    return case.id.removeprefix(f"{case.pipeline}-{case.dataset}-")


def case_properties(case: CaseResult) -> dict[str, object]:
    """A case's figures as JUnit test properties: metrics, thresholds (`threshold_<name>`), breakdown
    (`iou[carpet]`), what an API pipeline spent, the model, a skip's reason. The plugin and `fmtest merge`
    both write these, so their JUnit files carry the same names."""
    def value(name: str, v: object) -> object:
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        if isinstance(v, int | float) and not isinstance(v, bool) and is_count(name) and float(v).is_integer():
            return int(v)  # a count is written as a whole number
        return round(v, 6) if isinstance(v, float) else v

    props: dict[str, object] = {"pipeline": case.pipeline, "dataset": case.dataset, "task": case.task}
    props.update({k: value(k, v) for k, v in case.metrics.items()})
    props.update({f"threshold_{k}": value(k.removeprefix(MAX_PREFIX), v) for k, v in case.thresholds.items()})
    for part, figures in case.breakdown.items():
        props.update({f"{k}[{part}]": value(k, v) for k, v in figures.items()})
    props.update({k: value(k, case.usage[k]) for k in ("prompt_tokens", "output_tokens", "cost_usd") if k in case.usage})
    if case.model_sha256:
        props["model_sha256"] = case.model_sha256
    if case.outcome == "skipped" and case.message:
        props["skip_reason"] = case.message
    return props
