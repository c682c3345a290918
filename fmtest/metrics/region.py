"""Pixel- and region-level figures the anomaly-detection field reports beside IoU and F2: AU-PRO, pixel
AUROC, pixel AP, and the recall of defect regions by their size.

They are shown, never gated by default: the second study warns that threshold-free figures such as
AUROC mislead as a gate, so they sit beside the factory figures as `auroc_threshold_free_not_a_factory_figure`
does in the risk section.

Definitions:
- Regions are the 8-connected components of an image's ground-truth mask (as in MVTec AD's evaluation
  code and anomalib); pixels marked `ignore` belong to nothing. Good pixels are all other pixels, of
  every image (defect-free images included).
- PRO(t) is the mean over all regions of all images of the share of the region's pixels scoring >= t;
  FPR(t) the share of good pixels scoring >= t. AU-PRO integrates PRO over FPR from 0 to `fpr_limit`
  (default 0.3) with the trapezoidal rule, the curve running from (0, 0) to (1, 1) through every
  threshold and interpolated linearly at the limit, and divides by the limit (MVTec AD; anomalib's AUPRO).
- Pixel AUROC counts ties as one half (Mann-Whitney); pixel AP is sklearn's average precision
  (sum over thresholds of recall increase times precision), defect pixels positive.
- Recall by defect size: a region counts as found when the pipeline's predicted mask covers at least
  `min_overlap` of it (default: any pixel), binned by the region's area in pixels.

A run keeps no score maps, so every figure comes from per-image summaries (`summarise_image`):
the pixel scores of each region and of the good pixels, counted on a fixed grid of thresholds
(`ScoreGrid.fixed()`, symmetric-logarithmic, 256 thresholds per decade from 1e-6 to 1e6 of either
sign and 0), plus each region's area and the pixels the predicted mask covers. Summaries are small
(their size grows with the number of grid bins an image's scores fall into, not its pixels),
serialisable (`to_dict`/`from_dict`), and merge by concatenation: the figures of a set of summaries
do not depend on their order or on how they were split into shards (they are summed in image-id order).

Error bound: counted on the grid, every figure is exact at the grid's thresholds; between two
thresholds the scores' order is unknown, and the figures take a bin's good and defect pixels as evenly
interleaved (ties count one half in AUROC, straight segments in PRO, and in AP the j-th of a bin's p
defect pixels comes with j/p of its good pixels). Each figure comes with a bound on its distance to
the exact value computed from every pixel's score, derived from the counts alone:
- AUROC: pairs of a good and a defect pixel in the same bin count one half; the exact value counts
  each such pair 0 or 1, so |error| <= sum_b good_b * defect_b / (2 * good * defect).
- AU-PRO: PRO and FPR are monotone in the threshold, so between two grid thresholds the exact curve
  lies in the box the two grid points span, and the grid's straight segment is at most half the box
  area from it (at most the box part below the limit for the segment the limit cuts); the bound is the
  sum over bins, divided by the limit. Bins holding only good or only defect pixels add nothing.
- AP: the j-th defect pixel of a bin is counted at a precision between that with all the bin's good
  pixels above it and that with none of them and all the bin's defect pixels (ties may carry it to the
  bin's end); the bound is the mean of those ranges over all defect pixels.
Scores beyond +-1e6 or within +-1e-6 of 0 share the end bins; the bounds cover that too. Measured on
20 smooth 256 x 256 maps (tests/metrics/test_region_metrics.py): errors 1e-6 (AUROC), 1e-5 (AU-PRO) and 9e-5
(AP), bounds 6e-5, 3e-4 and 6e-3, and 7 KB of JSON per image against 256 KB for its float32 score map.
Recall by size uses the predicted masks' exact pixel counts: it has no grid error. A grid built from
the data's own scores (`ScoreGrid.of_scores`, one bin per distinct score; `region_figures_of_maps`)
makes every figure exact, bound 0; it is for a set of maps held in memory, not for merging.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fmtest.metrics.functional import MetricInputError, clopper_pearson
from fmtest.metrics.specs import DEFAULT_FPR_LIMIT

DEFAULT_SIZE_EDGES = (16, 64, 256, 1024, 4096)  # region areas in pixels: bins [1, 16), [16, 64), ..., [4096, inf)
GRID_DECADES = (-6, 6)  # magnitudes 1e-6 .. 1e6 on the fixed grid
GRID_STEPS_PER_DECADE = 256  # thresholds 0.9 % apart
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


@dataclass(frozen=True, eq=False)
class ScoreGrid:
    """Thresholds pixel scores are counted against: bin 0 holds scores below the first threshold, bin k
    scores in [threshold k-1, threshold k), the last bin scores at or above the last threshold.

    `exact` grids hold one distinct score per bin (built from the data), so figures on them are exact.
    `name` identifies the grid in a summary: summaries merge only on the same grid.
    """

    thresholds: np.ndarray
    name: str
    exact: bool = False

    @classmethod
    def fixed(cls) -> ScoreGrid:
        """The grid summaries are cached and merged on: 0 and +-10^(k/256) for 1e-6 <= 10^(k/256) <= 1e6."""
        low, high = GRID_DECADES
        steps = np.arange(low * GRID_STEPS_PER_DECADE, high * GRID_STEPS_PER_DECADE + 1)
        magnitudes = 10.0 ** (steps / GRID_STEPS_PER_DECADE)
        thresholds = np.concatenate([-magnitudes[::-1], [0.0], magnitudes])
        return cls(thresholds, f"symlog:1e{low}..1e{high}:{GRID_STEPS_PER_DECADE}/decade")

    @classmethod
    def of_scores(cls, score_maps: Iterable[np.ndarray]) -> ScoreGrid:
        """One threshold per distinct score of the maps: every figure on it is exact (bound 0)."""
        thresholds = np.unique(np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in score_maps]))
        if not np.isfinite(thresholds).all():
            raise MetricInputError("score maps hold NaN or Inf")
        digest = hashlib.sha256(thresholds.tobytes()).hexdigest()[:16]
        return cls(thresholds, f"exact:{digest}", exact=True)

    @property
    def n_bins(self) -> int:
        return self.thresholds.size + 1

    def bins(self, scores: np.ndarray) -> np.ndarray:
        """The bin of every score: how many thresholds are at or below it."""
        return np.searchsorted(self.thresholds, np.asarray(scores, dtype=np.float64), side="right").astype(np.int32)


@dataclass(frozen=True, eq=False)
class BinCounts:
    """How many pixels fall in each occupied bin of a grid: `bins` ascending, `counts` > 0."""

    bins: np.ndarray  # int32
    counts: np.ndarray  # int64

    @classmethod
    def of(cls, bins: np.ndarray) -> BinCounts:
        values, counts = np.unique(bins, return_counts=True)
        return cls(values.astype(np.int32), counts.astype(np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def to_lists(self) -> list[list[int]]:
        """[bin steps, counts]: the first bin, then the step to each next one (small numbers, short JSON)."""
        return [np.diff(self.bins, prepend=0).tolist(), self.counts.tolist()]

    def to_text(self) -> str:
        """`to_lists` as one short string, "steps|counts" with the numbers space-separated: how a results file
        writes it, one line however the file is indented."""
        steps, counts = self.to_lists()
        return f"{' '.join(map(str, steps))}|{' '.join(map(str, counts))}"

    @classmethod
    def from_lists(cls, value: object, where: str) -> BinCounts:
        """The counts `to_lists` (or `to_text`) wrote; anything malformed is a MetricInputError naming `where`."""
        if isinstance(value, str):  # to_text's form
            parts = value.split("|")
            try:
                value = [[int(x) for x in part.split()] for part in parts]
            except ValueError:
                raise MetricInputError(f"{where}: expected 'bin steps|counts', whole numbers") from None
        if not (isinstance(value, list | tuple) and len(value) == 2
                and all(isinstance(v, list | tuple) and all(isinstance(x, int) for x in v) for v in value)):
            raise MetricInputError(f"{where}: expected [bin steps, counts], two lists of integers")
        steps, counts = (np.asarray(v, dtype=np.int64) for v in value)
        if steps.shape != counts.shape or (counts <= 0).any() or (steps[1:] <= 0).any() or (steps[:1] < 0).any():
            raise MetricInputError(f"{where}: bins must ascend and every count be positive, one count per bin")
        return cls(np.cumsum(steps).astype(np.int32), counts)


@dataclass(frozen=True, eq=False)
class RegionSummary:
    """One defect region: its area, how many of its pixels the predicted mask covers, its pixels' scores."""

    area: int
    covered: int
    scores: BinCounts


