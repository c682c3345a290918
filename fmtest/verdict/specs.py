"""What each metric means, written once: direction, headline status, regression gating, display.

Every gate (thresholds, baseline, robustness, comparisons) and every renderer (terminal, HTML,
history, JUnit properties, JSON) reads this table. Adding a metric means one entry here plus its
pure function in `fmtest.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")


@dataclass(frozen=True)
class MetricSpec:
    """One metric. `higher_is_better` is None for figures that are not a quality (counts, timing)."""

    name: str
    description: str
    higher_is_better: bool | None
    kind: str = "score"  # score | rate | count | seconds | throughput | delta | setting
    headline_of: tuple[str, ...] = ()  # tasks whose headline number this is
    regression_gated: bool = False  # compared against the baseline and in candidate-vs-current pairs
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
    MetricSpec("n_images", "images scored", None, "count"),
    MetricSpec("n_defective", "defective images scored", None, "count"),
    MetricSpec("images_per_second", "throughput of the prediction step", None, "throughput", digits=1),
    MetricSpec("fit_seconds", "time spent fitting on training images", None, "seconds", digits=1),
    MetricSpec("flip_rate", "share of verdicts that flip under a perturbation", False, "rate",
               headline_of=("robustness",)),
    MetricSpec("level", "severity of the perturbation at the gated level", None, "setting", digits=2),
    MetricSpec("delta_iou", "IoU under the perturbation minus IoU without it", True, "delta"),
    MetricSpec("delta_f2", "F2 under the perturbation minus F2 without it", True, "delta"),
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


def lower_is_better(name: str) -> bool:
    s = spec(name)
    return s is not None and s.higher_is_better is False


def is_count(name: str) -> bool:
    s = spec(name)
    return s is not None and s.kind == "count"


def format_value(value: object, digits: int = 3) -> str:
    """A metric as text; missing or NaN shows as n/a instead of a misleading number."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a" if value is None else str(value)
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, int) or (abs(value) >= 2 and float(value).is_integer()):  # counts stored as floats
        return str(int(value))
    return f"{value:.{digits}f}"
