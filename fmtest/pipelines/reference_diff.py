"""Reference-difference baseline: align to the defect-free reference, subtract, threshold.

The study found this not enough on SAT images (recording variation and mechanical tolerances
exceed the defects); fmtest keeps it as the floor every foundation model should beat.

Per image: rigid alignment to the reference (`fmtest.imaging.align`), both reduced to greyscale, robust
intensity normalisation (median and interquartile range on the shared area, so a brightness or
contrast drift is no difference), absolute difference, Gaussian smoothing, threshold, removal of
blobs smaller than `min_area`, and the mask warped back onto the image.

`fit` sets the threshold from the GOOD TRAINING images only: the `threshold_quantile` quantile of
their smoothed difference values; with `min_area = 0` the minimum blob area is learned as one more
than the largest blob any training image leaves above that threshold. An image that cannot be
aligned (quality or overlap too low, or anything non-finite) has no trustworthy difference map: its
answer is a failed prediction naming the reason, counted as unusable by the gate, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from fmtest.data.io import to_gray
from fmtest.data.sample import OK, Sample, SampleSet
from fmtest.errors import DataError, Unavailable
from fmtest.imaging.align import (
    Alignment,
    estimate_alignment,
    overlap_mask,
    warp_from_reference,
    warp_to_reference,
)
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.options import require_in_range


@dataclass(frozen=True)
class ReferenceDiffOptions:
    """`[pipelines.reference_diff]`."""

    threshold_quantile: float = 0.999  # of the good training images' smoothed difference values
    min_area: int = 0  # pixels (reference frame); 0 = learn from the good training images
    blur_sigma: float = 2.0  # Gaussian smoothing of the difference, pixels
    min_quality: float = 0.5  # alignment NCC below this: the image cannot be judged (a failed prediction)
    allow_scale: bool = False  # also estimate a scale (different magnification than the reference)

    def __post_init__(self) -> None:
        checks = {"threshold_quantile": 0.0 < self.threshold_quantile <= 1.0, "min_area": self.min_area >= 0,
                  "blur_sigma": self.blur_sigma >= 0.0, "min_quality": 0.0 <= self.min_quality <= 1.0}
        require_in_range("reference_diff", self, checks, "threshold_quantile in (0, 1], min_area >= 0, "
                                                         "blur_sigma >= 0, min_quality in [0, 1]")


@dataclass(frozen=True)
class _Difference:
    """One image compared with the reference, in the reference frame."""

    smoothed: np.ndarray  # float32, 0 outside `valid`
    valid: np.ndarray  # bool: pixels the aligned image covers
    alignment: Alignment


class ReferenceDiff(Pipeline):
    name = "reference_diff"
    task = "segmentation"
    batch_size = 16
    options_type = ReferenceDiffOptions

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options = self.read_options(context.options)
        self._reference: np.ndarray | None = None
        self.threshold: float | None = None
        self.min_area: int | None = None
        self.n_train_misaligned = 0  # of the last fit: training images that did not align

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        """Keep the reference; set threshold and minimum blob area from the good training images."""
        if reference is None:
            raise Unavailable("reference_diff needs a defect-free reference image and this dataset has none",
                              self.context.dataset)
        self._reference = to_gray(reference.image)
        good = train.filter(lambda ref: ref.label == OK)
        differences = []
        self.n_train_misaligned = 0
        for batch in tqdm(good.batches(self.batch_size), total=-(-len(good) // self.batch_size),
                          desc="reference_diff: fit", leave=False, disable=not self.context.progress):
            for sample in batch:
                if sample.sha256 == reference.sha256:
                    continue  # the reference itself differs by nothing and would lower the threshold
                difference = self._difference(sample)
                if difference.alignment.ok and np.isfinite(difference.smoothed).all():
                    differences.append(difference)
                else:
                    self.n_train_misaligned += 1
        if not differences:
            raise DataError(f"reference_diff needs defect-free training images other than the reference that "
                            f"align to it; {len(good)} found, {self.n_train_misaligned} failed to align",
                            self.context.dataset)
        values = np.concatenate([d.smoothed[d.valid] for d in differences])
        self.threshold = max(float(np.quantile(values, self.options.threshold_quantile)), 1e-6)
        self.min_area = self.options.min_area or 1 + max(_largest_blob(d.smoothed > self.threshold)
                                                         for d in differences)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        if self.threshold is None:
            raise RuntimeError("ReferenceDiff.predict called before fit")
        return [self._predict_one(sample) for sample in samples]

    def _predict_one(self, sample: Sample) -> Prediction:
        difference = self._difference(sample)
        a = difference.alignment
        if not a.ok:
            return Prediction.failed(f"cannot be aligned to the reference ({a.failure}): no difference map to judge")
        peak = float(difference.smoothed.max())
        if not np.isfinite(peak):
            return Prediction.failed("the difference map is not finite (NaN or Inf)")
        found = _drop_small_blobs((difference.smoothed > self.threshold) & difference.valid, self.min_area)
        mask = warp_from_reference(found, a, sample.image.shape)
        reasoning = (f"aligned (shift {a.dx:.1f}, {a.dy:.1f} px, rotation {a.angle_deg:.2f} deg, "
                     f"quality {a.quality:.2f}); peak difference {peak / self.threshold:.2f} x threshold")
        score_map = warp_from_reference(difference.smoothed / self.threshold, a, sample.image.shape)
        return Prediction.from_mask(mask, score=peak / self.threshold, reasoning=reasoning, score_map=score_map)

    def _difference(self, sample: Sample) -> _Difference:
        reference = self._reference
        try:
            gray = to_gray(sample.image)
        except ValueError:
            raise DataError(f"expected an HxW or HxWx3 image, got shape {sample.image.shape}",
                            sample.source or sample.id) from None
        alignment = estimate_alignment(gray, reference, allow_scale=self.options.allow_scale,
                                       min_quality=self.options.min_quality)
        warped = warp_to_reference(gray, alignment, reference.shape)
        valid = overlap_mask(alignment, gray.shape, reference.shape)
        if not alignment.ok or not valid.any():
            return _Difference(np.zeros(reference.shape, np.float32), valid,
                               alignment if not alignment.ok else replace(alignment, ok=False,
                                                                          failure="no pixel overlaps the reference"))
        diff = np.abs(_robust_normalise(warped, valid) - _robust_normalise(reference, valid))
        smoothed = ndimage.gaussian_filter(diff * valid, self.options.blur_sigma) if self.options.blur_sigma else diff
        return _Difference((smoothed * valid).astype(np.float32), valid, alignment)


def _robust_normalise(gray: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(x - median) / IQR over the valid pixels: a brightness or contrast drift is not a defect."""
    q25, q50, q75 = np.quantile(gray[valid], [0.25, 0.5, 0.75])
    spread = q75 - q25
    return (gray - q50) / (spread if spread > 1e-6 else 1.0)


def _largest_blob(mask: np.ndarray) -> int:
    labels, n = ndimage.label(mask)
    return int(np.bincount(labels.ravel())[1:].max()) if n else 0


def _drop_small_blobs(mask: np.ndarray, min_area: int) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if not n:
        return mask
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    return keep[labels]