@dataclass(frozen=True, eq=False)
class ImageRegionSummary:
    """What the region figures need of one image, without its score map (see the module docstring)."""

    image_id: str
    grid: str  # ScoreGrid.name
    good: BinCounts  # scores of the pixels outside every region (ignored pixels left out)
    regions: tuple[RegionSummary, ...]

    def to_dict(self) -> dict:
        """Plain JSON-able form, for the prediction cache and shard results."""
        return {"image_id": self.image_id, "grid": self.grid, "good": self.good.to_lists(),
                "regions": [{"area": r.area, "covered": r.covered, "scores": r.scores.to_lists()}
                            for r in self.regions]}

    def as_summary(self) -> dict:
        """How a results file writes it (`fmtest.verdict.results.to_plain`): `to_dict` with each count list as
        one string (`BinCounts.to_text`), so an indented results file keeps it on a few lines."""
        return {"image_id": self.image_id, "grid": self.grid, "good": self.good.to_text(),
                "regions": [{"area": r.area, "covered": r.covered, "scores": r.scores.to_text()}
                            for r in self.regions]}

    @classmethod
    def from_summary(cls, data: dict) -> ImageRegionSummary:
        """How a results file reads it back (`fmtest.verdict.results.from_plain`): `from_dict` reads both forms."""
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> ImageRegionSummary:
        """The summary `to_dict` wrote; anything malformed is a MetricInputError naming the image."""
        where = f"region summary of {data.get('image_id', '?')!r}" if isinstance(data, dict) else "region summary"
        if not isinstance(data, dict) or not {"image_id", "grid", "good", "regions"} <= set(data):
            raise MetricInputError(f"{where}: expected keys image_id, grid, good, regions")
        if not isinstance(data["regions"], list) or not all(isinstance(r, dict) for r in data["regions"]):
            raise MetricInputError(f"{where}: regions must be a list of {{area, covered, scores}}")
        regions = []
        for i, region in enumerate(data["regions"]):
            scores = BinCounts.from_lists(region.get("scores"), f"{where}, region {i + 1}")
            area, covered = region.get("area"), region.get("covered")
            if not (isinstance(area, int) and isinstance(covered, int) and 0 <= covered <= area == scores.total):
                raise MetricInputError(f"{where}, region {i + 1}: area must equal its counted pixels and covered "
                                       "lie between 0 and the area")
            regions.append(RegionSummary(area, covered, scores))
        return cls(str(data["image_id"]), str(data["grid"]), BinCounts.from_lists(data["good"], where),
                   tuple(regions))


