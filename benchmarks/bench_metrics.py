"""Speed of scoring a large run: IoU of 10,000 mask pairs at 512x512, F2, and a 1000-resample bootstrap.

Target: under 5 s on 2 CPU cores. Run with
    .venv/bin/pytest benchmarks/bench_metrics.py --benchmark-only
The masks are 500 distinct pairs scored 20 times over, so the data fit in memory next to other jobs
while every pair still streams from RAM (500 pairs are far larger than any CPU cache).
"""

from __future__ import annotations

import numpy as np
import pytest

from fmtest.metrics import functional as metrics
from fmtest.metrics.specs import IOUS, VERDICTS
from fmtest.verdict.scoring import score_inputs

N_PAIRS = 10_000
N_DISTINCT = 500
SIZE = 512
TARGET_S = 5.0


def _disk_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Defect-like masks: one disk of random centre and radius per image (some empty)."""
    yy, xx = np.ogrid[:SIZE, :SIZE]
    out = np.empty((n, SIZE, SIZE), dtype=bool)
    for i, (cy, cx, r) in enumerate(zip(rng.integers(0, SIZE, n), rng.integers(0, SIZE, n), rng.integers(0, 60, n))):
        out[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return out


@pytest.fixture(scope="module")
def scored_run():
    rng = np.random.default_rng(0)
    preds, targets = _disk_masks(rng, N_DISTINCT), _disk_masks(rng, N_DISTINCT)
    ignores = rng.random((N_DISTINCT, SIZE, SIZE)) < 0.01
    y_true = rng.random(N_PAIRS) < 0.12
    y_pred = y_true ^ (rng.random(N_PAIRS) < 0.1)
    return preds, targets, ignores, y_true, y_pred


def _score(preds, targets, ignores, y_true, y_pred, use_ignore: bool):
    ious = np.concatenate([metrics.iou_batch(preds, targets, ignores if use_ignore else None)
                           for _ in range(N_PAIRS // N_DISTINCT)])
    return ious, score_inputs({VERDICTS: (y_true, y_pred), IOUS: (ious,)},
                              task="classification", n_resamples=1000, seed=0)


@pytest.mark.parametrize("use_ignore", [False, True], ids=["plain", "with_ignore"])
def test_score_10k_masks_f2_and_bootstrap(benchmark, scored_run, use_ignore):
    ious, summary = benchmark.pedantic(_score, args=(*scored_run, use_ignore), rounds=3, iterations=1)
    assert ious.shape == (N_PAIRS,)
    assert summary["f2_ci_low"] <= summary["f2"] <= summary["f2_ci_high"]
    assert benchmark.stats.stats.median < TARGET_S
