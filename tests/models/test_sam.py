"""SamEngine on a tiny random-weight SAM: agreement with the upstream SamPredictor, and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from tiny_models import build_tiny_sam

from fmtest.errors import DataError
from fmtest.models.sam import SamEngine, build_sam

BOXES = np.array([[10, 10, 60, 80], [50, 20, 140, 90], [0, 0, 149, 99], [30, 5, 31, 6]], dtype=float)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return (rng.random((100, 150, 3)) * 255).astype(np.uint8)


class EncoderCalls:
    """Counts how many images go through the ViT encoder (a forward hook, no monkeypatching)."""

    def __init__(self, sam):
        self.images = 0
        sam.image_encoder.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.images += inputs[0].shape[0]


def test_masks_from_boxes_identical_to_sampredictor(image):
    engine = SamEngine(build_tiny_sam(seed=1), "tiny")
    masks, scores = engine.masks_from_boxes(image, "img", BOXES)
    reference = SamPredictor(build_tiny_sam(seed=1))
    reference.set_image(image)
    assert masks.shape == (len(BOXES), 100, 150) and masks.dtype == bool
    for i, box in enumerate(BOXES):
        ref_masks, ref_scores, _ = reference.predict(box=box, multimask_output=False)
        np.testing.assert_array_equal(masks[i], ref_masks[0])
        np.testing.assert_allclose(scores[i], ref_scores[0], rtol=1e-4)
    assert 0 < masks.mean() < 1  # random weights still give non-trivial masks, so equality means something


def test_batched_boxes_identical_to_text2segs_predict_torch_call(image):
    """gdino_sam decodes every box of an image in one call, as Text2Seg's predict_dino does."""
    import torch

    engine = SamEngine(build_tiny_sam(seed=1), "tiny")
    masks, scores = engine.masks_from_boxes_batched(image, "img", BOXES)
    reference = SamPredictor(build_tiny_sam(seed=1))
    reference.set_image(image)
    boxes = reference.transform.apply_boxes_torch(torch.as_tensor(BOXES, dtype=torch.float32), image.shape[:2])
    ref_masks, ref_scores, _ = reference.predict_torch(point_coords=None, point_labels=None, boxes=boxes,
                                                       multimask_output=False)
    np.testing.assert_array_equal(masks, ref_masks[:, 0].numpy())
    np.testing.assert_allclose(scores, ref_scores[:, 0].detach().numpy(), rtol=1e-4)
    assert masks.shape == (len(BOXES), 100, 150) and 0 < masks.mean() < 1
    again, _ = engine.masks_from_boxes_batched(image, "img", BOXES)
    np.testing.assert_array_equal(again, masks)  # the same boxes, the same masks
    assert engine.masks_from_boxes_batched(image, "img", np.zeros((0, 4)))[0].shape == (0, 100, 150)


def test_masks_from_points_identical_to_sampredictor(image):
    engine = SamEngine(build_tiny_sam(seed=2), "tiny")
    points, labels = np.array([[40.0, 50.0], [100.0, 20.0]]), np.array([1, 0])
    masks, scores = engine.masks_from_points(image, "img", points, labels, multimask=True)
    reference = SamPredictor(build_tiny_sam(seed=2))
    reference.set_image(image)
    ref_masks, ref_scores, _ = reference.predict(point_coords=points, point_labels=labels, multimask_output=True)
    np.testing.assert_array_equal(masks, ref_masks)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4)


def test_no_prompt_gives_empty_mask_stack(image):
    engine = SamEngine(build_tiny_sam(), "tiny")
    masks, scores = engine.masks_from_boxes(image, "img", np.zeros((0, 4)))
    assert masks.shape == (0, 100, 150) and scores.shape == (0,)
    masks, _ = engine.masks_from_points(image, "img", np.zeros((0, 2)), np.zeros(0))
    assert masks.shape == (0, 100, 150)


def test_embedding_computed_once_per_image_and_shared(image):
    sam = build_tiny_sam()
    calls = EncoderCalls(sam)
    engine = SamEngine(sam, "tiny")
    engine.masks_from_boxes(image, "img", BOXES[:1])
    engine.masks_from_points(image, "img", np.array([[5.0, 5.0]]), np.array([1]))
    engine.automatic_masks(image, "img", points_per_side=4)
    assert engine.image_embedding(image, "img").shape == (1, 256, 16, 16)
    assert calls.images == 1
    engine.masks_from_boxes(image[::-1].copy(), "other", BOXES[:1])
    assert calls.images == 2


def test_batched_embedding_matches_single_and_runs_one_batch(image):
    sam = build_tiny_sam()
    calls = EncoderCalls(sam)
    engine = SamEngine(sam, "tiny")  # default batch of 4 images per encoder call
    images = [image, image[:, ::-1].copy(), image[:60]]
    engine.embed(images, ["a", "b", "c"])
    assert calls.images == 3
    single = SamEngine(build_tiny_sam(), "tiny")
    for img, key in zip(images, "abc", strict=True):
        torch.testing.assert_close(engine.image_embedding(img, key), single.image_embedding(img, key),
                                   atol=1e-5, rtol=1e-4)
    assert calls.images == 3


def test_lru_evicts_oldest_embedding(image):
    sam = build_tiny_sam()
    calls = EncoderCalls(sam)
    engine = SamEngine(sam, "tiny", cache_mib=0.5)  # two tiny embeddings of 256 x 16 x 16 float32
    for key in ("a", "b", "c"):
        engine.image_embedding(image, key)
    engine.image_embedding(image, "c")
    assert calls.images == 3
    engine.image_embedding(image, "a")  # evicted: encoded again
    assert calls.images == 4


def test_automatic_masks_match_upstream_generator(image):
    options = dict(points_per_side=2, pred_iou_thresh=-10.0, stability_score_thresh=-10.0)
    records = SamEngine(build_tiny_sam(seed=3), "tiny").automatic_masks(image, "img", **options)
    reference = SamAutomaticMaskGenerator(build_tiny_sam(seed=3), **options).generate(image)
    assert len(records) == len(reference) > 0
    for ours, theirs in zip(records, reference, strict=True):
        np.testing.assert_array_equal(ours["segmentation"], theirs["segmentation"])


def test_rejects_non_rgb_uint8(image):
    engine = SamEngine(build_tiny_sam(), "tiny")
    with pytest.raises(DataError, match="uint8 RGB"):
        engine.image_embedding(image[..., 0], "grey")
    with pytest.raises(DataError, match="uint8 RGB"):
        engine.image_embedding(image.astype(np.float32) / 255, "float")


def test_build_sam_official_config_names_unknown_variant():
    with pytest.raises(DataError, match="unknown SAM variant 'vit_x'"):
        build_sam("vit_x")