def summarise_image(image_id: str, score_map: np.ndarray, gt_mask: np.ndarray, predicted_mask: np.ndarray,
                    ignore: np.ndarray | None = None, grid: ScoreGrid | None = None) -> ImageRegionSummary:
    """One image's summary: its defect regions (8-connected components of `gt_mask` outside `ignore`)
    with their areas, the pixels `predicted_mask` covers, and their pixels' scores on `grid` (default the
    fixed grid); the scores of its good pixels. A score map holding NaN or Inf is refused, naming the image."""
    grid = grid or DEFAULT_GRID
    scores = np.asarray(score_map)
    gt, predicted = _bool_mask(gt_mask, "gt_mask", image_id), _bool_mask(predicted_mask, "predicted_mask", image_id)
    keep = np.ones(gt.shape, bool) if ignore is None else ~_bool_mask(ignore, "ignore", image_id)
    for name, array in (("score_map", scores), ("predicted_mask", predicted), ("ignore", keep)):
        if array.shape != gt.shape:
            raise MetricInputError(f"{image_id}: {name} has shape {array.shape} but gt_mask has shape {gt.shape}")
    if not np.isfinite(scores).all():
        raise MetricInputError(f"{image_id}: the score map holds NaN or Inf, which no threshold can order")
    from scipy import (
        ndimage,  # here, not at import: results and reports read summaries without labelling
    )

    labels, n_regions = ndimage.label(gt & keep, structure=_EIGHT_CONNECTED)
    bins = grid.bins(scores)
    good = BinCounts.of(bins[(labels == 0) & keep])
    inside = labels > 0
    region_of, bin_of = labels[inside].astype(np.int64), bins[inside].astype(np.int64)
    keys, counts = np.unique(region_of * grid.n_bins + bin_of, return_counts=True)
    region_keys = keys // grid.n_bins
    areas = np.bincount(region_of, minlength=n_regions + 1)
    covered = np.bincount(labels[inside & predicted], minlength=n_regions + 1)
    starts = np.searchsorted(region_keys, np.arange(1, n_regions + 2))
    regions = tuple(
        RegionSummary(int(areas[r]), int(covered[r]),
                      BinCounts((keys[starts[r - 1]:starts[r]] % grid.n_bins).astype(np.int32),
                                counts[starts[r - 1]:starts[r]].astype(np.int64)))
        for r in range(1, n_regions + 1))
    return ImageRegionSummary(image_id, grid.name, good, regions)


