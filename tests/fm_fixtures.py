"""Tiny random-weight SAM and CLIP for the SAM pipeline tests, injected without any checkpoint on disk.

A test module builds its own engine and encoder (seeds and sizes differ per module) as module-scoped
`engine` / `encoder` fixtures and imports `models` from here to have both injected for one test.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from tiny_models import build_tiny_clip, build_tiny_sam

from fmtest.data.sample import Sample
from fmtest.models import registry
from fmtest.models.clip import CLIP_KEY, ClipEncoder
from fmtest.models.sam import SamEngine


def tiny_engine(seed: int) -> SamEngine:
    return SamEngine(build_tiny_sam(seed=seed), model_id="tiny-sam")


def tiny_encoder(**clip_options) -> ClipEncoder:
    return ClipEncoder(build_tiny_clip(**clip_options), model_id="tiny-clip")


def grey_and_rgb(seed: int, grey_hw: tuple[int, int], rgb_hw: tuple[int, int]) -> list[Sample]:
    """A greyscale NOK and an RGB OK sample of random pixels: both input layouts, sizes unlike the model's."""
    rng = np.random.default_rng(seed)
    grey = rng.random(grey_hw).astype(np.float32)
    rgb = rng.random((*rgb_hw, 3)).astype(np.float32)
    return [Sample(id="grey", image=grey, label="NOK"), Sample(id="rgb", image=rgb, label="OK")]


@pytest.fixture
def models(engine, encoder):
    """The module's engine and encoder, injected for one test; other tests see the real (missing) weights."""
    with registry.inject("sam_vit_h", engine), registry.inject(CLIP_KEY, encoder):
        yield engine, encoder
