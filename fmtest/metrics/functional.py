"""Metrics as pure numpy functions: IoU, OK/NOK counts and rates, F2, exact binomial bounds, bootstrap, risk.

Definitions are fixed by DESIGN.md section 4; the positive class is defective (NOK). Label arrays are
bool with True = NOK. Ratios that divide by zero are nan ("undefined"), never a silent 0 or 1, except
where DESIGN.md fixes a value (empty/empty IoU = 1.0, F2 = 0 when P = R = 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import (
    special as _special,  # not scipy.stats: a second to import, in every run
)

from fmtest.errors import FmtestError

Statistic = Callable[..., np.ndarray]


class MetricInputError(FmtestError, ValueError):
    """Arrays handed to a metric do not fit together (shape, dtype, range): a caller's bug, not a data value."""


# --------------------------------------------------------------------------- segmentation


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """Bool view of a mask; integer 0/1 masks are accepted, float maps must be thresholded by the caller."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.integer):
        return array != 0
    raise MetricInputError(f"{name} must be a bool mask, got dtype {array.dtype}; threshold it first")


def _iou_counts(pred: np.ndarray, target: np.ndarray, ignore: np.ndarray | None) -> tuple[int, int]:
    if ignore is not None:
        keep = ~ignore
        pred = pred & keep
        target = target & keep
    inter = np.count_nonzero(pred & target)
    union = np.count_nonzero(pred) + np.count_nonzero(target) - inter
    return inter, union


def iou(pred: np.ndarray, target: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """|P ∩ G| / |P ∪ G| with `ignore` pixels removed from both sets; 1.0 when both are empty."""
    pred, target = _as_mask(pred, "pred"), _as_mask(target, "target")
    if pred.shape != target.shape:
        raise MetricInputError(f"pred mask has shape {pred.shape} but target mask has shape {target.shape}")
    if ignore is not None:
        ignore = _as_mask(ignore, "ignore")
        if ignore.shape != target.shape:
            raise MetricInputError(f"ignore mask has shape {ignore.shape} but target mask has shape {target.shape}")
    inter, union = _iou_counts(pred, target, ignore)
    return 1.0 if union == 0 else inter / union


def iou_batch(
    preds: Sequence[np.ndarray] | np.ndarray,
    targets: Sequence[np.ndarray] | np.ndarray,
    ignores: Sequence[np.ndarray | None] | np.ndarray | None = None,
) -> np.ndarray:
    """Per-pair IoU of many masks (a stack N x H x W, or lists of masks of differing sizes) as float64 (N,).

    One pass of `count_nonzero` per pair: faster than whole-stack reductions, which allocate and
    convert, and it works when images in a dataset differ in size.
    """
    if len(preds) != len(targets):
        raise MetricInputError(f"{len(preds)} predicted masks but {len(targets)} target masks")
    if ignores is not None and len(ignores) != len(targets):
        raise MetricInputError(f"{len(ignores)} ignore masks but {len(targets)} target masks")
    out = np.empty(len(preds), dtype=np.float64)
    for i in range(len(preds)):
        out[i] = iou(preds[i], targets[i], None if ignores is None else ignores[i])
    return out


def mean_iou(values: Sequence[float] | np.ndarray) -> float:
    """Segmentation score: mean per-image IoU (over defective images, chosen by the caller); nan if none."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else math.nan


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Counts:
    """Confusion counts with defective (NOK) as the positive class."""

    tp: int  # defective, flagged NOK
    fp: int  # good, flagged NOK (false alarm)
    fn: int  # defective, passed as OK (slip)
    tn: int  # good, passed as OK

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def n_defective(self) -> int:
        return self.tp + self.fn

    @property
    def n_good(self) -> int:
        return self.fp + self.tn


