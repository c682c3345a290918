"""What each metric means, written once: direction, headline status, regression gating, display.

Every gate (thresholds, baseline, robustness, comparisons) and every renderer (terminal, HTML,
history, JUnit properties, JSON) reads this table. Adding a metric means one entry here plus its
pure function in `fmtest.metrics.functional`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")
MAX_PREFIX = "max_"  # a threshold `max_<metric>` is a maximum; one named like the metric a minimum
INVALID_ANSWER_GATE = "max_invalid_answer_rate"  # a miss is an error (the run could not judge), not a FAIL
DEFAULT_MAX_INVALID_ANSWER_RATE = 0.0  # no unusable answer is allowed unless the config says so
CASE_TASKS = ("segmentation", "classification")
ROBUSTNESS = ("robustness",)
COMPARISON = ("comparison",)


@dataclass(frozen=True)
class MetricSpec:
    """One metric. `higher_is_better` is None for figures that are not a quality (counts, timing)."""

    name: str
    description: str
    higher_is_better: bool | None
    kind: str = "score"  # score | rate | count | seconds | throughput | delta | setting
    headline_of: tuple[str, ...] = ()  # tasks whose headline number this is
    regression_gated: bool = False  # compared against the baseline and in candidate-vs-current pairs
    recorded_by: tuple[str, ...] = CASE_TASKS  # the tasks whose cases record it: a threshold can judge only these
    digits: int = 3

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
    MetricSpec("iou", "mean IoU over defective images", True, headline_of=("segmentation",), regression_gated=True),
    MetricSpec("f2", "F2 of OK/NOK verdicts, defective = positive", True, headline_of=("classification",),
               regression_gated=True),
    MetricSpec("precision", "share of NOK verdicts that are defective", True, "rate", regression_gated=True),
    MetricSpec("recall", "share of defective parts flagged NOK", True, "rate", regression_gated=True),
    MetricSpec("false_alarm_rate", "share of good parts flagged NOK", False, "rate", regression_gated=True),
    MetricSpec("slip_rate", "share of defective parts passed as OK", False, "rate"),
    MetricSpec("slip_rate_upper", "95 % upper bound (Clopper-Pearson) of the slip rate", False, "rate"),
    MetricSpec("invalid_answer_rate", "share of images whose answer was unusable (API failure, refusal, "
               "malformed reply): judged by max_invalid_answer_rate, above it the case errors", False, "rate"),
    MetricSpec("n_images", "images scored", None, "count"),
    MetricSpec("n_defective", "defective images scored", None, "count"),
    MetricSpec("images_per_second", "throughput of the prediction step", None, "throughput", digits=1),
    MetricSpec("fit_seconds", "time spent fitting on training images", None, "seconds", digits=1),
    MetricSpec("flip_rate", "share of verdicts that flip under a perturbation", False, "rate",
               headline_of=("robustness",), recorded_by=ROBUSTNESS),
    MetricSpec("level", "severity of the perturbation at the gated level", None, "setting", digits=2, recorded_by=ROBUSTNESS),
    MetricSpec("new_slips", "defective images caught before (unperturbed, or by the reference) and passed as OK "
               "now", False, "count", recorded_by=ROBUSTNESS + COMPARISON),
    MetricSpec("new_false_alarms", "good images passed before (unperturbed, or by the reference) and flagged NOK "
               "now", False, "count", recorded_by=ROBUSTNESS + COMPARISON),
    MetricSpec("new_slip_rate", "share of defective images that become slips under the perturbation", False,
               "rate", recorded_by=ROBUSTNESS),
    MetricSpec("new_false_alarm_rate", "share of good images that become false alarms under the perturbation",
               False, "rate", recorded_by=ROBUSTNESS),
    MetricSpec("clean_recall", "recall of the unperturbed run on the same images", True, "rate", recorded_by=ROBUSTNESS),
    MetricSpec("clean_false_alarm_rate", "false-alarm rate of the unperturbed run on the same images", False,
               "rate", recorded_by=ROBUSTNESS),
    MetricSpec("delta_iou", "change of IoU: perturbed minus clean run, or candidate minus reference", True,
               "delta", headline_of=("comparison",), recorded_by=ROBUSTNESS + COMPARISON),
    MetricSpec("delta_f2", "change of F2: perturbed minus clean run, or candidate minus reference", True, "delta", recorded_by=ROBUSTNESS + COMPARISON),
    MetricSpec("delta_precision", "change of precision, candidate minus reference", True, "delta", recorded_by=COMPARISON),
    MetricSpec("delta_recall", "change of recall, candidate minus reference", True, "delta", recorded_by=COMPARISON),
    MetricSpec("delta_false_alarm_rate", "change of the false-alarm rate, candidate minus reference", False,
               "delta", recorded_by=COMPARISON),
    MetricSpec("fixed_slips", "defective images the reference passed and the candidate catches", None, "count", recorded_by=COMPARISON),
    MetricSpec("fixed_false_alarms", "good images the reference flagged and the candidate passes", None,
               "count", recorded_by=COMPARISON),
)


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


# Short names for people, where a metric or risk key reads badly as written. Renderers show
# `label(key)`; keys without an entry fall back to their words (`fit_seconds` -> "fit seconds").
LABELS = {
    "iou": "IoU",
    "f2": "F2",
    "auroc": "AUROC",
    "n_images": "images",
    "n_defective": "defective images",
    "images_per_second": "images per second",
    "fit_seconds": "fit time (s)",
    "flip_rate": "flip rate",
    "delta_iou": "\u0394 IoU",
    "delta_f2": "\u0394 F2",
    "slip_rate_upper": "slip rate, 95 % upper bound",
    "slip_rate_upper_95": "slip rate, 95 % upper bound",
    "target_slip_rate": "target slip rate",
    "defectives_needed_for_target": "defectives needed for the target",
    "auroc_threshold_free_not_a_factory_figure": "AUROC (threshold-free)",
    "false_alarm_budget": "false-alarm budget",
    "recall_at_false_alarm_budget": "recall at the false-alarm budget",
    "false_alarm_rate_at_budget_threshold": "false-alarm rate at the budget's threshold",
    "false_alarm_rate": "false-alarm rate",
    "verdict": "can the test set show the target?",
}


def label(key: str) -> str:
    """How a metric or risk key is shown to people: `slip_rate_upper_95` -> "slip rate, 95 % upper bound"."""
    return LABELS.get(key) or key.replace("_", " ")
