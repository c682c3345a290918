"""Speed of the baselines on satsim parts: alignment, reference_diff and padim per image.

    .venv/bin/pytest benchmarks/bench_baselines.py --benchmark-only

Targets on 2 CPU cores: aligning a 1024x1024 scan under 0.5 s (the LVLM pipelines align every
image before sending it); padim at least 5 images/s at 256 px (on CUDA when there is one).
Fitting is not timed.
"""

from __future__ import annotations

import pytest
import torch

from fmtest.data.satsim import SatSim, SatSimOptions
from fmtest.imaging.align import estimate_alignment
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.padim import Padim
from fmtest.pipelines.reference_diff import ReferenceDiff

ALIGN_TARGET_S = 0.5
PADIM_TARGET_IMAGES_PER_S = 5.0
N_IMAGES = 16


@pytest.fixture(scope="module")
def parts():
    dataset = SatSim(SatSimOptions(size=256, n_train=16, n_test_good=N_IMAGES // 2, n_test_defective=N_IMAGES // 2))
    return dataset, list(dataset.test)


def test_align_1024(benchmark):
    big = SatSim(SatSimOptions(size=1024, n_train=1, n_test_good=1, n_test_defective=0))
    image, reference = big.test[0].image, big.reference.image
    alignment = benchmark.pedantic(estimate_alignment, args=(image, reference), rounds=5, iterations=1)
    assert alignment.ok
    assert benchmark.stats.stats.median < ALIGN_TARGET_S


def test_reference_diff_per_image(benchmark, parts):
    dataset, samples = parts
    pipeline = ReferenceDiff(PipelineContext(dataset="satsim", progress=False))
    pipeline.fit(dataset.train, dataset.reference)
    benchmark.pedantic(pipeline.predict, args=(samples,), rounds=3, iterations=1)
    benchmark.extra_info["images_per_second"] = len(samples) / benchmark.stats.stats.median


def test_padim_per_image(benchmark, parts):
    dataset, samples = parts
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline = Padim(PipelineContext(dataset="satsim", device=device, progress=False))
    pipeline.fit(dataset.train, dataset.reference)
    benchmark.pedantic(pipeline.predict, args=(samples,), rounds=3, iterations=1, warmup_rounds=1)
    images_per_second = len(samples) / benchmark.stats.stats.median
    benchmark.extra_info["images_per_second"] = images_per_second
    assert images_per_second > PADIM_TARGET_IMAGES_PER_S
