"""Thresholds of an anomaly-map pipeline, set on defect-free images it did not learn from.

An anomaly detector scores every image (`score`) and every pixel (its anomaly map); fmtest needs an
OK/NOK answer and a mask. Both come from two quantiles over good images that were held out of the
fit (`split_good`): scoring images the model learned from would give optimistic, too-low thresholds.

- `image`: quantile `image_quantile` of the held-out images' scores; an image is NOK above it;
- `pixel`: quantile `pixel_quantile` of all their map values; a flagged image's mask is the map
  above it. An image that is not flagged has an empty mask: the part passes.

The label is the image decision, so a flagged image whose map stays below the pixel threshold is NOK
with an empty mask (its IoU is 0), as the detector itself would report it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmtest.data.sample import NOK, OK, SampleSet
from fmtest.errors import DataError
from fmtest.pipelines.base import Prediction


@dataclass(frozen=True)
class Thresholds:
    """Where a score means NOK (`image`) and where a flagged image's defect extends (`pixel`).

    `floor` is where the viewer's score map starts: 0, or the lowest calibration map value when maps go
    negative, so the map is 0 there and 1.0 at the pixel threshold."""

    image: float
    pixel: float
    floor: float = 0.0

    @classmethod
    def from_good(cls, scores: Sequence[float], maps: Sequence[np.ndarray], image_quantile: float,
                  pixel_quantile: float, source: str) -> Thresholds:
        """Quantiles of the scores and of all map values of held-out good images (`source` names them in errors).

        A non-finite score or map value is refused: a NaN quantile would pass every part."""
        values = np.concatenate([np.ravel(m) for m in maps])
        if not (np.isfinite(scores).all() and np.isfinite(values).all()):
            raise DataError("non-finite anomaly scores on the good training images: no threshold can be set", source)
        return cls(image=float(np.quantile(np.asarray(scores, dtype=np.float64), image_quantile)),
                   pixel=float(np.quantile(values, pixel_quantile)), floor=min(0.0, float(values.min())))

    def predict(self, score: float, anomaly_map: np.ndarray) -> Prediction:
        """The answer for one image, with the map in units of the pixel threshold for the viewer."""
        if not math.isfinite(score) or not np.isfinite(anomaly_map).all():
            return Prediction.failed(f"non-finite anomaly score (score {score}, "
                                     f"{int((~np.isfinite(anomaly_map)).sum())} non-finite map values)")
        flagged = score > self.image
        mask = anomaly_map > self.pixel if flagged else np.zeros(anomaly_map.shape, bool)
        score_map = (anomaly_map - self.floor) / max(self.pixel - self.floor, 1e-12)
        return Prediction(label=NOK if flagged else OK, score=float(score), mask=mask,
                          score_map=score_map.astype(np.float32))


def split_good(train: SampleSet, fraction: float, seed: int, pipeline: str,
               dataset: str) -> tuple[SampleSet, SampleSet]:
    """(fit part, calibration part) of the good training images: a seeded split, calibration at least one."""
    good = train.filter(lambda ref: ref.label == OK)
    if len(good) < 2:
        raise DataError(f"{pipeline} needs at least 2 defect-free training images (one to fit, one to "
                        f"calibrate), found {len(good)}", dataset)
    order = np.random.default_rng(seed).permutation(len(good))
    n_cal = min(len(good) - 1, max(1, round(fraction * len(good))))
    refs = good.refs
    return (SampleSet([refs[i] for i in sorted(order[n_cal:])]),
            SampleSet([refs[i] for i in sorted(order[:n_cal])]))