def as_nok(labels: Sequence[object] | np.ndarray, name: str = "labels") -> np.ndarray:
    """Bool array (True = NOK) from bools or "OK"/"NOK" strings, so callers can pass either."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "US":
        unknown = set(np.unique(arr).tolist()) - {"OK", "NOK"}
        if unknown:
            raise MetricInputError(f"{name} must be 'OK' or 'NOK', got {sorted(unknown)}")
        return arr == "NOK"
    if arr.size == 0:
        return arr.astype(bool)
    raise MetricInputError(f"{name} must be bool (True = NOK) or 'OK'/'NOK' strings, got dtype {arr.dtype}")


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = as_nok(y_true, "y_true"), as_nok(y_pred, "y_pred")
    if t.shape != p.shape:
        raise MetricInputError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}")
    return t, p


def confusion_counts(y_true, y_pred) -> Counts:
    t, p = _pair(y_true, y_pred)
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return Counts(tp=tp, fp=fp, fn=fn, tn=t.size - tp - fp - fn)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def precision(counts: Counts) -> float:
    """tp / (tp + fp); nan when nothing is flagged NOK."""
    return _ratio(counts.tp, counts.tp + counts.fp)


def recall(counts: Counts) -> float:
    """tp / (tp + fn); nan when the truth holds no defective image."""
    return _ratio(counts.tp, counts.tp + counts.fn)


def fbeta(counts: Counts, beta: float) -> float:
    """(1 + b²)·P·R / (b²·P + R), computed from counts as (1 + b²)tp / ((1 + b²)tp + b²fn + fp).

    The count form equals the P/R form wherever that is defined and is 0 when there are defective
    images but none is found (R = 0, P undefined or 0), as DESIGN.md requires.
    All-OK truth: recall is undefined, so F-beta is nan (even with no false alarm); judge such a set
    by `false_alarm_rate` instead.
    """
    if counts.n_defective == 0:
        return math.nan
    b2 = beta * beta
    return (1 + b2) * counts.tp / ((1 + b2) * counts.tp + b2 * counts.fn + counts.fp)


def f2(counts: Counts) -> float:
    """F2 = 5PR / (4P + R): recall weighs four times precision, since a slipped defect costs more than a false alarm."""
    return fbeta(counts, 2.0)


def false_alarm_rate(counts: Counts) -> float:
    """fp / (fp + tn): share of good parts flagged NOK; nan without good images."""
    return _ratio(counts.fp, counts.fp + counts.tn)


def slip_rate(counts: Counts) -> float:
    """fn / (tp + fn): share of defective parts passed as OK; nan without defective images."""
    return _ratio(counts.fn, counts.tp + counts.fn)


def f2_from_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F2 along the last axis of bool label arrays: the vectorised statistic for bootstraps.

    Same definition as `f2`; nan where a row holds no defective image.
    """
    y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    tp = np.count_nonzero(y_true & y_pred, axis=-1)
    fn = np.count_nonzero(y_true & ~y_pred, axis=-1)
    fp = np.count_nonzero(~y_true & y_pred, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, 5.0 * tp / (5.0 * tp + 4.0 * fn + fp), np.nan)


def _counts_along_last_axis(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn, tn) along the last axis of bool label arrays."""
    y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    tp = np.count_nonzero(y_true & y_pred, axis=-1)
    fp = np.count_nonzero(~y_true & y_pred, axis=-1)
    fn = np.count_nonzero(y_true & ~y_pred, axis=-1)
    return tp, fp, fn, y_true.shape[-1] - tp - fp - fn


def _ratio_along(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def precision_from_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """tp / (tp + fp) along the last axis; nan where nothing is flagged NOK."""
    tp, fp, _, _ = _counts_along_last_axis(y_true, y_pred)
    return _ratio_along(tp, tp + fp)


def recall_from_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """tp / (tp + fn) along the last axis; nan where no image is defective."""
    tp, _, fn, _ = _counts_along_last_axis(y_true, y_pred)
    return _ratio_along(tp, tp + fn)


def false_alarm_rate_from_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """fp / (fp + tn) along the last axis; nan where no image is good."""
    _, fp, _, tn = _counts_along_last_axis(y_true, y_pred)
    return _ratio_along(fp, fp + tn)


def slip_rate_from_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """fn / (tp + fn) along the last axis; nan where no image is defective."""
    tp, _, fn, _ = _counts_along_last_axis(y_true, y_pred)
    return _ratio_along(fn, tp + fn)


def slip_rate_upper_from_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The one-sided 95 % Clopper-Pearson bound of the slip rate along the last axis (`slip_rate_upper`); 1.0, the
    trivial bound, where no image is defective."""
    tp, _, fn, _ = _counts_along_last_axis(y_true, y_pred)
    bound = np.vectorize(lambda k, n: slip_rate_upper(int(k), int(n)), otypes=[np.float64])
    return bound(fn, tp + fn)


