"""Metrics against independent, deliberately naive computations (pixel sets, Python loops, scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import beta, binomtest

from fmtest.errors import FmtestError
from fmtest.metrics import functional as m
from fmtest.verdict.results import ImageResult
from fmtest.verdict.scoring import score_images

SETTINGS = settings(max_examples=60, deadline=None)


def masks(shape):
    return arrays(bool, shape)


@st.composite
def mask_triples(draw):
    shape = draw(st.tuples(st.integers(1, 9), st.integers(1, 9)))
    return draw(masks(shape)), draw(masks(shape)), draw(st.one_of(st.none(), masks(shape)))


def naive_iou(pred, target, ignore):
    coords = lambda a: {(int(y), int(x)) for y, x in zip(*np.nonzero(a))}
    skip = coords(ignore) if ignore is not None else set()
    p, g = coords(pred) - skip, coords(target) - skip
    union = p | g
    return 1.0 if not union else len(p & g) / len(union)


# --------------------------------------------------------------------------- IoU


@SETTINGS
@given(mask_triples())
def test_iou_matches_pixel_sets(triple):
    pred, target, ignore = triple
    assert m.iou(pred, target, ignore) == pytest.approx(naive_iou(pred, target, ignore))


@SETTINGS
@given(st.lists(mask_triples(), min_size=1, max_size=5))
def test_iou_batch_matches_single_iou_for_masks_of_differing_sizes(triples):
    preds, targets, ignores = zip(*triples)
    expected = [naive_iou(*t) for t in triples]
    np.testing.assert_allclose(m.iou_batch(preds, targets, ignores), expected)


def test_iou_batch_on_a_stack():
    rng = np.random.default_rng(0)
    preds, targets = rng.random((2, 4, 16, 16)) < 0.3
    np.testing.assert_allclose(m.iou_batch(preds, targets), [naive_iou(p, t, None) for p, t in zip(preds, targets)])


def test_iou_edge_cases():
    empty = np.zeros((5, 5), bool)
    full = np.ones((5, 5), bool)
    assert m.iou(empty, empty) == 1.0
    assert m.iou(full, empty) == 0.0
    assert m.iou(empty, full) == 0.0
    assert m.iou(np.ones((1, 1), bool), np.ones((1, 1), bool)) == 1.0
    assert m.iou(np.ones((1, 1), bool), np.zeros((1, 1), bool)) == 0.0
    assert m.iou(full, empty, ignore=full) == 1.0  # ignore covering everything leaves two empty sets


def test_iou_ignore_removes_pixels_from_both_sets():
    pred = np.array([[1, 1, 0, 0]], bool)
    target = np.array([[1, 0, 0, 1]], bool)
    assert m.iou(pred, target) == pytest.approx(1 / 3)
    assert m.iou(pred, target, ignore=np.array([[0, 1, 0, 1]], bool)) == 1.0


def test_iou_accepts_integer_masks_and_rejects_float_maps():
    assert m.iou(np.array([[1, 0]], np.uint8), np.array([[255, 0]], np.uint8)) == 1.0
    with pytest.raises(m.MetricInputError, match="threshold"):
        m.iou(np.array([[0.7]]), np.array([[True]]))


def test_iou_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        m.iou(np.zeros((2, 3), bool), np.zeros((3, 2), bool))
    with pytest.raises(FmtestError, match=r"ignore.*\(2, 2\)"):
        m.iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool), np.zeros((2, 2), bool))
    with pytest.raises(FmtestError, match="2 predicted masks but 1"):
        m.iou_batch([np.zeros((1, 1), bool)] * 2, [np.zeros((1, 1), bool)])


def test_mean_iou():
    assert math.isnan(m.mean_iou([]))
    assert m.mean_iou([0.2, 0.4]) == pytest.approx(0.3)


# --------------------------------------------------------------------------- counts and rates


def naive_counts(y_true, y_pred):
    tp = fp = fn = tn = 0
    for t, p in zip(y_true, y_pred):
        if t and p:
            tp += 1
        elif p:
            fp += 1
        elif t:
            fn += 1
        else:
            tn += 1
    return tp, fp, fn, tn


label_pairs = st.integers(0, 40).flatmap(lambda n: st.tuples(arrays(bool, n), arrays(bool, n)))


@SETTINGS
@given(label_pairs)
def test_counts_and_rates_match_loops(pair):
    y_true, y_pred = pair
    tp, fp, fn, tn = naive_counts(y_true, y_pred)
    c = m.confusion_counts(y_true, y_pred)
    assert (c.tp, c.fp, c.fn, c.tn) == (tp, fp, fn, tn)
    nan_or = lambda num, den: num / den if den else math.nan
    P, R = nan_or(tp, tp + fp), nan_or(tp, tp + fn)
    for got, want in [(m.precision(c), P), (m.recall(c), R), (m.false_alarm_rate(c), nan_or(fp, fp + tn)),
                      (m.slip_rate(c), nan_or(fn, tp + fn))]:
        assert got == pytest.approx(want, nan_ok=True)
    if tp + fn == 0:
        want_f2 = math.nan
    elif tp == 0:
        want_f2 = 0.0
    else:
        want_f2 = 5 * P * R / (4 * P + R)
    assert m.f2(c) == pytest.approx(want_f2, nan_ok=True)
    assert m.f2_from_labels(y_true, y_pred) == pytest.approx(want_f2, nan_ok=True)


def test_f2_fixed_values():
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    y_pred = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], bool)  # P = 3/5, R = 3/4
    P, R = 0.6, 0.75
    assert m.f2(m.confusion_counts(y_true, y_pred)) == pytest.approx(5 * P * R / (4 * P + R))
    assert m.fbeta(m.confusion_counts(y_true, y_pred), 1.0) == pytest.approx(2 * P * R / (P + R))


def test_f2_edge_cases():
    nok = np.ones(4, bool)
    ok = np.zeros(4, bool)
    assert m.f2(m.confusion_counts(nok, ok)) == 0.0  # P and R both 0 (P undefined): DESIGN fixes 0
    assert m.f2(m.confusion_counts(nok, nok)) == 1.0  # all-NOK truth, all found
    assert math.isnan(m.f2(m.confusion_counts(ok, ok)))  # all-OK truth: recall undefined
    assert math.isnan(m.f2(m.confusion_counts(ok, nok)))
    assert m.false_alarm_rate(m.confusion_counts(ok, nok)) == 1.0
    assert math.isnan(m.false_alarm_rate(m.confusion_counts(nok, nok)))


def test_labels_as_strings_and_bad_labels():
    c = m.confusion_counts(["NOK", "OK", "NOK"], ["NOK", "NOK", "OK"])
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 0)
    with pytest.raises(FmtestError, match="'bad'"):
        m.confusion_counts(["bad"], ["OK"])
    with pytest.raises(FmtestError, match="dtype float"):
        m.confusion_counts(np.array([0.5]), np.array([True]))
    with pytest.raises(FmtestError, match="shape"):
        m.confusion_counts([True, False], [True])


# --------------------------------------------------------------------------- exact binomial bounds


@SETTINGS
@given(st.integers(0, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_clopper_pearson_matches_binomtest(kn, confidence):
    k, n = kn
    if n == 0:
        assert m.clopper_pearson(k, n, confidence) == (0.0, 1.0)
        return
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    low, high = m.clopper_pearson(k, n, confidence)
    assert low == pytest.approx(ci.low, abs=1e-9)
    assert high == pytest.approx(ci.high, abs=1e-9)


@SETTINGS
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_slip_rate_upper_is_one_sided(kn):
    k, n = kn
    assert m.slip_rate_upper(k, n) == pytest.approx(beta.ppf(0.95, k + 1, n - k))
    # one-sided 95 % bound = upper end of the two-sided 90 % interval
    assert m.slip_rate_upper(k, n) == pytest.approx(m.clopper_pearson(k, n, 0.90)[1])


def test_slip_rate_upper_edges_and_known_value():
    assert m.slip_rate_upper(0, 32) == pytest.approx(1 - 0.05 ** (1 / 32))
    assert m.slip_rate_upper(5, 5) == 1.0
    assert m.slip_rate_upper(0, 0) == 1.0
    with pytest.raises(FmtestError, match="k=3, n=2"):
        m.slip_rate_upper(3, 2)
    with pytest.raises(FmtestError, match="confidence"):
        m.clopper_pearson(1, 2, confidence=1.5)


def test_defectives_needed():
    assert m.defectives_needed(0.01) == 299  # 1 - 0.05**(1/n) < 0.01
    assert m.slip_rate_upper(0, 32) > 0.01  # the study's 32 defectives cannot show 1 %
    for target, slips in [(0.01, 0), (0.05, 2), (0.1, 1), (0.5, 0)]:
        n = m.defectives_needed(target, allowed_slips=slips)
        assert m.slip_rate_upper(slips, n) < target
        assert n - 1 <= slips or m.slip_rate_upper(slips, n - 1) >= target
    with pytest.raises(FmtestError, match="max_slip_rate"):
        m.defectives_needed(0.0)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_by_seed_and_vectorised():
    x = np.random.default_rng(3).random(50)
    seen_shapes = []

    def mean(values):
        seen_shapes.append(values.shape)
        return values.mean(axis=-1)

    a = m.bootstrap_ci(mean, x, n_resamples=200, seed=7)
    b = m.bootstrap_ci(mean, x, n_resamples=200, seed=7)
    c = m.bootstrap_ci(mean, x, n_resamples=200, seed=8)
    assert a == b
    assert a != c
    assert seen_shapes == [(200, 50)] * 3
    assert a[0] < x.mean() < a[1]


def test_bootstrap_resamples_rows_jointly():
    x = np.arange(30.0)
    # identical arrays stay identical under a joint resample, so their difference is always 0
    assert m.bootstrap_ci(lambda a, b: (a - b).sum(axis=-1), x, x.copy(), n_resamples=50) == (0.0, 0.0)


def test_bootstrap_coverage_is_near_nominal():
    rng = np.random.default_rng(0)
    p, n, trials = 0.3, 80, 200
    hits = 0
    for trial in range(trials):
        x = (rng.random(n) < p).astype(float)
        low, high = m.bootstrap_ci(m.mean_along_last_axis, x, n_resamples=400, seed=trial)
        hits += low <= p <= high
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_input_errors():
    with pytest.raises(FmtestError, match="differ in length"):
        m.bootstrap_ci(lambda a, b: a.mean(-1), np.ones(3), np.ones(4))
    with pytest.raises(FmtestError, match="shape"):
        m.bootstrap_ci(lambda a: a.mean(), np.ones(3))
    assert all(math.isnan(v) for v in m.bootstrap_ci(m.mean_along_last_axis, np.array([])))


def test_stratified_bootstrap_keeps_stratum_sizes():
    strata = np.array([True] * 3 + [False] * 17)
    counts = []

    def count_true(s):
        counts.append(s.sum(axis=-1))
        return s.sum(axis=-1).astype(float)

    m.bootstrap_ci(count_true, strata, strata=strata, n_resamples=100)
    assert np.all(counts[0] == 3)
    with pytest.raises(FmtestError, match="strata"):
        m.bootstrap_ci(count_true, strata, strata=strata[:5])


# --------------------------------------------------------------------------- summaries


def _rows(y_true, y_pred, ious=None):
    ious = ious if ious is not None else [None] * len(y_true)
    return [ImageResult(f"i{k}", "", "NOK" if t else "OK", "NOK" if p else "OK", iou=iou)
            for k, (t, p, iou) in enumerate(zip(y_true, y_pred, ious, strict=True))]


def test_a_case_scores_every_verdict_metric_from_its_rows():
    y_true = np.array([True] * 10 + [False] * 30)
    y_pred = y_true.copy()
    y_pred[:2] = False  # 2 slips
    y_pred[10:13] = True  # 3 false alarms
    s = score_images(_rows(y_true, y_pred), task="classification", n_resamples=300, seed=0)
    assert set(s) == {"f2", "f2_ci_low", "f2_ci_high", "precision", "recall", "false_alarm_rate", "slip_rate",
                      "slip_rate_upper", "n_images", "n_defective"}
    assert all(isinstance(v, float) for v in s.values())
    assert s["f2"] == m.f2(m.Counts(tp=8, fp=3, fn=2, tn=27))
    assert s["f2_ci_low"] <= s["f2"] <= s["f2_ci_high"]
    assert (s["n_images"], s["n_defective"], s["slip_rate"]) == (40.0, 10.0, 0.2)
    assert s["false_alarm_rate"] == pytest.approx(0.1)
    assert s["slip_rate_upper"] == pytest.approx(beta.ppf(0.95, 3, 8))
    assert s == score_images(_rows(y_true, y_pred), task="classification", n_resamples=300, seed=0)


def test_an_all_good_set_has_no_f2_and_a_trivial_slip_bound():
    s = score_images(_rows(np.zeros(5, bool), np.zeros(5, bool)), task="classification", n_resamples=50, seed=0)
    assert math.isnan(s["f2"]) and math.isnan(s["f2_ci_low"]) and math.isnan(s["recall"])
    assert s["false_alarm_rate"] == 0.0 and s["slip_rate_upper"] == 1.0


def test_a_segmentation_case_scores_the_mean_iou_of_its_defective_images():
    truth = np.array([True, True, True, True, False])
    rows = _rows(truth, truth, [0.1, 0.5, 0.9, 0.7, None])
    s = score_images(rows, task="segmentation", n_resamples=300, seed=0)
    assert s["iou"] == pytest.approx(0.55) and s["iou_ci_low"] < 0.55 < s["iou_ci_high"]
    empty = score_images(_rows(truth[4:], truth[4:], [None]), task="segmentation", n_resamples=50, seed=0)
    assert math.isnan(empty["iou"]) and math.isnan(empty["iou_ci_low"])
    with pytest.raises(FmtestError, match=r"\[0, 1\]"):
        score_images(_rows(truth[:2], truth[:2], [0.5, math.nan]), task="segmentation", n_resamples=50, seed=0)


@SETTINGS
@given(st.integers(0, 40).flatmap(lambda n: st.tuples(arrays(bool, n), arrays(bool, n))))
def test_each_vectorised_statistic_equals_its_count_form(pair):
    """The statistics a case, its bootstrap and its paired comparisons use, against the count-based definitions."""
    y_true, y_pred = pair
    counts = m.confusion_counts(y_true, y_pred)
    for statistic, reference in ((m.f2_from_labels, m.f2), (m.precision_from_labels, m.precision),
                                 (m.recall_from_labels, m.recall), (m.false_alarm_rate_from_labels, m.false_alarm_rate),
                                 (m.slip_rate_from_labels, m.slip_rate)):
        got = float(statistic(y_true[None], y_pred[None])[0]) if len(y_true) else math.nan
        want = reference(counts)
        assert got == want or (math.isnan(got) and math.isnan(want)), statistic.__name__
    if len(y_true):
        assert m.slip_rate_upper_from_labels(y_true[None], y_pred[None])[0] == m.slip_rate_upper(counts.fn,
                                                                                                  counts.n_defective)


# --------------------------------------------------------------------------- risk


def brute_force_auroc(scores, positive):
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg)) if pos and neg else math.nan


@SETTINGS
@given(st.integers(0, 30).flatmap(lambda n: st.tuples(
    arrays(np.float64, n, elements=st.integers(0, 5).map(float)), arrays(bool, n))))
def test_auroc_matches_pair_counting(pair):
    scores, positive = pair
    assert m.auroc(scores, positive) == pytest.approx(brute_force_auroc(scores, positive), nan_ok=True)


def test_recall_at_false_alarm_uses_training_scores_only():
    good_train = np.arange(100.0)  # 1 % budget: one good training score may exceed the threshold
    result = m.recall_at_false_alarm(good_train, [50.0, 98.5, 99.5, 120.0, 10.0], [False, False, True, True, True])
    assert result["threshold"] == 98.0
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["false_alarm_rate"] == pytest.approx(0.5)
    # test scores do not move the threshold
    other = m.recall_at_false_alarm(good_train, [1000.0, 0.0], [False, True])
    assert other["threshold"] == 98.0 and other["false_alarm_rate"] == 1.0


@SETTINGS
@given(arrays(np.float64, st.integers(1, 200), elements=st.floats(-5, 5)), st.sampled_from([0.0, 0.01, 0.05, 0.2]))
def test_threshold_holds_the_budget_on_the_training_scores(scores, budget):
    t = m.threshold_for_false_alarm_budget(scores, budget)
    assert np.count_nonzero(scores > t) <= math.floor(budget * scores.size + 1e-9)
    assert t in scores


def test_paired_bootstrap_delta():
    rng = np.random.default_rng(0)
    base = rng.random(60)
    better = np.clip(base + 0.05 + rng.normal(0, 0.01, 60), 0, 1)
    delta, low, high = m.paired_bootstrap_delta(better, base, m.mean_along_last_axis, n_resamples=500)
    assert delta == pytest.approx(better.mean() - base.mean())
    assert 0 < low < delta < high  # the paired interval resolves a small consistent gain
    y_true = np.array([True] * 10 + [False] * 10)
    perfect, worse = y_true.copy(), y_true.copy()
    worse[:5] = False
    delta, low, high = m.paired_bootstrap_delta((y_true, perfect), (y_true, worse), m.f2_from_labels, n_resamples=300)
    assert delta == pytest.approx(1.0 - m.f2(m.confusion_counts(y_true, worse)))
    assert low > 0
    assert (delta, low, high) == m.paired_bootstrap_delta((y_true, perfect), (y_true, worse), m.f2_from_labels,
                                                          n_resamples=300)


def test_classification_interval_keeps_the_number_of_defective_images_fixed():
    rng = np.random.default_rng(2)
    y_true = rng.random(60) < 0.15
    y_pred = y_true ^ (rng.random(60) < 0.2)
    s = score_images(_rows(y_true, y_pred), task="classification", n_resamples=200, seed=4)
    stratified = m.bootstrap_ci(m.f2_from_labels, y_true, y_pred, n_resamples=200, seed=4, strata=y_true)
    plain = m.bootstrap_ci(m.f2_from_labels, y_true, y_pred, n_resamples=200, seed=4)
    assert (s["f2_ci_low"], s["f2_ci_high"]) == stratified != plain
