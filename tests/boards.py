"""Circuit boards for the anomaly detectors' tests (padim, patchcore, anomalib): a fixed grid of pads on a noisy
substrate, and a bright blob between pads as the defect. Seeded: the same seed draws the same board."""

from __future__ import annotations

import cv2
import numpy as np

from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet

H, W = 72, 96  # non-square on purpose


def board(seed: int, defect: bool = False, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A fixed grid of pads on a noisy substrate; the defect is a bright blob between pads."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W), 0.3, np.float32)
    for y in range(8, H - 8, 16):
        for x in range(8, W - 8, 16):
            cv2.rectangle(img, (x, y), (x + 6, y + 6), 0.6, -1)
    img += 0.08 * cv2.GaussianBlur(rng.standard_normal((H, W)).astype(np.float32), (0, 0), 1.0)
    mask = np.zeros((H, W), np.uint8)
    if defect:
        cv2.circle(mask, (52, 36), 10, 1, -1)
        img[mask > 0] = 0.95
    img = np.clip(img, 0, 1)
    if rgb:
        img = np.stack([img, 0.8 * img, 0.6 * img], axis=-1)
    return img, mask > 0


def sample(sample_id: str, seed: int, defect: bool = False, rgb: bool = False) -> Sample:
    image, mask = board(seed, defect, rgb)
    return Sample(id=sample_id, image=image, label=NOK if defect else OK, mask=mask)


def train_set(n: int = 8, rgb: bool = False, loaded: list | None = None) -> SampleSet:
    def ref(i: int) -> SampleRef:
        def load() -> Sample:
            if loaded is not None:
                loaded.append(f"train/{i}")
            return sample(f"train/{i}", seed=100 + i, rgb=rgb)
        return SampleRef(id=f"train/{i}", label=OK, load=load)
    return SampleSet([ref(i) for i in range(n)])
