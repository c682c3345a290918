"""A user's own SAM and CLIP files named per pipeline (`sam_checkpoint`, `clip_checkpoint`): found relative to
the suite config, architecture read from the tensors, identified by their own sha256, refused in one line
when wrong. (GroundingDINO files: tests/test_gdino_convert.py.)"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
from fm_fixtures import grey_and_rgb, tiny_encoder, tiny_engine
from tiny_models import build_tiny_clip, build_tiny_sam

from fmtest.errors import ConfigError, DataError
from fmtest.models import clip, registry, sam
from fmtest.models.clip import CLIP_KEY
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.clip_surgery_sam import ClipSurgerySam


@pytest.fixture
def tiny_sam_variant(monkeypatch):
    """A small SAM configuration registered beside vit_h/l/b, so shape inference has a cheap candidate."""
    monkeypatch.setitem(sam.SAM_VARIANTS, "tiny", lambda: build_tiny_sam(seed=99))


@pytest.fixture(scope="module")
def injected():
    """Registry models: injected SAM and CLIP that a named file must take precedence over."""
    return tiny_engine(seed=3), tiny_encoder(image_size=64, layers=2, seed=3)


@pytest.fixture
def registry_models(injected):
    engine, encoder = injected
    with registry.inject("sam_vit_h", engine), registry.inject(CLIP_KEY, encoder):
        yield engine, encoder


def suite(tmp_path: Path, **options) -> PipelineContext:
    """A context whose suite config lives in tmp_path/suite (named files are relative to it)."""
    (tmp_path / "suite").mkdir(exist_ok=True)
    return PipelineContext(dataset="satsim", options={"surgery_depth": 1, **options}, prompt="defect",
                           weights_dir=tmp_path / "no-weights", suite_dir=tmp_path / "suite")


def save(state: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_named_sam_file_is_loaded_inferred_and_identified(tmp_path, tiny_sam_variant, registry_models):
    registry_engine, encoder = registry_models
    original = build_tiny_sam(seed=5)
    path = save({"model": original.state_dict()}, tmp_path / "suite" / "models" / "sam_finetuned.pth")
    pipeline = ClipSurgerySam(suite(tmp_path, sam_checkpoint="models/sam_finetuned.pth"))
    ClipSurgerySam.check_available(pipeline.context)
    engine = pipeline.engine
    assert engine is not registry_engine and engine.model_id == registry.file_sha256(path)
    assert pipeline.model_id == registry.combined_id(registry.file_sha256(path), encoder.model_id)
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(engine.sam.state_dict()[name], tensor, rtol=0, atol=0)
    predictions = pipeline.predict(grey_and_rgb(seed=1, grey_hw=(40, 60), rgb_hw=(50, 30)))
    assert [p.mask.shape for p in predictions] == [(40, 60), (50, 30)]


def test_stated_sam_variant_must_agree_with_the_file(tmp_path, tiny_sam_variant, registry_models):
    save(build_tiny_sam().state_dict(), tmp_path / "suite" / "own.pth")
    pipeline = ClipSurgerySam(suite(tmp_path, sam_checkpoint="own.pth", sam_variant="vit_b"))
    with pytest.raises(DataError, match=r"own\.pth: holds a SAM tiny, but sam_variant = 'vit_b'"):
        _ = pipeline.engine


def test_sam_file_under_an_official_name_must_be_the_official_file(tmp_path, tiny_sam_variant, registry_models):
    save(build_tiny_sam().state_dict(), tmp_path / "suite" / "sam_vit_b_01ec64.pth")
    pipeline = ClipSurgerySam(suite(tmp_path, sam_checkpoint="sam_vit_b_01ec64.pth"))
    with pytest.raises(DataError, match=r"sam_vit_b_01ec64\.pth: sha256 is [0-9a-f]{64}, expected ec2df627.*"
                                        r"give the file another name and set sam_checkpoint") as e:
        _ = pipeline.engine
    assert "\n" not in str(e.value)


def test_registry_file_that_is_not_official_says_how_to_name_it(tmp_path, tiny_sam_variant):
    weights = tmp_path / "weights"
    save(build_tiny_sam().state_dict(), weights / registry.spec("sam_vit_b").filename)
    with pytest.raises(DataError, match="re-download it .*or, if it is your own .*set sam_checkpoint"):
        sam.sam_engine(weights, "cpu", "vit_b")


@pytest.mark.parametrize("content,message", [
    (None, r"sam_checkpoint = 'gone\.pth': .*gone\.pth does not exist"),
    (b"\x00garbage" * 40, r"bad\.pth: not a readable checkpoint"),
    ({"linear.weight": torch.zeros(3, 2)}, r"bad\.pth: tensor shapes match no SAM architecture .*closest is"),
    ({"model": {"note": "no tensors"}}, r"bad\.pth: checkpoint holds no state dict of tensors"),
])
def test_bad_sam_files_are_one_line_naming_the_file(tmp_path, registry_models, content, message):
    name = "gone.pth" if content is None else "bad.pth"
    path = tmp_path / "suite" / name
    if isinstance(content, bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    elif content is not None:
        save(content, path)
    context = suite(tmp_path, sam_checkpoint=name)
    with pytest.raises((ConfigError, DataError), match=message) as e:
        ClipSurgerySam.check_available(context)
        _ = ClipSurgerySam(context).engine
    assert "\n" not in str(e.value)


@pytest.fixture
def tiny_clip_architecture(monkeypatch):
    """The tiny configuration stands in for ViT-B/16 (the full-size load is the slow test below)."""
    monkeypatch.setattr(clip, "build_clip", lambda path: clip.load_clip_weights(build_tiny_clip(seed=8), path))


def test_named_clip_file_is_loaded_and_identified(tmp_path, tiny_clip_architecture, registry_models):
    original = build_tiny_clip(seed=4)
    path = save({"state_dict": original.state_dict()}, tmp_path / "suite" / "clip_finetuned.pt")
    context = suite(tmp_path, clip_checkpoint=str(path))  # absolute paths are taken as they are
    ClipSurgerySam.check_available(context)
    pipeline = ClipSurgerySam(context)
    engine, registry_encoder = registry_models
    assert pipeline.encoder is not registry_encoder
    assert pipeline.encoder.model_id == registry.file_sha256(path)
    assert pipeline.model_id == registry.combined_id(engine.model_id, registry.file_sha256(path))
    texts = ["a scratch"]
    torch.testing.assert_close(pipeline.encoder.encode_texts(texts),
                               clip.ClipEncoder(original, "reference").encode_texts(texts))


def test_bad_clip_files_are_one_line_naming_the_file(tmp_path, tiny_clip_architecture, registry_models):
    with pytest.raises(ConfigError, match=r"clip_checkpoint = 'nowhere\.pt'"):
        ClipSurgerySam.check_available(suite(tmp_path, clip_checkpoint="nowhere.pt"))
    save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "suite" / "other.pt")
    with pytest.raises(DataError, match=r"other\.pt: checkpoint does not match CLIP: .*missing keys") as e:
        _ = ClipSurgerySam(suite(tmp_path, clip_checkpoint="other.pt")).encoder
    assert "\n" not in str(e.value)
    save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "suite" / "ViT-B-16.pt")
    with pytest.raises(DataError, match=r"ViT-B-16\.pt: sha256 is .*expected 5806e77c.*set clip_checkpoint"):
        _ = ClipSurgerySam(suite(tmp_path, clip_checkpoint="ViT-B-16.pt")).encoder


@pytest.mark.slow
def test_random_vit_b_state_dict_runs_through_the_pipeline(tmp_path, registry_models):
    from segment_anything.build_sam import build_sam_vit_b

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = build_sam_vit_b().state_dict()
    path = save(state, tmp_path / "suite" / "sam_vit_b_random.pth")
    pipeline = ClipSurgerySam(suite(tmp_path, sam_checkpoint="sam_vit_b_random.pth"))
    assert pipeline.engine.sam.image_encoder.patch_embed.proj.out_channels == 768  # vit_b, read from the shapes
    assert pipeline.engine.model_id == registry.file_sha256(path)
    image = grey_and_rgb(seed=2, grey_hw=(30, 40), rgb_hw=(20, 20))[:1]
    assert pipeline.predict(image)[0].mask.shape == (30, 40)


@pytest.mark.slow
def test_full_size_clip_file_runs_through_the_pipeline(tmp_path, registry_models):
    from safetensors.torch import save_file

    model = clip.build_clip()
    path = tmp_path / "suite" / "my_clip.safetensors"
    path.parent.mkdir(parents=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path))
    pipeline = ClipSurgerySam(suite(tmp_path, clip_checkpoint="my_clip.safetensors"))
    assert pipeline.encoder.model_id == registry.file_sha256(path)
    prediction = pipeline.predict(grey_and_rgb(seed=3, grey_hw=(30, 40), rgb_hw=(20, 20))[:1])[0]
    assert prediction.mask.shape == (30, 40) and np.isfinite(prediction.score)
