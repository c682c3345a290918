"""CLIP loader and encoder: every accepted checkpoint format round-trips, bad files fail naming the file."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import build_tiny_clip

from fmtest.errors import DataError, MissingWeights
from fmtest.models import clip, registry
from fmtest.models.clip import (
    CLIP_KEY,
    ClipEncoder,
    load_clip_weights,
    read_clip_state_dict,
)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_clip(seed=1)


@pytest.fixture(scope="module")
def encoder(tiny):
    return ClipEncoder(tiny, model_id="tiny")


def _same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=0, atol=0, msg=name)


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_state_dict_bin_round_trip_through_loader(tmp_path, tiny):
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"state_dict": {f"module.{k}": v.half() for k, v in tiny.state_dict().items()}}, path)
    fresh = load_clip_weights(build_tiny_clip(seed=2), path)
    _same_state({k: v.half() for k, v in tiny.state_dict().items()}, fresh.state_dict())
    assert all(p.dtype == torch.float32 for p in fresh.parameters())


def test_safetensors_round_trip_gives_identical_embeddings(tmp_path, tiny, encoder):
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path))
    fresh = ClipEncoder(load_clip_weights(build_tiny_clip(seed=3), path), "copy")
    images = [_rgb(40, 30, 1), _rgb(50, 70, 2)]
    torch.testing.assert_close(fresh.encode_images(images), encoder.encode_images(images))
    torch.testing.assert_close(fresh.encode_texts(["a defect"]), encoder.encode_texts(["a defect"]))


def test_openai_torchscript_archive_is_read_without_its_extras(tmp_path, tiny):
    # OpenAI's ViT-B-16.pt is a traced CLIP with input_resolution/context_length/vocab_size beside the weights.
    model = build_tiny_clip(seed=1)
    for name, value in (("input_resolution", 64), ("context_length", 77), ("vocab_size", 49408)):
        model.__dict__.pop(name, None)  # open_clip keeps two of them as plain ints
        model.register_buffer(name, torch.tensor(value))
    traced = torch.jit.trace(model, (torch.zeros(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)),
                             check_trace=False, strict=False)
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(traced, str(path))
    assert clip.is_torchscript_archive(path)
    _same_state(read_clip_state_dict(path), tiny.state_dict())
    load_clip_weights(build_tiny_clip(seed=4), path)


def test_plain_torch_save_zip_is_not_mistaken_for_torchscript(tmp_path, tiny):
    path = tmp_path / "w.pt"
    torch.save(tiny.state_dict(), path)
    assert not clip.is_torchscript_archive(path)


def test_wrong_model_checkpoint_names_file_and_keys(tmp_path):
    path = tmp_path / "other.bin"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(DataError, match="other.bin.*missing keys"):
        load_clip_weights(build_tiny_clip(), path)


def test_corrupt_checkpoint_names_file(tmp_path):
    path = tmp_path / "broken.bin"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match="broken.bin"):
        read_clip_state_dict(path)


def test_missing_weights_message_names_file_folder_and_command(tmp_path):
    with pytest.raises(MissingWeights) as err:
        clip.clip_encoder(tmp_path)
    message = str(err.value)
    assert "ViT-B-16.pt" in message and str(tmp_path) in message
    assert f"fmtest weights download {CLIP_KEY}" in message
    with pytest.raises(MissingWeights):
        clip.require_clip(tmp_path)


def test_archive_with_wrong_sha256_is_rejected_before_building(tmp_path):
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(DataError, match=r"ViT-B-16\.pt.*sha256 is [0-9a-f]{64}, expected 5806e77c"):
        clip.clip_encoder(tmp_path)


def test_open_clip_export_is_found_when_openai_archive_is_absent(tmp_path):
    export = tmp_path / clip.OPEN_CLIP_EXPORTS[1]
    export.parent.mkdir()
    export.write_bytes(b"x")
    assert clip.clip_checkpoint(tmp_path) == export
    clip.require_clip(tmp_path)


def test_injected_encoder_needs_no_file(tmp_path, encoder):
    with registry.inject(CLIP_KEY, encoder):
        assert clip.clip_encoder(tmp_path) is encoder
        clip.require_clip(tmp_path)
    with pytest.raises(MissingWeights):
        clip.require_clip(tmp_path)


def test_tokenizer_vocabulary_must_match_model():
    model = open_clip.CLIP(embed_dim=16, vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=32, head_width=32,
                                                                             patch_size=16, image_size=32),
                           text_cfg=open_clip.CLIPTextCfg(vocab_size=1000, width=32, heads=1, layers=1))
    with pytest.raises(DataError, match="49408 tokens but the model expects 1000"):
        ClipEncoder(model, "x")


def test_image_embeddings_are_unit_length_and_batch_independent(encoder):
    images = [_rgb(40, 30, i) for i in range(5)]
    together = encoder.encode_images(images, batch_size=5)
    apart = encoder.encode_images(images, batch_size=2)
    assert together.shape == (5, 32)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)
    assert encoder.encode_images([]).shape == (0, 32)


def test_preprocess_squashes_whole_image_and_normalizes(encoder):
    image = np.zeros((20, 80, 3), dtype=np.uint8)
    image[:, 70:] = 255  # a stripe at the far right survives (a centre crop would cut it)
    batch = encoder.preprocess([image])
    assert batch.shape == (1, 3, 64, 64)
    mean = torch.tensor(open_clip.constants.OPENAI_DATASET_MEAN)
    std = torch.tensor(open_clip.constants.OPENAI_DATASET_STD)
    torch.testing.assert_close(batch[0, :, 10, 0], -mean / std)
    torch.testing.assert_close(batch[0, :, 10, -1], (1 - mean) / std)


def test_preprocess_rejects_greyscale(encoder):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        encoder.preprocess([np.zeros((8, 8), dtype=np.uint8)])


def test_text_ensemble_is_renormalized_mean_of_templates(encoder):
    templates = ["a photo of a {}.", "a close-up of the {}."]
    single = encoder.encode_texts([t.format("scratch") for t in templates])
    expected = torch.nn.functional.normalize(single.mean(dim=0), dim=0)
    torch.testing.assert_close(encoder.encode_text_ensembles(["scratch"], templates)[0], expected)
    both = encoder.encode_text_ensembles(["dent", "scratch"], templates)  # second one comes from the memo
    torch.testing.assert_close(both[1], expected)
    torch.testing.assert_close(both[0], encoder.encode_text_ensembles(["dent"], templates[::-1])[0],
                               atol=1e-6, rtol=1e-5)


def test_official_architecture_uses_quick_gelu():
    model = clip.build_clip()
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert model.visual.image_size == (224, 224) and model.visual.grid_size == (14, 14)


@pytest.mark.slow
def test_full_size_export_loads_through_clip_encoder(tmp_path):
    model = clip.build_clip()
    export = tmp_path / clip.OPEN_CLIP_EXPORTS[0]
    export.parent.mkdir()
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(export))
    loaded = clip.clip_encoder(tmp_path)
    assert loaded.model_id == registry.file_sha256(export)
    _same_state({k: v.half() for k, v in model.state_dict().items()}, loaded.model.state_dict())
