"""The SAM encoder's fast-path options against the reference path on a tiny random-weight SAM.

SDPA attention must reproduce upstream's attention (relative-position bias included) in float32,
bf16 must stay close, masks from SamPredictor-equivalent calls must agree, and an image is encoded
once per encoder setting however many views of the engine ask for it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling.image_encoder import Attention
from tiny_models import build_tiny_grounding_dino, build_tiny_sam

from fmtest.errors import ConfigError
from fmtest.models.sam import SamEngine
from fmtest.models.sam_encoder import EncoderSettings, SdpaAttention

BOXES = np.array([[10, 10, 60, 80], [50, 20, 140, 90], [0, 0, 149, 99]], dtype=float)
POINTS, LABELS = np.array([[40.0, 50.0], [100.0, 20.0]]), np.array([1, 0])
SDPA = EncoderSettings(attention="sdpa")
BF16 = EncoderSettings(precision="bf16")
BF16_SDPA = EncoderSettings(precision="bf16", attention="sdpa")


def tiny_sam(seed: int = 1):
    """A tiny SAM whose relative-position tables are random: upstream zero-initialises them, which
    would leave the bias SDPA must reproduce untested."""
    sam = build_tiny_sam(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in sam.image_encoder.blocks:
            for table in (block.attn.rel_pos_h, block.attn.rel_pos_w):
                table.copy_(torch.randn(table.shape, generator=generator) * 0.5)
    return sam


class EncoderCalls:
    """Counts encoder calls and images through the reference encoder (a forward hook)."""

    def __init__(self, module):
        self.calls = self.images = 0
        module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.calls += 1
        self.images += inputs[0].shape[0]


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return (rng.random((100, 150, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def engine():
    return SamEngine(tiny_sam(), "tiny")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_relative_position_bias_matters_in_this_model(engine, image):
    zeroed = SamEngine(build_tiny_sam(seed=1), "tiny")  # same weights, upstream's zero bias tables
    difference = engine.image_embedding(image, "img") - zeroed.image_embedding(image, "img")
    assert difference.abs().max() > 0.1


def test_sdpa_fp32_embedding_matches_reference(engine, image):
    reference = engine.image_embedding(image, "img")
    fast = engine.configured(SDPA).image_embedding(image, "img")
    assert fast.dtype == torch.float32 and fast.shape == reference.shape
    assert (fast - reference).abs().max() < 1e-4


@pytest.mark.parametrize("settings", [BF16, BF16_SDPA], ids=lambda s: s.embedding_key)
def test_bf16_embedding_close_to_reference(engine, image, settings):
    reference = engine.image_embedding(image, "img")
    fast = engine.configured(settings).image_embedding(image, "img")
    assert fast.dtype == torch.float32  # the decoder runs in float32 as upstream
    assert cosine(fast, reference) >= 0.999


@pytest.mark.parametrize("settings", [SDPA, BF16_SDPA], ids=lambda s: s.embedding_key)
def test_masks_agree_with_upstream_sampredictor(engine, image, settings):
    reference = SamPredictor(engine.sam)
    reference.set_image(image)
    fast = engine.configured(settings)
    masks, _ = fast.masks_from_boxes(image, "img", BOXES)
    for mask, box in zip(masks, BOXES, strict=True):
        ref_masks, _, _ = reference.predict(box=box, multimask_output=False)
        assert mask_iou(mask, ref_masks[0]) >= 0.99
    masks, _ = fast.masks_from_points(image, "img", POINTS, LABELS, multimask=True)
    ref_masks, _, _ = reference.predict(point_coords=POINTS, point_labels=LABELS, multimask_output=True)
    assert all(mask_iou(m, r) >= 0.99 for m, r in zip(masks, ref_masks, strict=True))
    assert 0 < masks.mean() < 1  # non-trivial masks, so agreement means something


def test_sdpa_wraps_a_copy_sharing_weights_and_leaves_the_reference_encoder_alone():
    engine = SamEngine(tiny_sam(), "tiny")
    engine.configured(SDPA).image_embedding(np.zeros((32, 32, 3), np.uint8), "black")
    (fast,) = engine._state.encoders.values()
    assert all(isinstance(block.attn, Attention) for block in engine.sam.image_encoder.blocks)
    assert all(isinstance(block.attn, SdpaAttention) for block in fast.blocks)
    reference_weights = {p.data_ptr() for p in engine.sam.image_encoder.parameters()}
    assert {p.data_ptr() for p in fast.parameters()} == reference_weights


def test_batch_size_sets_images_per_encoder_call(image):
    engine = SamEngine(tiny_sam(), "tiny", settings=EncoderSettings(batch_size=2))
    calls = EncoderCalls(engine.sam.image_encoder)
    images = [image, image[::-1].copy(), image[:, ::-1].copy(), image]
    engine.embed(images, ["a", "b", "c", "a"])
    assert (calls.calls, calls.images) == (2, 3)
    single = SamEngine(tiny_sam(), "tiny", settings=EncoderSettings(batch_size=1))
    for img, key in zip(images[:3], "abc", strict=True):
        torch.testing.assert_close(engine.image_embedding(img, key), single.image_embedding(img, key),
                                   atol=1e-4, rtol=1e-4)


def test_embeddings_shared_between_views_with_the_same_encoder_settings(image):
    engine = SamEngine(tiny_sam(), "tiny")
    fast = engine.configured(BF16_SDPA)
    same = engine.configured(EncoderSettings(precision="bf16", attention="sdpa", batch_size=8))
    fast.image_embedding(image, "img")
    same.masks_from_boxes(image, "img", BOXES[:1])
    assert engine.images_encoded == 1  # batch size does not change the embedding: shared
    engine.image_embedding(image, "img")  # float32 reference: encoded on its own
    assert engine.images_encoded == 2
    assert engine.configured(EncoderSettings()) is engine


def test_cache_is_bounded_in_mib(image):
    engine = SamEngine(tiny_sam(), "tiny", cache_mib=0.75)  # three tiny embeddings of 0.25 MiB
    for key in "abcd":
        engine.image_embedding(image, key)
    assert engine.images_encoded == 4
    engine.image_embedding(image, "b")
    assert engine.images_encoded == 4
    engine.image_embedding(image, "a")  # the oldest: evicted, encoded again
    assert engine.images_encoded == 5
    engine.clear_embeddings()
    engine.image_embedding(image, "a")
    assert engine.images_encoded == 6


@pytest.mark.parametrize("settings,message", [
    ({"precision": "fp16"}, "precision must be one of fp32, bf16"),
    ({"attention": "flash"}, "attention must be one of reference, sdpa"),
    ({"batch_size": 0}, "batch size must be >= 1"),
])
def test_bad_settings_raise_config_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        EncoderSettings(**settings)


@pytest.mark.slow
def test_compiled_encoder_matches_reference_and_caches_on_disk(image, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    engine = SamEngine(tiny_sam(), "tiny")
    settings = EncoderSettings(attention="sdpa", compile=True, compile_cache_dir=tmp_path / "inductor")
    compiled = engine.configured(settings).image_embedding(image, "img")
    assert (compiled - engine.image_embedding(image, "img")).abs().max() < 1e-3
    assert any((tmp_path / "inductor").rglob("*"))


# --- the four SAM pipelines in one process ---------------------------------------------------------

FAST_OPTIONS = {"sam_precision": "bf16", "sam_attention": "sdpa", "sam_batch_size": 3}


@pytest.fixture(scope="module")
def four_pipeline_models():
    """Tiny SAM, CLIP and GroundingDINO, as the four SAM pipelines need them."""
    from fm_fixtures import tiny_encoder
    from tiny_models import vocab_folder

    from fmtest.models import grounding_dino as gd

    detector = build_tiny_grounding_dino(gd.load_bert_tokenizer(vocab_folder()), num_queries=5)
    return SamEngine(tiny_sam(), "tiny"), tiny_encoder(), detector


@pytest.fixture
def injected(four_pipeline_models):
    from fmtest.models import grounding_dino as gd
    from fmtest.models import registry
    from fmtest.models.clip import CLIP_KEY

    engine, encoder, detector = four_pipeline_models
    with (registry.inject("sam_vit_h", engine), registry.inject(CLIP_KEY, encoder),
          registry.inject(gd.WEIGHT_KEY, detector)):
        yield engine


def sam_pipelines(**options):
    from fmtest.pipelines import pipeline_class
    from fmtest.pipelines.base import PipelineContext

    extra = {"sam_clip": {"points_per_side": 2}, "clip_surgery_sam": {"surgery_depth": 2},  # tiny CLIP: 4 layers
             "saa_plus": {"binarisation": "top_k_union"}}  # predicts without a calibration fit
    return [pipeline_class(name)(PipelineContext(dataset="satsim", options={**options, **extra.get(name, {})}))
            for name in ("gdino_sam", "sam_clip", "clip_surgery_sam", "saa_plus")]


def test_four_pipelines_encode_each_image_once(injected):
    from fmtest.data.sample import Sample

    rng = np.random.default_rng(5)
    samples = [Sample(id=f"s{i}", image=rng.random((48, 64, 3)).astype(np.float32), label="OK") for i in range(3)]
    calls = EncoderCalls(injected.sam.image_encoder)  # the SDPA copy shares its weights and hooks
    before = injected.images_encoded
    for pipeline in sam_pipelines(**FAST_OPTIONS):
        assert pipeline.batch_size == 3
        predictions = pipeline.predict(samples)
        assert [p.mask.shape for p in predictions] == [(48, 64)] * 3
    assert injected.images_encoded - before == len(samples)
    assert calls.images == len(samples)


def test_fast_options_reach_the_engine(injected):
    pipeline = sam_pipelines(**FAST_OPTIONS, sam_compile=True)[0]
    engine = pipeline.engine
    assert engine.sam is injected.sam
    assert (engine.settings.precision, engine.settings.attention, engine.settings.batch_size) == ("bf16", "sdpa", 3)
    assert engine.settings.compile and engine.settings.compile_cache_dir.name == "torchinductor"
    assert sam_pipelines()[1].engine is injected  # defaults: the reference engine itself


@pytest.mark.parametrize("options,message", [
    ({"sam_precision": "fp16"}, "sam_precision must be one of fp32, bf16"),
    ({"sam_attention": "flash"}, "sam_attention must be one of reference, sdpa"),
    ({"sam_batch_size": 0}, "sam_batch_size must be >= 1"),
    ({"gdino_precision": "int8"}, "gdino_precision must be one of fp32, bf16"),
])
def test_bad_fast_path_options_name_the_table(options, message):
    from fmtest.pipelines.saa_plus import SaaPlus

    with pytest.raises(ConfigError, match=message) as e:
        SaaPlus.read_options(options)
    assert "[pipelines.saa_plus]" in str(e.value)