def images_from_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """How many images, along the last axis."""
    return np.full(np.shape(y_true)[:-1], np.shape(y_true)[-1], dtype=np.float64)


def defectives_from_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """How many defective images, along the last axis."""
    return np.count_nonzero(np.asarray(y_true, dtype=bool), axis=-1).astype(np.float64)


def mean_along_last_axis(values: np.ndarray) -> np.ndarray:
    """Vectorised mean (e.g. of per-image IoU) for `bootstrap_ci` and `paired_bootstrap_delta`."""
    return np.mean(values, axis=-1)


# --------------------------------------------------------------------------- exact binomial bounds


def _check_binomial(k: int, n: int) -> None:
    if int(k) != k or int(n) != n or not 0 <= k <= n:
        raise MetricInputError(f"need integers 0 <= k <= n, got k={k}, n={n}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise MetricInputError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion k/n; (0, 1) when n = 0 (nothing observed)."""
    _check_binomial(k, n)
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else _beta_quantile(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else _beta_quantile(1 - alpha / 2, k + 1, n - k)
    return low, high


def binomial_upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided exact (Clopper-Pearson) upper bound: P(rate <= bound) holds at `confidence`."""
    _check_binomial(k, n)
    _check_confidence(confidence)
    return 1.0 if k == n else _beta_quantile(confidence, k + 1, n - k)


def _beta_quantile(q: float, a: float, b: float) -> float:
    """The q-quantile of Beta(a, b): the inverse regularised incomplete beta function, the same Boost routine
    (and the same bits) as scipy.stats.beta.ppf."""
    return float(_special.betaincinv(a, b, q))


def slip_rate_upper(n_slipped: int, n_defective: int, confidence: float = 0.95) -> float:
    """DESIGN's "95 % upper bound (Clopper-Pearson)" on the slip rate, taken ONE-sided.

    A factory asks "at most how many defects slip?", a one-sided question, so all of alpha goes to
    the upper tail (this equals the upper end of the two-sided 90 % interval). No defective images
    give the trivial bound 1.0.
    """
    return binomial_upper_bound(n_slipped, n_defective, confidence)


def defectives_needed(max_slip_rate: float, confidence: float = 0.95, allowed_slips: int = 0) -> int:
    """Fewest defective test images that can show slip rate < `max_slip_rate` if at most `allowed_slips` slip.

    With zero slips the bound is 1 - alpha^(1/n): 32 defectives bound the slip rate only at 8.9 %,
    showing 1 % takes 299.
    """
    if not 0.0 < max_slip_rate < 1.0:
        raise MetricInputError(f"max_slip_rate must lie strictly between 0 and 1, got {max_slip_rate}")
    if int(allowed_slips) != allowed_slips or allowed_slips < 0:
        raise MetricInputError(f"allowed_slips must be a non-negative integer, got {allowed_slips}")
    _check_confidence(confidence)

    def enough(n: int) -> bool:
        return binomial_upper_bound(allowed_slips, n, confidence) < max_slip_rate

    low, high = allowed_slips, max(allowed_slips + 1, 1)
    while not enough(high):  # the bound falls monotonically in n: bracket, then bisect
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


# --------------------------------------------------------------------------- bootstrap


def _resample_indices(n: int, n_resamples: int, seed: int, strata: np.ndarray | None) -> np.ndarray:
    """(n_resamples, n) indices drawn with replacement; within each stratum when `strata` is given."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_resamples, n))
    idx = np.empty((n_resamples, n), dtype=np.int64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        idx[:, members] = members[rng.integers(0, members.size, size=(n_resamples, members.size))]
    return idx


def _check_arrays(arrays: Sequence[np.ndarray]) -> int:
    if not arrays:
        raise MetricInputError("bootstrap needs at least one array")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise MetricInputError(f"bootstrap arrays differ in length: {sorted(lengths)}")
    return lengths.pop()


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    statistic: Statistic,
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(*arrays)`, all resamples at once.

    `statistic` gets each array resampled (the same rows for every array) with a leading resample
    axis, shape (n_resamples, n, ...), and returns (n_resamples,). Resamples where it is nan
    (e.g. no defective image drawn) are left out; `strata` (one label per row) resamples within
    each stratum, keeping e.g. the number of defective images fixed. Same seed, same interval.
    """
    _check_confidence(confidence)
    arrays = tuple(np.asarray(a) for a in arrays)
    n = _check_arrays(arrays)
    if n == 0:
        return math.nan, math.nan
    if strata is not None:
        strata = np.asarray(strata)
        if strata.shape != (n,):
            raise MetricInputError(f"strata has shape {strata.shape} but the arrays have {n} rows")
    idx = _resample_indices(n, n_resamples, seed, strata)
    values = np.asarray(statistic(*(a[idx] for a in arrays)), dtype=np.float64)
    if values.shape != (n_resamples,):
        raise MetricInputError(f"bootstrap statistic must return shape ({n_resamples},), got {values.shape}")
    return _percentile_interval(values, confidence)


def paired_bootstrap_delta(
    a: np.ndarray | tuple[np.ndarray, ...],
    b: np.ndarray | tuple[np.ndarray, ...],
    statistic: Statistic,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """statistic(a) - statistic(b) with a percentile interval, resampling the SAME images for both runs.

    `a` and `b` are one array per run (per-image IoU: use `mean_along_last_axis`) or tuples of arrays
    (y_true, y_pred: use `f2_from_labels`). Pairing removes image-to-image variation shared by the
    runs, so the interval is much tighter than comparing two independent intervals.
    """
    a_arrays = a if isinstance(a, tuple) else (a,)
    b_arrays = b if isinstance(b, tuple) else (b,)
    a_arrays = tuple(np.asarray(x) for x in a_arrays)
    b_arrays = tuple(np.asarray(x) for x in b_arrays)
    _check_confidence(confidence)
    n = _check_arrays(a_arrays + b_arrays)
    if n == 0:
        return math.nan, math.nan, math.nan
    delta = float(np.asarray(statistic(*(x[None] for x in a_arrays)))[0]
                  - np.asarray(statistic(*(x[None] for x in b_arrays)))[0])
    idx = _resample_indices(n, n_resamples, seed, None)
    deltas = (np.asarray(statistic(*(x[idx] for x in a_arrays)), dtype=np.float64)
              - np.asarray(statistic(*(x[idx] for x in b_arrays)), dtype=np.float64))
    low, high = _percentile_interval(deltas, confidence)
    return delta, low, high


# --------------------------------------------------------------------------- risk at the operating point


def threshold_for_false_alarm_budget(good_scores, budget: float) -> float:
    """Score threshold (NOK iff score > threshold) that flags at most `budget` of the given good scores.

    Use defect-free TRAINING scores only: a threshold tuned on test images overstates performance.
    """
    scores = np.sort(np.asarray(good_scores, dtype=np.float64))
    if scores.size == 0:
        raise MetricInputError("need at least one good training score to set a threshold")
    if not 0.0 <= budget < 1.0:
        raise MetricInputError(f"false-alarm budget must lie in [0, 1), got {budget}")
    allowed = min(math.floor(budget * scores.size + 1e-9), scores.size - 1)  # good images that may score above it
    return float(scores[scores.size - allowed - 1])


def recall_at_false_alarm(good_train_scores, test_scores, test_defective, budget: float = 0.01) -> dict[str, float]:
    """Recall and measured false-alarm rate on the test set at the threshold set on good training scores.

    This is the factory's operating point: the line runs with one fixed threshold, so the figure that
    matters is the recall there, and whether the false-alarm rate on unseen good parts holds the budget.
    """
    threshold = threshold_for_false_alarm_budget(good_train_scores, budget)
    scores = np.asarray(test_scores, dtype=np.float64)
    defective = as_nok(test_defective, "test_defective")
    if scores.shape != defective.shape:
        raise MetricInputError(f"test_scores has shape {scores.shape} but test_defective has {defective.shape}")
    counts = confusion_counts(defective, scores > threshold)
    return {"threshold": threshold, "recall": recall(counts), "false_alarm_rate": false_alarm_rate(counts)}


def auroc(scores, y_true) -> float:
    """Area under the ROC curve (ties count half); nan unless both classes are present.

    Threshold-free, so NOT a factory figure: a high AUROC says nothing about recall at the false-alarm
    rate the line can afford (see `recall_at_false_alarm`). Reported for comparison with papers.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = as_nok(y_true, "y_true")
    if scores.shape != positive.shape:
        raise MetricInputError(f"scores has shape {scores.shape} but y_true has shape {positive.shape}")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores)  # the Mann-Whitney U statistic handles ties as 1/2
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing the mean of their ranks (scipy.stats.rankdata's
    "average"); every rank NaN when a value is NaN."""
    if np.isnan(values).any():
        return np.full(values.shape, np.nan)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each run of ties
    ends = np.r_[starts[1:], ordered.size]
    ranks = np.empty(values.shape, dtype=np.float64)
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)
    return ranks


def invariance_summary(base_labels, base_ious, perturbed_labels, perturbed_ious, y_true) -> dict[str, float]:
    """How far the answers moved between the clean and the perturbed run of the same images.

    Labels are bool (True = NOK) or "OK"/"NOK"; IoU arrays hold one value per image (only defective
    images are read) or are None for classification, giving delta_iou = nan. flip_rate is the share
    of images whose verdict changed, split into new slips (defective images caught clean and passed
    perturbed) and new false alarms (good images passed clean and flagged perturbed); false_alarm_rate
    and slip_rate are those of the perturbed run, clean_recall and clean_false_alarm_rate of the clean one.
    """
    truth = as_nok(y_true, "y_true")
    base, perturbed = as_nok(base_labels, "base_labels"), as_nok(perturbed_labels, "perturbed_labels")
    if not truth.shape == base.shape == perturbed.shape:
        raise MetricInputError(f"label arrays differ in shape: y_true {truth.shape}, base {base.shape}, "
                          f"perturbed {perturbed.shape}")
    if (base_ious is None) != (perturbed_ious is None):
        raise MetricInputError("give per-image IoU for both runs or for neither")
    if base_ious is None:
        delta_iou = float("nan")
    else:
        base_ious, perturbed_ious = np.asarray(base_ious, float), np.asarray(perturbed_ious, float)
        if not base_ious.shape == perturbed_ious.shape == truth.shape:
            raise MetricInputError(f"IoU arrays {base_ious.shape} and {perturbed_ious.shape} do not match "
                              f"the {truth.shape} labels")
        delta_iou = mean_iou(perturbed_ious[truth]) - mean_iou(base_ious[truth])
    perturbed_counts = confusion_counts(truth, perturbed)
    clean_counts = confusion_counts(truth, base)
    new_slips = int(np.sum(truth & base & ~perturbed))  # defective, caught clean, passed perturbed
    new_false_alarms = int(np.sum(~truth & ~base & perturbed))  # good, passed clean, flagged perturbed
    return {
        "flip_rate": float(np.mean(base != perturbed)) if truth.size else float("nan"),
        "new_slips": float(new_slips),
        "new_false_alarms": float(new_false_alarms),
        "new_slip_rate": new_slips / clean_counts.n_defective if clean_counts.n_defective else float("nan"),
        "new_false_alarm_rate": new_false_alarms / clean_counts.n_good if clean_counts.n_good else float("nan"),
        "clean_recall": recall(clean_counts),
        "clean_false_alarm_rate": false_alarm_rate(clean_counts),
        "delta_iou": delta_iou,
        "delta_f2": f2(perturbed_counts) - f2(confusion_counts(truth, base)),
        "false_alarm_rate": false_alarm_rate(perturbed_counts),
        "slip_rate": slip_rate(perturbed_counts),
    }
