"""sam_clip on random-weight tiny SAM and CLIP: crops, scoring, threshold, union, sizes, missing weights."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from fakes import SUITES
from fm_fixtures import grey_and_rgb, models, tiny_encoder, tiny_engine  # noqa: F401 (models is a fixture)
from tiny_models import build_tiny_clip

from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.errors import ConfigError, MissingWeights
from fmtest.models import registry
from fmtest.models.clip import CLIP_KEY, ClipEncoder
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.clip_surgery_sam import ClipSurgerySam
from fmtest.pipelines.sam_clip import SamClip, mask_crop, prompt_probabilities

# A sparse point grid and no quality filters, so the random SAM proposes a few masks quickly.
FAST = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def engine():
    return tiny_engine(seed=0)


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder(seed=0)


@pytest.fixture(scope="module")
def samples():
    return grey_and_rgb(seed=3, grey_hw=(45, 70), rgb_hw=(60, 40))


def _pipeline(tmp_path, prompt="defect", **options):
    return SamClip(PipelineContext(dataset="satsim", options={**FAST, **options}, prompt=prompt,
                                   weights_dir=tmp_path))


def _expected(engine, encoder, samples, threshold, prompt="defect"):
    """The union the pipeline must return, computed straight from the engine's records and CLIP."""
    out = []
    texts = encoder.encode_texts([prompt, "background"])
    for s in samples:
        image = to_rgb_uint8(s.image)
        records = engine.automatic_masks(image, s.sha256, **FAST)
        masks = [r["segmentation"] for r in records if r["segmentation"].any()]
        probs = prompt_probabilities(encoder.encode_images([mask_crop(image, m) for m in masks]), texts, "texts")
        union = np.zeros(image.shape[:2], dtype=bool)
        for m, p in zip(masks, probs):
            if p > threshold:
                union |= m
        out.append((union, probs))
    return out


def test_mask_crop_is_bounding_box_with_black_background():
    image = np.full((6, 8, 3), 200, dtype=np.uint8)
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2] = True
    mask[2, 2:6] = True
    crop = mask_crop(image, mask)
    assert crop.shape == (3, 4, 3)
    np.testing.assert_array_equal(crop[..., 0], np.where(mask[1:4, 2:6], 200, 0))
    single = np.zeros((6, 8), dtype=bool)
    single[5, 7] = True
    assert mask_crop(image, single).shape == (1, 1, 3)
    assert mask_crop(image, np.zeros((6, 8), dtype=bool)) is None


