"""Data-quality guardrails, run before scoring: is a bad number the model's fault or the data's?

Five checks, each cheap and needing no model:
- near-duplicates across train and test (leakage inflates every score),
- label/mask disagreement (NOK with an empty mask, OK with a non-empty one), and a defect mask that covers
  almost the whole image (an inverted mask: defect black, background white),
- intensity outliers: images whose brightness statistics sit far outside the training images',
- alignment failures: images a registration callable cannot align to the reference,
- 16-bit greyscale images that a naive 8-bit conversion would saturate: PIL's `convert("RGB")` (as
  in Text2Seg's loader) clips every value above 255 to white, so an upstream loader would have fed
  the model a near-white image. fmtest itself scales by 65535; the finding explains why a model can
  do worse in its original code than here. Samples are float in [0, 1], so the stored bit depth is
  read from the values: integers of 0..65535 that are not all integers of 0..255 came from 16 bits.
Findings are reported, not raised: the run goes on and the report shows them next to the scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from fmtest.data.sample import NOK, OK, Sample, SampleSet
from fmtest.errors import ConfigError, FmtestError

Alignment = Callable[[np.ndarray, np.ndarray], float]  # (image, reference) -> quality in [0, 1]

FINGERPRINT_SIZE = 32
STAT_NAMES = ("mean", "std", "p1", "p50", "p99")
MIN_TRAIN_FOR_STATS = 5
MIN_SPREAD = 0.01  # intensity differences below 1 % of full scale never count as outlying
MAD_TO_SD = 1.4826  # scales the median absolute deviation to a standard deviation for normal data
UINT8_MAX, UINT16_MAX = 255, 65535


@dataclass(frozen=True)
class Finding:
    """One data problem; `image_id` is None for a finding about a whole split or check."""

    kind: str  # near_duplicate | label_mask_disagreement | mask_covers_image | intensity_outlier |
    #            alignment_failure | saturates_8bit | excluded_from_iou | check_skipped
    image_id: str | None
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.image_id or '(dataset)'}: {self.detail}"


@dataclass(frozen=True)
class _Profile:
    """What the cross-image checks need from one decoded image, so each image is decoded once."""

    id: str
    split: str
    fingerprint: np.ndarray  # FINGERPRINT_SIZE² greyscale thumbnail, flattened
    stats: np.ndarray  # STAT_NAMES


def check_data_quality(
    train: SampleSet,
    test: SampleSet,
    reference: Sample | None,
    *,
    alignment: Alignment | None = None,
    min_alignment_quality: float = 0.5,
    duplicate_correlation: float = 0.95,
    outlier_z: float = 5.0,
    max_saturated_share: float = 0.01,
    max_mask_coverage: float = 0.9,
    progress: bool = True,
) -> list[Finding]:
    """All findings for a dataset's splits, in check order.

    `alignment(image, reference)` returns a registration quality in [0, 1] (e.g. the quality of
    `fmtest.imaging.align.estimate_alignment`); images below `min_alignment_quality` are reported.
    `outlier_z` is in robust standard deviations (median/MAD of the training images); the default
    is conservative so that a clean dataset yields no intensity findings. A 16-bit greyscale image
    is reported when more than `max_saturated_share` of its pixels exceed 255.
    """
    if not 0.0 <= min_alignment_quality <= 1.0:
        raise ConfigError(f"min_alignment_quality must lie in [0, 1], got {min_alignment_quality}")
    if not 0.0 < duplicate_correlation <= 1.0:
        raise ConfigError(f"duplicate_correlation must lie in (0, 1], got {duplicate_correlation}")
    if outlier_z <= 0:
        raise ConfigError(f"outlier_z must be positive, got {outlier_z}")
    if not 0.0 <= max_saturated_share < 1.0:
        raise ConfigError(f"max_saturated_share must lie in [0, 1), got {max_saturated_share}")

    findings: list[Finding] = []
    if alignment is not None and reference is None:
        findings.append(Finding("check_skipped", None, "no reference image, so alignment was not checked"))
        alignment = None
    profiles = {"train": [], "test": []}
    for split, samples in (("train", train), ("test", test)):
        for sample in _iterate(samples, f"guardrails ({split})", progress):
            findings.extend(_label_mask_findings(sample, split, max_mask_coverage))
            findings.extend(_saturation_findings(sample, split, max_saturated_share))
            if alignment is not None and sample.id != reference.id:
                findings.extend(_alignment_findings(sample, reference, alignment, min_alignment_quality))
            profiles[split].append(_profile(sample, split))
    findings.extend(_duplicate_findings(profiles["train"], profiles["test"], duplicate_correlation))
    findings.extend(_intensity_findings(profiles["train"], profiles["train"] + profiles["test"], outlier_z))
    return findings


def _iterate(samples: SampleSet, description: str, progress: bool) -> Iterator[Sample]:
    for batch in tqdm(samples.batches(16), desc=description, total=math.ceil(len(samples) / 16),
                      disable=not progress, unit="batch"):
        yield from batch


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image.mean(axis=2) if image.ndim == 3 else image


def _profile(sample: Sample, split: str) -> _Profile:
    grey = _grey(sample.image)
    thumb = cv2.resize(grey, (FINGERPRINT_SIZE, FINGERPRINT_SIZE), interpolation=cv2.INTER_AREA)
    p1, p50, p99 = np.percentile(grey, [1, 50, 99])
    stats = np.array([grey.mean(), grey.std(), p1, p50, p99], dtype=np.float64)
    return _Profile(sample.id, split, thumb.ravel().astype(np.float64), stats)


# --------------------------------------------------------------------------- per-image checks


def _label_mask_findings(sample: Sample, split: str, max_coverage: float) -> list[Finding]:
    if sample.mask is None:  # labels-only dataset: nothing to compare
        return []
    n_marked = int(np.count_nonzero(sample.mask))
    if sample.label == NOK and n_marked == 0:
        return [Finding("label_mask_disagreement", sample.id, f"{split} image labelled NOK but its mask is empty")]
    coverage = n_marked / sample.mask.size
    if coverage > max_coverage:
        file = sample.meta.get("mask_file") or sample.source or sample.id
        return [Finding("mask_covers_image", sample.id,
                        f"{file}: the defect mask covers {coverage:.0%} of the {split} image (above {max_coverage:.0%}):"
                        " an inverted mask (defect black, background white)?")]
    if sample.label == OK and n_marked:
        return [Finding("label_mask_disagreement", sample.id,
                        f"{split} image labelled OK but its mask marks {n_marked} defect pixels")]
    return []


def stored_bit_depth(image: np.ndarray) -> int | None:
    """8 or 16 when the [0, 1] values are integers over 255 or 65535 (how fmtest.data.io decodes), else None.

    A 16-bit file holding only multiples of 257 (8-bit data widened) reads as 8-bit: its values map
    to the same 8-bit image either way.
    """
    for depth, full_scale in ((8, UINT8_MAX), (16, UINT16_MAX)):
        scaled = np.asarray(image, dtype=np.float64) * full_scale
        if np.all(np.abs(scaled - np.rint(scaled)) < 0.01):
            return depth
    return None


def _saturation_findings(sample: Sample, split: str, max_share: float) -> list[Finding]:
    image = sample.image
    if image.ndim != 2 or stored_bit_depth(image) != 16:
        return []
    share = float(np.mean(image * UINT16_MAX > UINT8_MAX + 0.5))
    if share <= max_share:
        return []
    return [Finding("saturates_8bit", sample.id,
                    f"{split} image is 16-bit greyscale and {share:.1%} of its pixels exceed 255: a naive 8-bit "
                    f"conversion (PIL's convert(\"RGB\"), as in Text2Seg's loader) turns them white, so an upstream "
                    f"loader would feed the model a near-white image (fmtest scales by 65535)")]


def _alignment_findings(sample: Sample, reference: Sample, alignment: Alignment, minimum: float) -> list[Finding]:
    quality = alignment(sample.image, reference.image)
    if not isinstance(quality, (int, float, np.floating, np.integer)) or not 0.0 <= quality <= 1.0:
        raise FmtestError(f"alignment returned {quality!r} for image {sample.id}; expected a quality in [0, 1]")
    if quality < minimum:
        return [Finding("alignment_failure", sample.id,
                        f"aligns to reference {reference.id} with quality {quality:.2f} < {minimum:.2f}")]
    return []


# --------------------------------------------------------------------------- cross-image checks


def _duplicate_findings(train: list[_Profile], test: list[_Profile], threshold: float) -> list[Finding]:
    """Correlate thumbnails after projecting out what all training images share.

    Industrial images of one product look alike by design. Removing the mean training thumbnail (at
    any gain and offset, so a re-exposed copy is still a copy) leaves each part's own variation,
    which only a copy of that part repeats.
    """
    if not train or not test:
        return []
    train_fp = np.stack([p.fingerprint for p in train])
    test_fp = np.stack([p.fingerprint for p in test])
    shared = [np.ones(train_fp.shape[1])]
    if len(train) >= 3:  # with fewer, the mean is mostly the images themselves
        shared.append(train_fp.mean(axis=0))
    basis, _ = np.linalg.qr(np.stack(shared, axis=1))
    correlation = _unit_rows(_residual(test_fp, basis)) @ _unit_rows(_residual(train_fp, basis)).T
    best = correlation.argmax(axis=1)
    findings = []
    for i, j in enumerate(best):
        if correlation[i, j] >= threshold:
            findings.append(Finding("near_duplicate", test[i].id,
                                    f"test image matches train image {train[j].id} "
                                    f"(thumbnail correlation {correlation[i, j]:.3f})"))
    return findings


def _residual(rows: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return rows - (rows @ basis) @ basis.T


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """Unit-norm rows; rows with nothing left stay zero and so correlate with nothing."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 1e-9)


def _intensity_findings(train: list[_Profile], checked: list[_Profile], outlier_z: float) -> list[Finding]:
    if len(train) < MIN_TRAIN_FOR_STATS:
        return [Finding("check_skipped", None, f"only {len(train)} training images; intensity outliers need "
                                               f"at least {MIN_TRAIN_FOR_STATS}")]
    train_stats = np.stack([p.stats for p in train])
    median = np.median(train_stats, axis=0)
    spread = np.maximum(MAD_TO_SD * np.median(np.abs(train_stats - median), axis=0), MIN_SPREAD)
    findings = []
    for profile in checked:
        z = (profile.stats - median) / spread
        worst = int(np.argmax(np.abs(z)))
        if abs(z[worst]) > outlier_z:
            findings.append(Finding("intensity_outlier", profile.id,
                                    f"{profile.split} image {STAT_NAMES[worst]} {profile.stats[worst]:.3f} is "
                                    f"{z[worst]:+.1f} robust SDs from the training median {median[worst]:.3f}"))
    return findings
