"""A per-pixel Gaussian of defect-free parts: the classical model for aligned, repeatable parts.

`fit` learns each pixel's mean and spread from the good training images; `predict` marks the
pixels that lie more than `z_threshold` spreads from their mean, drops blobs smaller than
`min_area`, and scores an image by its largest deviation. No weights, no GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fmtest.data import OK, Sample, SampleSet
from fmtest.data.io import to_gray
from fmtest.errors import DataError
from fmtest.pipelines import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.options import require_in_range


@dataclass(frozen=True)
class PixelGaussianOptions:
    """`[pipelines.pixel_gaussian]`."""

    z_threshold: float = 4.0  # a pixel this many spreads from its mean is defective
    min_area: int = 4  # pixels; smaller blobs are noise
    min_std: float = 0.02  # floor on each pixel's spread, so a flat region does not flag tiny changes


class PixelGaussian(Pipeline):
    name = "pixel_gaussian"
    task = "segmentation"
    options_type = PixelGaussianOptions

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options: PixelGaussianOptions = self.read_options(context.options)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    @classmethod
    def check_options(cls, options: PixelGaussianOptions) -> None:
        checks = {"z_threshold": options.z_threshold > 0, "min_area": options.min_area >= 0,
                  "min_std": options.min_std > 0}
        require_in_range(cls.name, options, checks, "z_threshold > 0, min_area >= 0, min_std > 0")

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        good = [to_gray(s.image) for s in train.filter(lambda ref: ref.label == OK)]
        if len(good) < 2:
            raise DataError(f"{self.name} needs at least 2 defect-free training images, got {len(good)}")
        if len({g.shape for g in good}) > 1:
            raise DataError(f"{self.name}: the training images differ in size; the model needs aligned parts")
        stack = np.stack(good)
        self.mean = stack.mean(axis=0)
        self.std = np.maximum(stack.std(axis=0), self.options.min_std)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        if self.mean is None:
            raise RuntimeError(f"{self.name}: predict() called before fit()")
        return [self._predict_one(s) for s in samples]

    def _predict_one(self, sample: Sample) -> Prediction:
        gray = to_gray(sample.image)
        if gray.shape != self.mean.shape:
            raise DataError(f"image is {gray.shape[1]}x{gray.shape[0]}, the training images "
                            f"{self.mean.shape[1]}x{self.mean.shape[0]}", sample.source or sample.id)
        z = np.abs(gray - self.mean) / self.std
        mask = z > self.options.z_threshold
        blobs, n = ndimage.label(mask)
        if n:
            areas = np.bincount(blobs.ravel())
            mask = (areas >= self.options.min_area)[blobs] & mask
        return Prediction.from_mask(mask, score=float(z.max()))
