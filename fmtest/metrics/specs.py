"""What each metric is, written once: its label, direction, headline status, regression gating, display, and
how it is computed from a case's rows (a statistic vectorised for the bootstrap and the paired comparison).

Every gate (thresholds, baseline, robustness, comparisons), the scoring of a case and its breakdown, the
config schema's threshold keys and every renderer (terminal, HTML, history, JUnit properties, JSON) read
this table. Adding a metric means one entry here plus its statistic in `fmtest.metrics.functional`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")
MAX_PREFIX = "max_"  # a threshold `max_<metric>` is a maximum; one named like the metric a minimum
DEFAULT_FPR_LIMIT = 0.3  # AU-PRO integrates up to this false-positive rate (MVTec AD); `[regions] fpr_limit`
INVALID_ANSWER_GATE = "max_invalid_answer_rate"  # a miss is an error (the run could not judge), not a FAIL
DEFAULT_MAX_INVALID_ANSWER_RATE = 0.0  # no unusable answer is allowed unless the config says so
CASE_TASKS = ("segmentation", "classification")
ROBUSTNESS = ("robustness",)
COMPARISON = ("comparison",)


VERDICTS, IOUS = "verdicts", "ious"  # what a metric is computed from: every image's (truth, verdict), or the
# per-image IoU of the defective images


@dataclass(frozen=True)
class MetricSpec:
    """One metric, whole: its name and label, its direction, the tasks it heads and records, and how it is
    computed. `statistic` names its function, vectorised along the last axis of the arrays `rows` names; the case's
    value, its bootstrap interval (`interval`) and the paired interval of a change between two runs all come
    from it. `higher_is_better` is None for figures that are not a quality (counts, timing)."""

    name: str
    label: str
    description: str
    higher_is_better: bool | None
    kind: str = "score"  # score | rate | count | seconds | throughput | delta | setting
    headline_of: tuple[str, ...] = ()  # tasks whose headline number this is
    regression_gated: bool = False  # compared against the baseline and in candidate-vs-current pairs
    recorded_by: tuple[str, ...] = CASE_TASKS  # the tasks whose cases record it: a threshold can judge only these
    digits: int = 3
    rows: str | None = None  # VERDICTS or IOUS: computed from a case's per-image rows; None: recorded otherwise
    statistic: str | None = None  # its function in fmtest.metrics.functional (named: this table imports no numpy)
    interval: str | None = None  # "bootstrap", or "stratified" (good and defective images resampled apart)
    in_breakdown: bool = False  # also shown per group and defect type

    @property
    def compute(self) -> Callable:
        """The statistic itself, vectorised along the last axis of the arrays `rows` names."""
        from fmtest.metrics import functional

        return getattr(functional, self.statistic)

    @property
    def quality(self) -> bool:
        return self.higher_is_better is not None

    def worse(self, delta: float, tolerance: float) -> bool:
        """True when a change `delta` (new - old) is worse than `tolerance` in this metric's direction."""
        if self.higher_is_better is None or not math.isfinite(delta):
            return False
        return (-delta if self.higher_is_better else delta) > tolerance + 1e-12


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {s.name: s for s in specs}


