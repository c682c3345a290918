"""clip_surgery_sam on random-weight tiny models: point prompts, SAM agreement with upstream, sizes, errors.

The run through `pytest suites` (tiny models injected, and the skip without weights) and the
missing-weights messages are parametrized over both SAM + CLIP pipelines in tests/test_sam_clip.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from fm_fixtures import grey_and_rgb, models, tiny_encoder, tiny_engine  # noqa: F401 (models is a fixture)
from segment_anything import SamPredictor

from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models import registry
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.clip_surgery_sam import ClipSurgerySam, similarity_points


@pytest.fixture(scope="module")
def engine():
    return tiny_engine(seed=1)


@pytest.fixture(scope="module")
def encoder():
    # 128-pixel input: an 8x8 patch grid, so the default downsampling leaves a 4x4 map
    return tiny_encoder(image_size=128, layers=3, seed=1)


@pytest.fixture(scope="module")
def samples():
    return grey_and_rgb(seed=7, grey_hw=(50, 90), rgb_hw=(64, 48))


@pytest.fixture(scope="module")
def pipeline_factory(tmp_path_factory):
    weights = tmp_path_factory.mktemp("no-weights")

    def make(prompt="defect", **options):
        options = {"surgery_depth": 2, **options}
        return ClipSurgerySam(PipelineContext(dataset="satsim", options=options, prompt=prompt, weights_dir=weights))

    return make


def test_points_are_top_and_bottom_patches_at_cell_centres():
    grid = torch.arange(16, dtype=torch.float32).reshape(4, 4)  # grows to the bottom right
    points, labels = similarity_points(grid, (40, 80), threshold=0.75, downsample=1)
    # normalized values k/15 >= 0.75 for k = 12..15: four positives, then the four lowest as negatives
    np.testing.assert_array_equal(labels, [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(points[:4], [[10, 35], [30, 35], [50, 35], [70, 35]])
    np.testing.assert_allclose(points[4:], [[10, 5], [30, 5], [50, 5], [70, 5]])


def test_points_after_downsampling_and_at_most_half_the_patches():
    grid = torch.zeros(6, 6)
    grid[:3, :3] = 1.0  # top-left quadrant is the prompt
    points, labels = similarity_points(grid, (60, 60), threshold=0.0, downsample=2)
    assert len(points) == 2 * (9 // 2) and labels.sum() == 4  # threshold 0 would take all: capped at half
    top, _ = similarity_points(grid, (60, 60), threshold=0.9, downsample=2)
    np.testing.assert_allclose(top[0], [10, 10])  # the 3x3 map's top-left cell centre
    assert (points[:, 0] <= 59).all() and (points[:, 1] <= 59).all()


def test_flat_or_single_cell_map_gives_no_points():
    assert len(similarity_points(torch.full((4, 4), 0.3), (10, 10))[0]) == 0
    assert len(similarity_points(torch.rand(4, 4), (10, 10), downsample=8)[0]) == 0


def test_masks_identical_to_upstream_sampredictor_with_the_same_points(models, samples, pipeline_factory):
    engine, _ = models
    pipeline = pipeline_factory()
    predictions = pipeline.predict(samples)
    images = [to_rgb_uint8(s.image) for s in samples]
    grids = pipeline.surgery.patch_similarity(images, ["defect"], redundant_texts=[""])
    reference = SamPredictor(engine.sam)
    for s, image, grid, prediction in zip(samples, images, grids[:, 0], predictions):
        points, labels = similarity_points(grid, image.shape[:2])
        assert labels.sum() >= 1 and (labels == 0).sum() == labels.sum()
        reference.set_image(image)
        masks, _, _ = reference.predict(point_coords=points, point_labels=labels, multimask_output=False)
        assert prediction.mask.shape == s.image.shape[:2] and prediction.mask.dtype == bool
        np.testing.assert_array_equal(prediction.mask, masks[0])
        assert prediction.label == ("NOK" if masks[0].any() else "OK")
        assert prediction.score == pytest.approx(float(grid.max()))


def test_positive_points_only_when_negatives_are_off(models, samples, pipeline_factory):
    engine, _ = models
    image = to_rgb_uint8(samples[1].image)
    pipeline = pipeline_factory(negative_points=False)
    grid = pipeline.surgery.patch_similarity([image], ["defect"], redundant_texts=[""])[0, 0]
    points, labels = similarity_points(grid, image.shape[:2])
    expected, _ = engine.masks_from_points(image, "ref", points[labels == 1], labels[labels == 1])
    np.testing.assert_array_equal(pipeline.predict(samples[1:])[0].mask, expected[0])


def test_no_points_give_an_empty_mask(models, samples, pipeline_factory):
    for s, p in zip(samples, pipeline_factory(downsample=8).predict(samples)):  # 8x8 grid -> one cell
        assert p.mask.shape == s.image.shape[:2] and not p.mask.any() and p.label == "OK"


def test_prompt_and_redundant_texts_drive_the_map(models, samples, pipeline_factory):
    image = [to_rgb_uint8(samples[0].image)]
    base = pipeline_factory().surgery
    cat = base.patch_similarity(image, ["cat"], redundant_texts=[""])
    assert (cat - base.patch_similarity(image, ["defect"], redundant_texts=[""])).abs().max() > 1e-4
    assert (cat - base.patch_similarity(image, ["cat"], redundant_texts=["object"])).abs().max() > 1e-4
    score = pipeline_factory(prompt="cat", redundant_texts=["object", "thing"]).predict(samples[:1])[0].score
    expected = base.patch_similarity(image, ["cat"], redundant_texts=["object", "thing"]).max()
    assert score == pytest.approx(float(expected), rel=1e-5)


def test_greyscale_matches_its_rgb_replica(models, samples, pipeline_factory):
    grey = samples[0]
    replica = Sample(id="replica", image=np.repeat(grey.image[:, :, None], 3, axis=2), label="NOK")
    a, b = pipeline_factory().predict([grey, replica])
    np.testing.assert_array_equal(a.mask, b.mask)


def test_model_id_combines_sam_and_clip(models, pipeline_factory):
    model_id = pipeline_factory().model_id
    assert len(model_id) == 64 and model_id == registry.combined_id("tiny-sam", "tiny-clip")


@pytest.mark.parametrize("options, message", [
    ({"threshold": 0.8}, "unknown option"),
    ({"point_threshold": -0.1}, r"point_threshold must be in \[0, 1\]"),
    ({"downsample": 0}, "must be >= 1"),
    ({"redundant_texts": []}, "needs at least one text"),
    ({"negative_points": "yes"}, "negative_points must be bool"),
])
def test_bad_options_raise_config_error(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        ClipSurgerySam.check_available(PipelineContext(dataset="satsim", options=options, weights_dir=tmp_path))


def test_text2seg_options_prompt_sam_with_text2segs_points(models, samples, pipeline_factory):
    """clip_input, token_norm and point_coords as Text2Seg: SAM gets the whole-pixel points of Text2Seg's map."""
    engine, _ = models
    text2seg = {"clip_input": "text2seg", "token_norm": "across_tokens", "point_coords": "integer"}
    pipeline = pipeline_factory(**text2seg)
    predictions = pipeline.predict(samples)
    images = [to_rgb_uint8(s.image) for s in samples]
    grids = pipeline.surgery.patch_similarity(images, ["defect"], redundant_texts=[""], clip_input="text2seg",
                                              token_norm="across_tokens")
    default_grids = pipeline.surgery.patch_similarity(images, ["defect"], redundant_texts=[""])
    assert (grids - default_grids).abs().max() > 1e-3
    reference = SamPredictor(engine.sam)
    for image, grid, prediction in zip(images, grids[:, 0], predictions):
        points, labels = similarity_points(grid, image.shape[:2], integer=True)
        assert (points == np.floor(points)).all()
        reference.set_image(image)
        masks, _, _ = reference.predict(point_coords=points, point_labels=labels, multimask_output=False)
        np.testing.assert_array_equal(prediction.mask, masks[0])
        assert prediction.score == pytest.approx(float(grid.max()))
