"""Original-layout GroundingDINO checkpoints converted to transformers' model at load time.

The reference is the upstream model class itself (tests/gdino_upstream.py): its state dict supplies the
original keys and shapes, its forward pass the outputs the converted model must reproduce.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gdino_upstream import build_upstream, vocab_folder
from tiny_models import build_tiny_sam

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError, DataError, MissingWeights
from fmtest.models import gdino_convert, registry
from fmtest.models import grounding_dino as gd
from fmtest.models.registry import WeightSpec
from fmtest.models.sam import SamEngine
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.gdino_sam import GroundingDinoSam

CAPTION = "crack . scratch on metal ."


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    return vocab_folder(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def upstream_models(vocab):
    """Scaled-down original models by configuration name, each built once per module."""
    built = {}

    def get(name: str):
        if name not in built:
            built[name] = build_upstream(name, vocab, small=True)
        return built[name]

    return get


@pytest.fixture(params=["swint_ogc", "swinb_cogcoor"])
def upstream(request, upstream_models):
    return request.param, upstream_models(request.param)


@pytest.fixture
def original_file(tmp_path, upstream_models):
    """Writes the scaled-down Swin-T model as the original code base saves it: weights under "model", with
    the training arguments beside them."""

    def write(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {f"module.{k}": v for k, v in upstream_models("swint_ogc").state_dict().items()}
        torch.save({"model": state, "args": argparse.Namespace(backbone="swin_T_224_1k")}, path)
        return path

    return write


@pytest.fixture
def weights_with_vocabulary(tmp_path, vocab) -> Path:
    folder = tmp_path / "weights" / registry.spec(gd.VOCAB_KEY).filename
    folder.mkdir(parents=True)
    shutil.copy(vocab / "vocab.txt", folder / "vocab.txt")
    return folder.parent


def _target_keys(model) -> dict[str, tuple]:
    """transformers' parameters that need a source (buffers are derived; the backbone's ignorable norm is not)."""
    buffers = {name for name, _ in model.named_buffers()}
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if k not in buffers and ".swin.layernorm." not in k}


def _assert_covers(original_state: dict, path: Path) -> None:
    from transformers import GroundingDinoForObjectDetection

    config = gdino_convert.config_from_shapes(original_state, path)
    with torch.device("meta"):
        target = GroundingDinoForObjectDetection(config)
    converted = {k: tuple(v.shape) for k, v in gdino_convert.convert_state_dict(original_state, path).items()}
    assert converted.keys() <= set(target.state_dict())  # nothing lands outside the model
    assert {k: converted.get(k) for k in _target_keys(target)} == _target_keys(target)  # every parameter, same shape


def test_mapping_covers_every_parameter_scaled_down(upstream):
    name, model = upstream
    _assert_covers(model.state_dict(), Path(f"{name}.pth"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swint_ogc", "swinb_cogcoor"])
def test_mapping_covers_every_parameter_full_size(name, vocab):
    state = build_upstream(name, vocab, small=False).state_dict()
    config = gdino_convert.config_from_shapes(state, Path(f"{name}.pth"))
    swin = config.backbone_config
    expected_swin = {"swint_ogc": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
                     "swinb_cogcoor": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12)}[name]
    assert (swin.embed_dim, list(swin.depths), list(swin.num_heads), swin.window_size) == expected_swin
    assert (config.d_model, config.num_queries, config.encoder_layers, config.decoder_layers) == (256, 900, 6, 6)
    assert (config.text_config.hidden_size, config.text_config.num_attention_heads) == (768, 12)
    _assert_covers(state, Path(f"{name}.pth"))


def test_converted_model_reproduces_upstream_outputs(upstream):
    name, model = upstream
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # as saved from DistributedDataParallel
    state["bert.embeddings.position_ids"] = torch.arange(512)[None]  # older transformers saved this buffer
    converted = gdino_convert.build_from_original(state, Path(f"{name}.pth"))
    pixels = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    tokens = model.tokenizer([CAPTION] * 2, padding="longest", return_tensors="pt")
    with torch.no_grad():
        expected = model(pixels, captions=[CAPTION] * 2)
        ours = converted(pixel_values=pixels, pixel_mask=torch.ones(2, 96, 128, dtype=torch.long), **tokens)
    finite = torch.isfinite(expected["pred_logits"])
    assert torch.equal(finite, torch.isfinite(ours.logits)) and finite.any()
    torch.testing.assert_close(ours.logits[finite], expected["pred_logits"][finite], rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.pred_boxes, expected["pred_boxes"], rtol=0, atol=1e-4)
    assert expected["pred_boxes"].std() > 0.05  # boxes vary: the comparison is not of constants


def test_shapes_set_the_architecture(upstream):
    name, model = upstream
    config = gdino_convert.config_from_shapes(model.state_dict(), Path("x.pth"))
    swin = config.backbone_config
    expected_swin = {"swint_ogc": (16, [1, 1, 2, 1], [1, 1, 2, 2], 4), "swinb_cogcoor": (16, [1, 1, 3, 1], [1, 2, 2, 4], 6)}
    assert (swin.embed_dim, list(swin.depths), list(swin.num_heads), swin.window_size) == expected_swin[name]
    assert list(swin.out_indices) == [2, 3, 4]
    assert (config.d_model, config.num_queries, config.encoder_layers, config.decoder_layers) == (256, 20, 1, 2)
    assert (config.encoder_ffn_dim, config.num_feature_levels, config.encoder_n_points) == (64, 4, 4)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (128, 1)


def test_foreign_or_incomplete_checkpoints_are_refused_with_the_file(upstream):
    state = upstream[1].state_dict()
    path = Path("/models/finetuned.pth")
    extra = {**state, "transformer.encoder.extra_head.weight": torch.zeros(2)}
    with pytest.raises(DataError, match=r"finetuned\.pth: 1 tensors unknown .*extra_head"):
        gdino_convert.build_from_original(extra, path)
    missing = {k: v for k, v in state.items() if not k.startswith("transformer.decoder.layers.1.linear2.")}
    with pytest.raises(DataError, match=r"finetuned\.pth: .*2 weights missing .*decoder\.layers\.1\.fc2"):
        gdino_convert.build_from_original(missing, path)
    with pytest.raises(DataError, match=r"finetuned\.pth: no Swin backbone stages"):
        gdino_convert.build_from_original({"w": torch.zeros(1)}, path)
    untied = dict(state)
    untied["bbox_embed.1.layers.0.weight"] = state["bbox_embed.1.layers.0.weight"] + 1
    with pytest.raises(DataError, match="separate box heads"):
        gdino_convert.build_from_original(untied, path)



def test_vocabulary_in_the_registry_is_the_tokenizer_the_tests_use(vocab):
    spec = registry.spec(gd.VOCAB_KEY)  # the test vocabulary is byte-identical to bert-base-uncased's vocab.txt
    assert (registry.file_sha256(vocab / "vocab.txt"), (vocab / "vocab.txt").stat().st_size) == (spec.sha256, spec.size)


def test_registry_original_file_loads_when_the_folder_is_absent(weights_with_vocabulary, original_file, monkeypatch):
    path = original_file(weights_with_vocabulary / "groundingdino_swint_ogc.pth")
    sha = registry.file_sha256(path)  # stands in for the official file: the registry is told its hash
    official = registry.spec(gd.ORIGINAL_KEY)
    monkeypatch.setitem(registry.WEIGHTS, gd.ORIGINAL_KEY, WeightSpec(
        key=official.key, filename=official.filename, size=None, sha256=sha, url=official.url,
        license=official.license, description=official.description))
    gd.require(weights_with_vocabulary)
    detector = gd.grounding_dino(weights_with_vocabulary, "cpu")
    assert detector.model_id == sha and len(detector.tokenizer) == 30_522
    assert gd.grounding_dino(weights_with_vocabulary, "cpu") is detector  # loaded once per process
    state = registry.load_state_dict(path)  # the training arguments beside the weights are allowed
    expected = gdino_convert.convert_state_dict({k.removeprefix("module."): v for k, v in state.items()}, path)
    loaded = detector.model.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in expected.items())


def test_original_name_with_another_hash_must_be_renamed(weights_with_vocabulary, original_file):
    original_file(weights_with_vocabulary / "groundingdino_swint_ogc.pth")
    with pytest.raises(DataError, match=r"groundingdino_swint_ogc\.pth: sha256 is [0-9a-f]{64}, expected 3b3ca256.*"
                                        r"give the file another name and set gdino_checkpoint") as e:
        gd.grounding_dino(weights_with_vocabulary, "cpu")
    assert "\n" not in str(e.value)


def gdino_sam(tmp_path: Path, weights: Path, **options) -> GroundingDinoSam:
    return GroundingDinoSam(PipelineContext(dataset="satsim", options=options, weights_dir=weights,
                                            suite_dir=tmp_path / "suite"))


def test_gdino_checkpoint_names_a_fine_tuned_original_file(tmp_path, weights_with_vocabulary, original_file):
    path = original_file(tmp_path / "suite" / "models" / "gdino_finetuned.pth")
    with registry.inject("sam_vit_h", SamEngine(build_tiny_sam(), "tiny-sam")):
        pipeline = gdino_sam(tmp_path, weights_with_vocabulary, gdino_checkpoint="models/gdino_finetuned.pth")
        GroundingDinoSam.check_available(pipeline.context)
        assert pipeline.detector.model_id == registry.file_sha256(path)
        assert pipeline.model_id == registry.combined_id(registry.file_sha256(path), "tiny-sam")


@pytest.mark.slow  # the original 800-pixel resize makes even the scaled-down model take seconds per image
def test_original_file_runs_through_the_pipeline(tmp_path, weights_with_vocabulary, original_file):
    original_file(tmp_path / "suite" / "gdino.pth")
    with registry.inject("sam_vit_h", SamEngine(build_tiny_sam(), "tiny-sam")):
        pipeline = gdino_sam(tmp_path, weights_with_vocabulary, gdino_checkpoint="gdino.pth", box_threshold=0.0)
        rng = np.random.default_rng(3)
        [prediction] = pipeline.predict([Sample(id="a", image=rng.random((48, 64)).astype(np.float32), label="NOK")])
    assert prediction.mask.shape == (48, 64) and prediction.score > 0  # every query passes a zero threshold


def test_gdino_checkpoint_problems_are_one_line(tmp_path, weights_with_vocabulary, original_file):
    with registry.inject("sam_vit_h", SamEngine(build_tiny_sam(), "tiny-sam")):
        with pytest.raises(ConfigError, match=r"\[pipelines.gdino_sam\]: gdino_checkpoint = 'none.pth': .* does not exist"):
            GroundingDinoSam.check_available(gdino_sam(tmp_path, weights_with_vocabulary,
                                                       gdino_checkpoint="none.pth").context)
        sam_like = tmp_path / "suite" / "sam_like.pth"
        sam_like.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(2)}, sam_like)
        with pytest.raises(DataError, match=r"sam_like\.pth: not a GroundingDINO checkpoint of the IDEA-Research layout"):
            _ = gdino_sam(tmp_path, weights_with_vocabulary, gdino_checkpoint="sam_like.pth").detector
        original_file(tmp_path / "suite" / "mine.pth")
        no_vocabulary = tmp_path / "empty-weights"
        with pytest.raises(MissingWeights, match=r"bert-base-uncased/vocab.txt not found in .*empty-weights"):
            GroundingDinoSam.check_available(gdino_sam(tmp_path, no_vocabulary, gdino_checkpoint="mine.pth").context)