METRICS: dict[str, MetricSpec] = _specs(
    MetricSpec("iou", "IoU", "mean IoU over defective images", True, headline_of=("segmentation",),
               regression_gated=True, recorded_by=("segmentation",), rows=IOUS, statistic="mean_along_last_axis",
               interval="bootstrap", in_breakdown=True),
    MetricSpec("f2", "F2", "F2 of OK/NOK verdicts, defective = positive", True, headline_of=("classification",),
               regression_gated=True, rows=VERDICTS, statistic="f2_from_labels", interval="stratified",
               in_breakdown=True),
    MetricSpec("precision", "precision", "share of NOK verdicts that are defective", True, "rate",
               regression_gated=True, rows=VERDICTS, statistic="precision_from_labels"),
    MetricSpec("recall", "recall", "share of defective parts flagged NOK", True, "rate", regression_gated=True,
               rows=VERDICTS, statistic="recall_from_labels", in_breakdown=True),
    MetricSpec("false_alarm_rate", "false-alarm rate", "share of good parts flagged NOK", False, "rate",
               regression_gated=True, rows=VERDICTS, statistic="false_alarm_rate_from_labels"),
    MetricSpec("slip_rate", "slip rate", "share of defective parts passed as OK", False, "rate", rows=VERDICTS,
               statistic="slip_rate_from_labels"),
    MetricSpec("slip_rate_upper", "slip rate, 95 % upper bound", "95 % upper bound (Clopper-Pearson) of the slip "
               "rate", False, "rate", rows=VERDICTS, statistic="slip_rate_upper_from_labels"),
    # Region figures (fmtest.metrics.region): computed from each image's region summary, not from the rows'
    # statistics; shown beside IoU and F2, gated only where a user sets a threshold (none by default)
    MetricSpec("au_pro", "AU-PRO", "area under the per-region overlap curve up to the false-positive-rate limit "
               "of [regions] fpr_limit, normalised by it (needs the pipeline's score map)", True,
               recorded_by=("segmentation",)),
    MetricSpec("pixel_auroc", "pixel AUROC (threshold-free)", "pixel-level AUROC of the score map, defect pixels "
               "positive: threshold-free, not a factory figure (AUROC misleads as a gate)", True,
               recorded_by=("segmentation",)),
    MetricSpec("pixel_ap", "pixel AP", "pixel-level average precision of the score map, defect pixels positive",
               True, recorded_by=("segmentation",)),
    MetricSpec("invalid_answer_rate", "unusable answers", "share of images whose answer was unusable (API failure, "
               "refusal, malformed reply): judged by max_invalid_answer_rate, above it the case errors", False, "rate"),
    MetricSpec("n_images", "images", "images scored", None, "count", rows=VERDICTS, statistic="images_from_labels",
               in_breakdown=True),
    MetricSpec("n_defective", "defective images", "defective images scored", None, "count", rows=VERDICTS,
               statistic="defectives_from_labels", in_breakdown=True),
    MetricSpec("images_per_second", "images per second", "throughput of the prediction step", None, "throughput",
               digits=1),
    MetricSpec("fit_seconds", "fit time (s)", "time spent fitting on training images", None, "seconds", digits=1),
    MetricSpec("flip_rate", "flip rate", "share of verdicts that flip under a perturbation", False, "rate",
               headline_of=("robustness",), recorded_by=ROBUSTNESS),
    MetricSpec("level", "level", "severity of the perturbation at the gated level", None, "setting", digits=2,
               recorded_by=ROBUSTNESS),
    MetricSpec("new_slips", "new slips", "defective images caught before (unperturbed, or by the reference) and "
               "passed as OK now", False, "count", recorded_by=ROBUSTNESS + COMPARISON),
    MetricSpec("new_false_alarms", "new false alarms", "good images passed before (unperturbed, or by the "
               "reference) and flagged NOK now", False, "count", recorded_by=ROBUSTNESS + COMPARISON),
    MetricSpec("new_slip_rate", "new slip rate", "share of defective images that become slips under the "
               "perturbation", False, "rate", recorded_by=ROBUSTNESS),
    MetricSpec("new_false_alarm_rate", "new false-alarm rate", "share of good images that become false alarms "
               "under the perturbation", False, "rate", recorded_by=ROBUSTNESS),
    MetricSpec("clean_recall", "clean recall", "recall of the unperturbed run on the same images", True, "rate",
               recorded_by=ROBUSTNESS),
    MetricSpec("clean_false_alarm_rate", "clean false-alarm rate", "false-alarm rate of the unperturbed run on the "
               "same images", False, "rate", recorded_by=ROBUSTNESS),
    MetricSpec("delta_iou", "\u0394 IoU", "change of IoU: perturbed minus clean run, or candidate minus reference",
               True, "delta", headline_of=("comparison",), recorded_by=ROBUSTNESS + COMPARISON),
    MetricSpec("delta_f2", "\u0394 F2", "change of F2: perturbed minus clean run, or candidate minus reference", True,
               "delta", recorded_by=ROBUSTNESS + COMPARISON),
    MetricSpec("delta_precision", "\u0394 precision", "change of precision, candidate minus reference", True, "delta",
               recorded_by=COMPARISON),
    MetricSpec("delta_recall", "\u0394 recall", "change of recall, candidate minus reference", True, "delta",
               recorded_by=COMPARISON),
    MetricSpec("delta_false_alarm_rate", "\u0394 false-alarm rate", "change of the false-alarm rate, candidate minus "
               "reference", False, "delta", recorded_by=COMPARISON),
    MetricSpec("fixed_slips", "fixed slips", "defective images the reference passed and the candidate catches",
               None, "count", recorded_by=COMPARISON),
    MetricSpec("fixed_false_alarms", "fixed false alarms", "good images the reference flagged and the candidate "
               "passes", None, "count", recorded_by=COMPARISON),
)


