"""Original-layout GroundingDINO checkpoints converted to transformers' model at load time.

The reference is the upstream model class itself (tests/gdino_upstream.py): its state dict supplies the
original keys and shapes, its forward pass the outputs the converted model must reproduce.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch

from fmtest.errors import DataError
from fmtest.models import gdino_convert
from gdino_upstream import build_upstream, vocab_folder

CAPTION = "crack . scratch on metal ."


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    return vocab_folder(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module", params=["swint_ogc", "swinb_cogcoor"])
def upstream(request, vocab):
    """The scaled-down original model of each official configuration, built once per module."""
    return request.param, build_upstream(request.param, vocab, small=True)


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