def _bool_mask(array: np.ndarray, name: str, image_id: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != bool:
        raise MetricInputError(f"{image_id}: {name} must be a bool mask, got dtype {array.dtype}")
    return array


@dataclass(frozen=True)
class SizeRecall:
    """Defect regions of one size bin ([min_area, max_area) pixels; max_area None: no upper end) and how
    many the predicted masks found, with the exact 95 % interval of that share."""

    min_area: int
    max_area: int | None
    n_regions: int
    n_found: int
    recall: float
    recall_ci_low: float
    recall_ci_high: float


@dataclass(frozen=True)
class RegionFigures:
    """The region-level figures of a set of images, each threshold-free one with its grid error bound."""

    pro: float  # AU-PRO up to fpr_limit, normalised by it
    pro_error_bound: float
    fpr_limit: float
    pixel_auroc: float
    pixel_auroc_error_bound: float
    pixel_ap: float
    pixel_ap_error_bound: float
    n_regions: int
    n_defect_pixels: int
    n_good_pixels: int
    recall_by_size: tuple[SizeRecall, ...]


def region_figures(summaries: Iterable[ImageRegionSummary], grid: ScoreGrid | None = None, *,
                   fpr_limit: float = DEFAULT_FPR_LIMIT, size_edges: Sequence[int] = DEFAULT_SIZE_EDGES,
                   min_overlap: float = 0.0) -> RegionFigures:
    """The figures of all images summarised on `grid` (default the fixed grid), pooled; nan where undefined
    (no defect region, or no good pixel). Summaries of one image twice, or of another grid, are refused."""
    grid = grid or DEFAULT_GRID
    if not 0.0 < fpr_limit <= 1.0:
        raise MetricInputError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
    if not 0.0 <= min_overlap <= 1.0:
        raise MetricInputError(f"min_overlap must lie in [0, 1], got {min_overlap}")
    if list(size_edges) != sorted(set(size_edges)) or any(e < 2 for e in size_edges):
        raise MetricInputError(f"size_edges must be increasing areas above 1 pixel, got {list(size_edges)}")
    ordered = sorted(summaries, key=lambda s: s.image_id)  # summed in one order: shards merge bit-identically
    good = np.zeros(grid.n_bins, np.int64)
    defect = np.zeros(grid.n_bins, np.int64)
    overlap = np.zeros(grid.n_bins, np.float64)  # sum over regions of the share of the region's pixels per bin
    areas, covered = [], []
    for i, summary in enumerate(ordered):
        if summary.grid != grid.name:
            raise MetricInputError(f"{summary.image_id}: summarised on grid {summary.grid}, not {grid.name}")
        if i and summary.image_id == ordered[i - 1].image_id:
            raise MetricInputError(f"{summary.image_id}: summarised twice (a shard given twice?)")
        _add(good, summary.good, grid)
        for region in summary.regions:
            _add(defect, region.scores, grid)
            np.add.at(overlap, region.scores.bins, region.scores.counts / region.area)
            areas.append(region.area)
            covered.append(region.covered)
    pro, pro_bound = _au_pro(good, overlap, len(areas), fpr_limit)
    auroc, auroc_bound = _pixel_auroc(good, defect)
    ap, ap_bound = _pixel_ap(good, defect, grid.exact)
    if grid.exact:  # one distinct score per bin: the counts order every pixel
        pro_bound, auroc_bound, ap_bound = (bound * 0.0 for bound in (pro_bound, auroc_bound, ap_bound))
    return RegionFigures(pro=pro, pro_error_bound=pro_bound, fpr_limit=fpr_limit, pixel_auroc=auroc,
                         pixel_auroc_error_bound=auroc_bound, pixel_ap=ap, pixel_ap_error_bound=ap_bound,
                         n_regions=len(areas), n_defect_pixels=int(defect.sum()), n_good_pixels=int(good.sum()),
                         recall_by_size=recall_by_size(areas, covered, size_edges, min_overlap))


def region_figures_of_maps(score_maps: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
                           predicted_masks: Sequence[np.ndarray], ignores: Sequence[np.ndarray | None] | None = None,
                           *, fpr_limit: float = DEFAULT_FPR_LIMIT, size_edges: Sequence[int] = DEFAULT_SIZE_EDGES,
                           min_overlap: float = 0.0) -> RegionFigures:
    """The exact figures of maps held in memory: summarised on a grid of their own distinct scores (bound 0)."""
    if not score_maps:
        raise MetricInputError("no score maps")
    if not len(score_maps) == len(gt_masks) == len(predicted_masks):
        raise MetricInputError(f"{len(score_maps)} score maps, {len(gt_masks)} ground-truth masks and "
                               f"{len(predicted_masks)} predicted masks")
    grid = ScoreGrid.of_scores(score_maps)
    ignores = ignores if ignores is not None else [None] * len(score_maps)
    summaries = [summarise_image(f"{i:09d}", s, g, p, m, grid)
                 for i, (s, g, p, m) in enumerate(zip(score_maps, gt_masks, predicted_masks, ignores, strict=True))]
    return region_figures(summaries, grid, fpr_limit=fpr_limit, size_edges=size_edges, min_overlap=min_overlap)


def _add(total: np.ndarray, counts: BinCounts, grid: ScoreGrid) -> None:
    if counts.bins.size and counts.bins[-1] >= grid.n_bins:
        raise MetricInputError(f"bin {counts.bins[-1]} is beyond grid {grid.name} ({grid.n_bins} bins)")
    total[counts.bins] += counts.counts


def _at_or_above(counts: np.ndarray) -> np.ndarray:
    """For every bin b, the sum over bins >= b, and a final 0 (the threshold above every score)."""
    return np.concatenate([np.cumsum(counts[::-1])[::-1], [0]])


def _au_pro(good: np.ndarray, overlap: np.ndarray, n_regions: int, fpr_limit: float) -> tuple[float, float]:
    n_good = int(good.sum())
    if n_regions == 0 or n_good == 0:
        return math.nan, math.nan
    fpr = (_at_or_above(good) / n_good)[::-1]  # from the threshold above every score down to below every score
    pro = (_at_or_above(overlap) / n_regions)[::-1]
    fpr[-1], pro[-1] = 1.0, 1.0  # every pixel counted: exactly (1, 1), whatever the float sums gave
    x0, x1, y0, y1 = fpr[:-1], fpr[1:], pro[:-1], pro[1:]
    full = x1 <= fpr_limit
    area = float(np.sum((x1 - x0)[full] * (y0 + y1)[full])) / 2
    bound = float(np.sum((x1 - x0)[full] * (y1 - y0)[full])) / 2
    for i in np.flatnonzero((x0 < fpr_limit) & (x1 > fpr_limit)):  # the segment the limit cuts: interpolated
        y_limit = y0[i] + (y1[i] - y0[i]) * (fpr_limit - x0[i]) / (x1[i] - x0[i])
        area += (fpr_limit - x0[i]) * (y0[i] + y_limit) / 2
        bound += (fpr_limit - x0[i]) * (y1[i] - y0[i])
    return float(area / fpr_limit), float(bound / fpr_limit)


def _pixel_auroc(good: np.ndarray, defect: np.ndarray) -> tuple[float, float]:
    n_good, n_defect = float(good.sum()), float(defect.sum())
    if n_good == 0 or n_defect == 0:
        return math.nan, math.nan
    defect_above = _at_or_above(defect)[1:]  # defect pixels in bins strictly above each bin
    good_f, defect_f = good.astype(np.float64), defect.astype(np.float64)
    pairs = float(np.dot(good_f, defect_above)) + 0.5 * float(np.dot(good_f, defect_f))
    ties = 0.5 * float(np.dot(good_f, defect_f))
    return pairs / (n_good * n_defect), ties / (n_good * n_defect)


def _pixel_ap(good: np.ndarray, defect: np.ndarray, exact: bool) -> tuple[float, float]:
    """Average precision over the bins from the highest. On an `exact` grid a bin's pixels are tied and
    counted together, as sklearn does. Otherwise the j-th of a bin's p defect pixels is taken to come with
    j/p of its n good pixels (evenly interleaved, as the trapezoids of AUROC and PRO assume); its exact
    precision lies between that with all n good pixels and that with none of them and all p defect pixels
    (ties may carry it to the bin's end), which bounds the error."""
    n_defect = int(defect.sum())
    if n_defect == 0:
        return math.nan, math.nan
    tp, fp = _at_or_above(defect), _at_or_above(good)  # counted at each bin's lower threshold
    hit = np.flatnonzero(defect)
    tp_above, fp_above = tp[hit + 1].astype(np.float64), fp[hit + 1].astype(np.float64)
    p, n = defect[hit].astype(np.float64), good[hit].astype(np.float64)
    if exact:
        return float(np.sum(p * (tp_above + p) / (tp_above + p + fp_above + n))) / n_defect, 0.0
    bin_of = np.repeat(np.arange(hit.size), defect[hit])
    j = np.arange(1, n_defect + 1) - np.repeat(np.cumsum(p) - p, defect[hit])  # 1..p within each bin
    tp_j, fp_j, n_j = tp_above[bin_of] + j, fp_above[bin_of], n[bin_of]
    estimate = tp_j / (tp_j + fp_j + n_j * j / p[bin_of])
    highest = ((tp_above + p) / (tp_above + p + fp_above))[bin_of]
    lowest = tp_j / (tp_j + fp_j + n_j)
    return float(np.sum(estimate)) / n_defect, float(np.sum(highest - lowest)) / n_defect


def recall_by_size(areas: Sequence[int], covered: Sequence[int], size_edges: Sequence[int] = DEFAULT_SIZE_EDGES,
                   min_overlap: float = 0.0) -> tuple[SizeRecall, ...]:
    """Found defect regions per area bin: found when the predicted mask covers at least `min_overlap` of the
    region and at least one pixel of it. Every bin is listed, also an empty one (recall nan)."""
    areas, covered = np.asarray(areas, dtype=np.int64), np.asarray(covered, dtype=np.int64)
    found = (covered > 0) & (covered >= min_overlap * areas)
    lows, highs = [1, *size_edges], [*size_edges, None]
    rows = []
    for low, high in zip(lows, highs, strict=True):
        member = (areas >= low) & (areas < high if high is not None else True)
        n, k = int(member.sum()), int((found & member).sum())
        ci = clopper_pearson(k, n) if n else (math.nan, math.nan)
        rows.append(SizeRecall(low, high, n, k, k / n if n else math.nan, *ci))
    return tuple(rows)


DEFAULT_GRID = ScoreGrid.fixed()

__all__ = ["DEFAULT_FPR_LIMIT", "DEFAULT_GRID", "DEFAULT_SIZE_EDGES", "BinCounts", "ImageRegionSummary",
           "RegionFigures", "RegionSummary", "ScoreGrid", "SizeRecall", "recall_by_size", "region_figures",
           "region_figures_of_maps", "summarise_image"]