def test_prompt_probability_over_texts_and_over_masks():
    crops = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # prompt, background
    over_texts = prompt_probabilities(crops, texts, "texts")
    np.testing.assert_allclose(over_texts[[0, 2]], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(over_texts[1], 1 / (1 + np.exp(100 * (0.8 - 0.6))), rtol=1e-4)
    over_masks = prompt_probabilities(crops, texts, "masks")
    assert over_masks.sum() == pytest.approx(1.0) and over_masks.argmax() == 0


def test_threshold_selects_exactly_the_masks_above_it(tmp_path, models, samples):
    engine, encoder = models
    probs = np.concatenate([p for _, p in _expected(engine, encoder, samples, 0.0)])
    assert len(probs) >= 3, "the tiny SAM should propose several masks for this test to mean something"
    threshold = float(np.sort(probs)[len(probs) // 2])  # keeps some masks and drops others
    predictions = _pipeline(tmp_path, score_threshold=threshold).predict(samples)
    for prediction, (union, p) in zip(predictions, _expected(engine, encoder, samples, threshold)):
        np.testing.assert_array_equal(prediction.mask, union)
        assert prediction.score == pytest.approx(float(p.max()))


def test_threshold_zero_unites_all_proposals_and_one_keeps_none(tmp_path, models, samples):
    engine, encoder = models
    everything = _pipeline(tmp_path, score_threshold=0.0).predict(samples)
    nothing = _pipeline(tmp_path, score_threshold=1.0).predict(samples)
    for s, all_masks, none in zip(samples, everything, nothing):
        assert all_masks.mask.shape == none.mask.shape == s.image.shape[:2]
        assert all_masks.mask.dtype == bool and all_masks.label == "NOK"
        assert not none.mask.any() and none.label == "OK"


def test_no_proposals_give_an_empty_mask(tmp_path, models, samples):
    predictions = _pipeline(tmp_path, pred_iou_thresh=1e9).predict(samples)
    for s, p in zip(samples, predictions):
        assert p.mask.shape == s.image.shape[:2] and not p.mask.any()
        assert p.label == "OK" and p.score == 0.0


def test_greyscale_is_scored_like_its_rgb_replica(tmp_path, models, samples):
    grey = samples[0]
    replica = Sample(id="replica", image=np.repeat(grey.image[:, :, None], 3, axis=2), label="NOK")
    pipeline = _pipeline(tmp_path, score_threshold=0.0)
    a, b = pipeline.predict([grey, replica])
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.score == pytest.approx(b.score)


def test_prompt_and_negatives_are_the_scored_texts(tmp_path, models):
    _, encoder = models
    pipeline = _pipeline(tmp_path, prompt="cat", negative_texts=["dog", "grass"])
    torch.testing.assert_close(pipeline.text_features, encoder.encode_texts(["cat", "dog", "grass"]))


def test_model_id_combines_sam_and_clip(tmp_path, models, engine):
    first = _pipeline(tmp_path).model_id
    other_clip = ClipEncoder(build_tiny_clip(seed=9), model_id="other-clip")
    with registry.inject(CLIP_KEY, other_clip):
        assert _pipeline(tmp_path).model_id != first
    assert first not in ("tiny-sam", "tiny-clip") and len(first) == 64


@pytest.mark.parametrize("pipeline", [SamClip, ClipSurgerySam])
def test_missing_weights_name_each_file(tmp_path, engine, pipeline):
    context = PipelineContext(dataset="satsim", weights_dir=tmp_path)
    with pytest.raises(MissingWeights, match=r"sam_vit_h_4b8939\.pth.*fmtest weights download sam_vit_h"):
        pipeline.check_available(context)
    with registry.inject("sam_vit_h", engine):
        with pytest.raises(MissingWeights, match=rf"ViT-B-16\.pt not found in {tmp_path}.*download {CLIP_KEY}"):
            pipeline.check_available(context)


@pytest.mark.parametrize("options, message", [
    ({"score_thresh": 0.5}, "unknown option"),
    ({"softmax_over": "pixels"}, "softmax_over must be one of texts, masks"),
    ({"score_threshold": 1.5}, r"score_threshold must be in \[0, 1\]"),
    ({"negative_texts": []}, "needs at least one negative_texts"),
    ({"points_per_side": 0}, "must be >= 1"),
])
def test_bad_options_raise_config_error(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        SamClip.check_available(PipelineContext(dataset="satsim", options=options, weights_dir=tmp_path))


# --- end to end through the pytest plugin, for both SAM + CLIP pipelines (sam_clip, clip_surgery_sam) ---

SUITE_CONFIG = """
default_datasets = ["satsim"]
bootstrap_resamples = 50
[datasets.satsim]
n_train = 4
n_test_good = 3
n_test_defective = 3
size = 128
[pipelines.sam_clip]
points_per_side = 2
pred_iou_thresh = 0.0
stability_score_thresh = 0.0
[pipelines.clip_surgery_sam]
surgery_depth = 2
"""
TINY_MODELS_CONFTEST = """
import pytest
from fmtest.models import registry
from fmtest.models.clip import CLIP_KEY, ClipEncoder
from fmtest.models.sam import SamEngine
from tiny_models import build_tiny_clip, build_tiny_sam

@pytest.fixture(scope="session", autouse=True)
def tiny_models():
    with registry.inject("sam_vit_h", SamEngine(build_tiny_sam(), "tiny-sam")), \\
            registry.inject(CLIP_KEY, ClipEncoder(build_tiny_clip(), "tiny-clip")):
        yield
"""


@pytest.fixture
def suite(pytester):
    shutil.copy(SUITES / "test_segmentation.py", pytester.path / "test_segmentation.py")
    (pytester.path / "fmtest.toml").write_text(SUITE_CONFIG)
    (pytester.path / "weights").mkdir()
    return pytester


PIPELINES = "sam_clip,clip_surgery_sam"


def _run(suite, *args):
    return suite.runpytest("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache", f"--fm-pipeline={PIPELINES}",
                           "--fm-dataset=satsim", f"--fm-weights={suite.path / 'weights'}", "-rs", *args)


def test_suite_runs_end_to_end_with_injected_tiny_models(suite):
    suite.makeconftest(TINY_MODELS_CONFTEST)
    result = _run(suite, "--fm-results=out.json")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 2, result.stdout.str()
    cases = json.loads((suite.path / "out.json").read_text())["cases"]
    assert [c["id"] for c in cases] == ["sam_clip-satsim", "clip_surgery_sam-satsim"]
    for case in cases:
        assert case["outcome"] in ("passed", "failed")
        assert len(case["images"]) == 6 and {i["predicted"] for i in case["images"]} <= {"OK", "NOK"}
        assert case["model_sha256"] == registry.combined_id("tiny-sam", "tiny-clip")


def test_suite_skips_with_the_missing_file_folder_and_command(suite):
    weights = suite.path / "weights"
    result = _run(suite)
    result.assert_outcomes(skipped=2)
    # both cases skip for the same reason, which pytest reports once with a count
    result.stdout.re_match_lines([rf"SKIPPED \[2\] .*sam_vit_h_4b8939\.pth not found in {weights} .*"
                                  r"`fmtest weights download sam_vit_h`"])
    (weights / "sam_vit_h_4b8939.pth").write_bytes(b"")  # SAM present: now CLIP is what is missing
    result = _run(suite)
    result.assert_outcomes(skipped=2)
    result.stdout.re_match_lines([rf"SKIPPED \[2\] .*ViT-B-16\.pt not found in {weights} .*"
                                  rf"`fmtest weights download {CLIP_KEY}`"])
    _run(suite, "--fm-strict").assert_outcomes(errors=2)


def test_text2seg_crop_option_scores_the_crops_text2seg_hands_clip(tmp_path, models, samples):
    """Non-square images: Text2Seg's crops (its swapped canvas) score differently from the whole mask's."""
    from fmtest.pipelines.sam_clip import text2seg_crop

    engine, encoder = models
    texts = encoder.encode_texts(["defect", "background"])
    predictions = _pipeline(tmp_path, crop="text2seg").predict(samples)
    for s, prediction in zip(samples, predictions):
        image = to_rgb_uint8(s.image)
        masks = [r["segmentation"] for r in engine.automatic_masks(image, s.sha256, **FAST) if r["segmentation"].any()]
        probs = prompt_probabilities(encoder.encode_images([text2seg_crop(image, m) for m in masks]), texts, "texts")
        assert prediction.score == pytest.approx(float(probs.max()))
    whole = _pipeline(tmp_path).predict(samples)
    assert any(abs(a.score - b.score) > 1e-4 for a, b in zip(predictions, whole))
