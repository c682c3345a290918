"""Region-level figures (AU-PRO, pixel AUROC and AP, recall by defect size), each against an independent
computation on every pixel, and the per-image summaries they are built from: within their stated bound
on the fixed grid, exact on a grid of the data's own scores, merged across shards bit for bit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label as skimage_label
from sklearn.metrics import average_precision_score, roc_auc_score

from fmtest.metrics.functional import MetricInputError, clopper_pearson
from fmtest.metrics.region import (
    DEFAULT_GRID,
    ImageRegionSummary,
    ScoreGrid,
    region_figures,
    region_figures_of_maps,
    summarise_image,
)


def defect_maps(n, size, seed, *, defects, corner_margins, sides, noise_blur, defect_blur, quantise=None):
    """Score maps like a detector's (float32) with their ground truths: smooth noise (`noise_blur`), lifted on
    the defects (`defect_blur`); every other image has `defects` rectangles of `sides` [lo, hi) px, their
    top-left corners `corner_margins` (top/left, bottom/right) away from the edges; the rest are defect-free.
    `quantise`: scores rounded to 1/quantise."""
    rng = np.random.default_rng(seed)
    maps, gts = [], []
    for i in range(n):
        gt = np.zeros((size, size), bool)
        if i % 2:
            for _ in range(defects):
                y, x = rng.integers(corner_margins[0], size - corner_margins[1], 2)
                h, w = rng.integers(*sides, 2)
                gt[y:y + h, x:x + w] = True
        score = np.abs(ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), noise_blur)) * 3
        score += 1.2 * ndimage.gaussian_filter(gt.astype(float), defect_blur)
        if quantise:
            score = np.round(score * quantise) / quantise  # many ties, across classes
        maps.append(score.astype(np.float32))
        gts.append(gt)
    return maps, gts


def smooth_maps(n=8, size=48, seed=0, quantise=None):
    """Small maps: two defects of up to 11 x 11 px on every other image."""
    return defect_maps(n, size, seed, defects=2, corner_margins=(2, 14), sides=(1, 12), noise_blur=2,
                       defect_blur=1.5, quantise=quantise)


def pro_by_thresholding(maps, gts, limit):
    """AU-PRO the long way: binarise at every distinct score, average each region's overlap, integrate the
    clipped polyline from (0, 0) to (1, 1) segment by segment, divide by the limit."""
    regions = []
    for score, gt in zip(maps, gts, strict=True):
        labelled = skimage_label(gt, connectivity=2)
        regions += [score[labelled == k] for k in range(1, labelled.max() + 1)]
    good = np.concatenate([s[~g] for s, g in zip(maps, gts, strict=True)])
    points = [(0.0, 0.0)]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        points.append((np.mean(good >= t), np.mean([np.mean(r >= t) for r in regions])))
    points.append((1.0, 1.0))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        a, b = min(x0, limit), min(x1, limit)
        if b > a:
            ya, yb = (y0 + (y1 - y0) * (v - x0) / (x1 - x0) for v in (a, b))
            area += (b - a) * (ya + yb) / 2
    return area / limit


def every_pixel(maps, gts, ignores=None):
    keep = [np.ones(g.shape, bool) if ignores is None else ~i for g, i in zip(gts, ignores or gts, strict=True)]
    scores = np.concatenate([m[k] for m, k in zip(maps, keep, strict=True)])
    labels = np.concatenate([g[k] for g, k in zip(gts, keep, strict=True)])
    return labels, scores


# --------------------------------------------------------------------------- exact, against independent code


@pytest.mark.parametrize("quantise", [None, 4])
def test_exact_figures_equal_sklearn_and_a_plain_pro(quantise):
    maps, gts = smooth_maps(quantise=quantise, size=32)
    figures = region_figures_of_maps(maps, gts, [m > 1.0 for m in maps])
    labels, scores = every_pixel(maps, gts)
    assert figures.pixel_auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert figures.pixel_ap == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert figures.pro == pytest.approx(pro_by_thresholding(maps, gts, 0.3), abs=1e-12)
    assert figures.pro_error_bound == figures.pixel_auroc_error_bound == figures.pixel_ap_error_bound == 0.0
    assert (figures.n_defect_pixels, figures.n_good_pixels) == (labels.sum(), (~labels).sum())


def test_pro_limit_changes_the_figure_as_the_plain_computation_does():
    maps, gts = smooth_maps(seed=4, quantise=20)
    for limit in (0.05, 0.3, 1.0):
        figures = region_figures_of_maps(maps, gts, [m > 1.0 for m in maps], fpr_limit=limit)
        assert figures.pro == pytest.approx(pro_by_thresholding(maps, gts, limit), abs=1e-12)
        assert figures.fpr_limit == limit


def test_ignored_pixels_are_neither_defect_nor_good():
    maps, gts = smooth_maps(n=4, seed=2)
    ignores = [ndimage.binary_dilation(g, iterations=2) & ~g for g in gts]  # a border round each defect
    ignores[0][:5] = True
    figures = region_figures_of_maps(maps, gts, [m > 1.0 for m in maps], ignores)
    labels, scores = every_pixel(maps, gts, ignores)
    assert figures.pixel_auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert figures.n_good_pixels == (~labels).sum()
    without = region_figures_of_maps(maps, gts, [m > 1.0 for m in maps])
    assert without.n_good_pixels > figures.n_good_pixels


def test_regions_are_eight_connected():
    gt = np.zeros((10, 10), bool)
    gt[2, 2] = gt[3, 3] = True  # touching at a corner: one region
    gt[7, 7] = True
    summary = summarise_image("a", np.zeros((10, 10), np.float32), gt, np.zeros((10, 10), bool))
    assert sorted(r.area for r in summary.regions) == [1, 2]


@pytest.mark.slow
def test_pro_equals_anomalibs_aupro():
    aupro = pytest.importorskip("anomalib.metrics.aupro")
    torch = pytest.importorskip("torch")
    maps, gts = smooth_maps(seed=3)
    metric = aupro._AUPRO(fpr_limit=0.3)
    metric.update(torch.tensor(np.stack(maps)), torch.tensor(np.stack(gts)).int())
    ours = region_figures_of_maps(maps, gts, [m > 1.0 for m in maps])
    assert ours.pro == pytest.approx(float(metric.compute()), abs=1e-6)  # anomalib sums in float32


# --------------------------------------------------------------------------- the fixed grid and its bound


def summaries_of(maps, gts, grid=DEFAULT_GRID, threshold=1.0):
    return [summarise_image(f"img{i:02d}", m, g, m > threshold, grid=grid)
            for i, (m, g) in enumerate(zip(maps, gts, strict=True))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_grid_figures_lie_within_their_stated_bound_of_the_exact_ones(seed):
    maps, gts = smooth_maps(seed=seed, size=64)
    exact = region_figures_of_maps(maps, gts, [m > 1.0 for m in maps])
    binned = region_figures(summaries_of(maps, gts))
    for name, useful in (("pro", 0.005), ("pixel_auroc", 0.005), ("pixel_ap", 0.02)):
        error, bound = abs(getattr(binned, name) - getattr(exact, name)), getattr(binned, f"{name}_error_bound")
        assert error <= bound, name
        assert 0 < bound < useful, name  # a few thousandths on detector-like maps with 300 defect pixels
    assert binned.recall_by_size == exact.recall_by_size  # counted on the masks: no grid error


def test_the_bound_holds_when_classes_interleave_inside_one_bin():
    rng = np.random.default_rng(5)
    gt = rng.random((32, 32)) < 0.3
    score = (1.0 + rng.random((32, 32)) * 1e-4).astype(np.float32)  # every score inside one 0.9 % bin
    score[gt] += 2e-5  # defects a little higher: the exact figures see it, the grid cannot
    exact = region_figures_of_maps([score], [gt], [gt])
    binned = region_figures([summarise_image("x", score, gt, gt)])
    for name in ("pro", "pixel_auroc", "pixel_ap"):
        assert abs(getattr(binned, name) - getattr(exact, name)) <= getattr(binned, f"{name}_error_bound"), name
    assert binned.pixel_auroc == 0.5 and binned.pixel_auroc_error_bound == 0.5


def test_scores_on_grid_thresholds_give_exact_auroc_and_pro():
    maps, gts = smooth_maps(seed=6)
    on_grid = [DEFAULT_GRID.thresholds[np.clip(DEFAULT_GRID.bins(m) - 1, 0, None)] for m in maps]  # float64
    exact = region_figures_of_maps(on_grid, gts, [m > 1.0 for m in on_grid])
    binned = region_figures(summaries_of(on_grid, gts))
    assert binned.pixel_auroc == pytest.approx(exact.pixel_auroc, abs=1e-12)
    assert binned.pro == pytest.approx(exact.pro, abs=1e-12)


# --------------------------------------------------------------------------- summaries: merge, cache, refuse


def test_shards_merge_bit_for_bit_in_any_order_and_through_json():
    maps, gts = smooth_maps(n=10, seed=7)
    summaries = summaries_of(maps, gts)
    whole = region_figures(summaries)
    shard_a, shard_b = summaries[::2], summaries[1::2]
    assert region_figures(shard_b + shard_a) == whole
    cached = [ImageRegionSummary.from_dict(json.loads(json.dumps(s.to_dict()))) for s in summaries]
    assert region_figures(reversed(cached)) == whole
    size = max(len(json.dumps(s.to_dict())) for s in summaries)
    assert size < maps[0].nbytes  # smaller than the float32 map it stands for


def test_summaries_refuse_what_would_give_a_silent_number():
    maps, gts = smooth_maps(n=2)
    broken = maps[1].copy()
    broken[3, 3] = np.nan
    with pytest.raises(MetricInputError, match="img01: the score map holds NaN or Inf"):
        summarise_image("img01", broken, gts[1], gts[1])
    with pytest.raises(MetricInputError, match="img00: predicted_mask must be a bool mask"):
        summarise_image("img00", maps[0], gts[0], maps[0])
    with pytest.raises(MetricInputError, match=r"img00: score_map has shape \(4, 4\)"):
        summarise_image("img00", np.zeros((4, 4)), gts[0], gts[0])
    summaries = summaries_of(maps, gts)
    with pytest.raises(MetricInputError, match="img01: summarised twice"):
        region_figures(summaries + summaries[1:])
    exact_grid = ScoreGrid.of_scores(maps)
    with pytest.raises(MetricInputError, match="img00: summarised on grid symlog.*, not exact:"):
        region_figures(summaries, exact_grid)
    with pytest.raises(MetricInputError, match="region summary of 'x': expected keys"):
        ImageRegionSummary.from_dict({"image_id": "x"})
    bad = summaries[1].to_dict()
    bad["regions"][0]["area"] += 1
    with pytest.raises(MetricInputError, match="region 1: area must equal its counted pixels"):
        ImageRegionSummary.from_dict(bad)


def test_undefined_figures_are_nan():
    good_only = region_figures([summarise_image("a", np.ones((8, 8), np.float32), np.zeros((8, 8), bool),
                                                np.zeros((8, 8), bool))])
    assert math.isnan(good_only.pro) and math.isnan(good_only.pixel_auroc) and math.isnan(good_only.pixel_ap)
    defect_only = region_figures([summarise_image("a", np.ones((8, 8), np.float32), np.ones((8, 8), bool),
                                                  np.ones((8, 8), bool))])
    assert math.isnan(defect_only.pro) and math.isnan(defect_only.pixel_auroc) and defect_only.pixel_ap == 1.0


# --------------------------------------------------------------------------- recall by defect size


def test_recall_by_size_counts_regions_found_by_the_predicted_mask():
    gt = np.zeros((100, 100), bool)
    predicted = np.zeros((100, 100), bool)
    gt[0:2, 0:2] = True  # 4 px, missed
    gt[10:13, 10:13] = True  # 9 px, one pixel found
    predicted[10, 10] = True
    gt[30:40, 30:40] = True  # 100 px, 30 found
    predicted[30:33, 30:40] = True
    gt[60:90, 60:90] = True  # 900 px, all found
    predicted[60:90, 60:90] = True
    summary = summarise_image("a", np.zeros((100, 100), np.float32), gt, predicted)
    rows = region_figures([summary], size_edges=(8, 64, 256)).recall_by_size
    assert [(r.min_area, r.max_area, r.n_regions, r.n_found) for r in rows] == [
        (1, 8, 1, 0), (8, 64, 1, 1), (64, 256, 1, 1), (256, None, 1, 1)]
    assert (rows[0].recall, rows[0].recall_ci_low, rows[0].recall_ci_high) == (0.0, *clopper_pearson(0, 1))
    strict = region_figures([summary], size_edges=(8, 64, 256), min_overlap=0.5).recall_by_size
    assert [r.n_found for r in strict] == [0, 0, 0, 1]  # 1/9 and 30/100 are below half
    assert math.isnan(region_figures([summary], size_edges=(2, 3)).recall_by_size[1].recall)  # no region of 2 px


def detector_maps(n=20, size=256, seed=1):
    """The maps the module docstring's figures were measured on: three defects of up to 30 x 30 px on
    every other image, a smooth noise floor."""
    return defect_maps(n, size, seed, defects=3, corner_margins=(10, 16), sides=(2, 30), noise_blur=3, defect_blur=2)


def test_fixed_grid_errors_are_far_below_the_bound_as_the_module_states():
    maps, gts = detector_maps()
    exact = region_figures_of_maps(maps, gts, [m > 1.0 for m in maps])
    summaries = summaries_of(maps, gts)
    binned = region_figures(summaries)
    for name, error, bound in (("pro", 1e-4, 1e-3), ("pixel_auroc", 1e-5, 1e-4), ("pixel_ap", 2e-4, 1e-2)):
        assert abs(getattr(binned, name) - getattr(exact, name)) < error, name
        assert getattr(binned, f"{name}_error_bound") < bound, name
    assert np.mean([len(json.dumps(s.to_dict())) for s in summaries]) < 8_000  # vs 262,144 bytes of map
