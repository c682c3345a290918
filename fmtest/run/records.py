"""A case's per-image rows as the run records them: enough to re-score, compare two runs image by image, and
explain a miss, without the images. The verdict layer builds a case's result on them."""

from __future__ import annotations

from dataclasses import dataclass

from fmtest.data.sample import NOK
from fmtest.metrics.region import ImageRegionSummary


@dataclass
class ImageResult:
    """Per-image outcome: enough to re-score, compare two runs image by image, and explain a miss."""

    id: str
    sha256: str
    label: str
    predicted: str
    score: float | None = None
    iou: float | None = None
    reasoning: str | None = None
    error: str | None = None
    group: str | None = None  # the dataset group (MVTec category) or cross-validation fold that scored it
    defect_type: str | None = None  # from the dataset (MVTec folder, labels.csv column, satsim's kind)
    # the image's score map against its ground truth, small (`fmtest.metrics.region`): the case's region
    # figures (AU-PRO, pixel AUROC and AP, recall by defect size) are computed from these, fresh or merged
    region: ImageRegionSummary | None = None


N_THUMBNAILS = 8  # the worst images a case keeps as thumbnails, fresh or merged from shards


@dataclass
class Thumbnail:
    """A small PNG (base64) of the image with predicted mask and ground truth drawn over it."""

    id: str
    png_base64: str
    caption: str = ""


def badness(label: str, predicted: str, iou: float | None) -> float:
    """Orders images worst first (the thumbnails strip): wrong verdicts, then poor overlap."""
    wrong = 2.0 if predicted != label else 0.0
    return wrong + (1.0 - iou if iou is not None and label == NOK else 0.0)