REGION_METRICS = ("au_pro", "pixel_auroc", "pixel_ap")  # the region figures among the metrics


def spec(name: str) -> MetricSpec | None:
    """The spec of a metric or of one of its interval ends (`iou_ci_low` -> iou)."""
    if name in METRICS:
        return METRICS[name]
    for suffix in INTERVAL_SUFFIXES:
        if name.endswith(suffix):
            return METRICS.get(name.removesuffix(suffix))
    return None


def headline_metric(task: str) -> str | None:
    return next((s.name for s in METRICS.values() if task in s.headline_of), None)


def regression_gated() -> list[MetricSpec]:
    return [s for s in METRICS.values() if s.regression_gated]


def is_diagnostic(name: str) -> bool:
    """A figure about the run rather than a result: counts, timing, the share of unusable answers. An
    unjudgeable case keeps these (they say why it cannot be judged) and no other."""
    s = spec(name)
    return s is not None and (s.kind in ("count", "throughput", "seconds") or s.name == "invalid_answer_rate")


def lower_is_better(name: str) -> bool:
    s = spec(name)
    return s is not None and s.higher_is_better is False


def is_count(name: str) -> bool:
    s = spec(name)
    return s is not None and s.kind == "count"


def format_metric(name: str | None, value: object, digits: int = 3) -> str:
    """A metric's value as its spec says it reads: counts as whole numbers, the rest with `digits`."""
    if name is not None and is_count(name) and isinstance(value, int | float) and float(value).is_integer():
        return str(int(value))
    return format_value(value, digits)


def format_value(value: object, digits: int = 3) -> str:
    """A metric as text; missing or NaN shows as n/a instead of a misleading number."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a" if value is None else str(value)
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, int) or (abs(value) >= 2 and float(value).is_integer()):  # counts stored as floats
        return str(int(value))
    return f"{value:.{digits}f}"


# How keys that are no metric read for people (the risk table's); a metric's label is on its spec, and any other
# key falls back to its words (`fit_seconds` -> "fit seconds").
LABELS = {
    "slip_rate_upper_95": "slip rate, 95 % upper bound",
    "target_slip_rate": "target slip rate",
    "defectives_needed_for_target": "defectives needed for the target",
    "auroc_threshold_free_not_a_factory_figure": "AUROC (threshold-free)",
    "auroc": "AUROC",
    "false_alarm_budget": "false-alarm budget",
    "recall_at_false_alarm_budget": "recall at the false-alarm budget",
    "false_alarm_rate_at_budget_threshold": "false-alarm rate at the budget's threshold",
    "verdict": "can the test set show the target?",
}


def label(key: str) -> str:
    """How a metric or risk key is shown to people: `slip_rate_upper_95` -> "slip rate, 95 % upper bound"."""
    found = METRICS.get(key)
    return found.label if found is not None else LABELS.get(key) or key.replace("_", " ")
