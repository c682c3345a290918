"""Weights registry, safe checkpoint loading through the real SAM loader path, and `fmtest weights` commands."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch
from tiny_models import build_tiny_sam

from fmtest.cli import weights as commands
from fmtest.errors import DataError, MissingWeights
from fmtest.models import registry, sam
from fmtest.models.registry import WeightSpec


def test_weights_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(tmp_path / "env"))
    assert registry.weights_dir(tmp_path / "cli") == tmp_path / "cli"
    assert registry.weights_dir(None) == tmp_path / "env"
    monkeypatch.delenv(registry.WEIGHTS_ENV)
    assert registry.weights_dir(None) == Path("~/.cache/fmtest/weights").expanduser()


def test_registry_entries_are_complete():
    assert {"sam_vit_h", "groundingdino_swint_ogc", "clip_vit_b16_openai"} <= set(registry.WEIGHTS)
    h = registry.WEIGHTS["sam_vit_h"]
    assert (h.filename, h.size) == ("sam_vit_h_4b8939.pth", 2_564_550_879)
    assert h.sha256 == "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"
    for spec in registry.WEIGHTS.values():
        assert spec.url.startswith("https://") and spec.license
        assert spec.sha256 is None or len(spec.sha256) == 64
        assert not spec.is_folder or spec.main_file in {f.name for f in spec.files}


def test_missing_weights_message(tmp_path):
    with pytest.raises(MissingWeights) as e:
        registry.resolve("sam_vit_h", tmp_path)
    message = str(e.value)
    assert "sam_vit_h_4b8939.pth not found in " + str(tmp_path) in message
    assert "`fmtest weights download sam_vit_h`" in message
    with pytest.raises(MissingWeights, match="unknown weights 'sam_vit_x'"):
        registry.resolve("sam_vit_x", tmp_path)


def test_inject_is_scoped(tmp_path):
    model = object()
    with registry.inject("sam_vit_b", model):
        registry.require("sam_vit_b", tmp_path)
        assert registry.injected("sam_vit_b") is model
    assert registry.injected("sam_vit_b") is None
    with pytest.raises(MissingWeights):
        registry.require("sam_vit_b", tmp_path)


def test_file_sha256_recomputes_after_change(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert registry.file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    path.write_bytes(b"abcd")
    assert registry.file_sha256(path) == "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"


@pytest.fixture
def tiny_variant(monkeypatch, tmp_path):
    """A 'tiny' SAM variant registered like the official ones, with its checkpoint written by the test."""
    original = build_tiny_sam(seed=5)
    path = tmp_path / "sam_tiny.pth"
    torch.save(original.state_dict(), path)
    sha = registry.file_sha256(path)
    monkeypatch.setitem(sam.SAM_VARIANTS, "tiny", lambda: build_tiny_sam(seed=99))
    monkeypatch.setitem(registry.WEIGHTS, "sam_tiny", WeightSpec(
        key="sam_tiny", filename=path.name, size=path.stat().st_size, sha256=sha, url="https://example.invalid/",
        license="test", description="tiny SAM written by the test"))
    return original, path, sha


def test_sam_checkpoint_round_trip_through_loader(tiny_variant, tmp_path):
    original, path, sha = tiny_variant
    engine = sam.sam_engine(tmp_path, "cpu", variant="tiny")
    assert engine.model_id == sha
    loaded = engine.sam.state_dict()
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)
    assert sam.sam_engine(tmp_path, "cpu", variant="tiny") is engine  # once per process


def test_sam_loader_rejects_checksum_mismatch(tiny_variant, tmp_path, monkeypatch):
    _, path, _ = tiny_variant
    monkeypatch.setitem(registry.WEIGHTS, "sam_tiny", WeightSpec(
        key="sam_tiny", filename=path.name, size=None, sha256="0" * 64, url="https://example.invalid/",
        license="test", description="wrong hash"))
    with pytest.raises(DataError, match="sha256 is .* expected 0000") as e:
        sam.sam_engine(tmp_path, "cpu", variant="tiny")
    assert str(path.resolve()) in str(e.value)


def test_garbage_and_wrong_checkpoints_are_named(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    with pytest.raises(DataError, match="not a readable checkpoint") as e:
        sam.load_sam_weights(build_tiny_sam(), garbage)
    assert str(garbage) in str(e.value)
    wrong_keys = tmp_path / "wrong_keys.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, wrong_keys)
    with pytest.raises(DataError, match="missing keys") as e:
        sam.load_sam_weights(build_tiny_sam(), wrong_keys)
    assert str(wrong_keys) in str(e.value)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save(build_tiny_sam(embed_dim=32).state_dict(), wrong_shape)
    with pytest.raises(DataError, match="does not match Sam"):
        sam.load_sam_weights(build_tiny_sam(embed_dim=64), wrong_shape)


def test_namespace_in_checkpoint_is_allowed_other_pickles_are_not(tmp_path):
    state = {"w": torch.ones(3)}
    with_namespace = tmp_path / "official_style.pth"
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-4)}, with_namespace)
    assert registry.load_state_dict(with_namespace).keys() == {"w"}
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": state, "hook": pickle.PicklingError("x")}, unsafe)
    with pytest.raises(DataError, match="not a readable checkpoint"):
        registry.load_state_dict(unsafe)


def test_safetensors_and_empty_checkpoints(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(4.0)}, str(path))
    torch.testing.assert_close(registry.load_state_dict(path)["a"], torch.arange(4.0))
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(DataError, match="no state dict"):
        registry.load_state_dict(empty)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_list_shows_paths_sizes_and_presence(tmp_path, capsys):
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert run_cli(["weights", "list", "--weights", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    h_line = next(line for line in out.splitlines() if line.startswith("sam_vit_h "))
    assert str(tmp_path / "sam_vit_h_4b8939.pth") in h_line and "2.39 GiB" in h_line and "missing" in h_line
    assert "present" in next(line for line in out.splitlines() if line.startswith("sam_vit_b "))
    gdino = next(line for line in out.splitlines() if line.startswith("groundingdino_swint_ogc "))
    assert "1a2412ef99bd" in gdino and "657.4 MiB" in gdino and str(tmp_path / "grounding-dino-tiny") in gdino
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    for key, file, size, sha in (("groundingdino_swint_ogc_pth", "groundingdino_swint_ogc.pth", "661.8 MiB", "3b3ca2563c77"),
                                 ("groundingdino_swinb_cogcoor_pth", "groundingdino_swinb_cogcoor.pth", "894.6 MiB",
                                  "46270f7a822e"),
                                 ("bert_base_uncased_vocab", "bert-base-uncased", "226.1 KiB", "07eced375cec")):
        assert str(tmp_path / file) in lines[key] and size in lines[key] and sha in lines[key], lines[key]


def test_verify_reports_bad_size_and_hash(tmp_path, capsys, monkeypatch):
    good = tmp_path / "sam_vit_b_01ec64.pth"
    good.write_bytes(b"abc")
    monkeypatch.setitem(registry.WEIGHTS, "sam_vit_b", WeightSpec(
        key="sam_vit_b", filename=good.name, size=3,
        sha256="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", url="https://x/", license="t",
        description="t"))
    assert run_cli(["weights", "verify", "--weights", str(tmp_path)]) == 0
    assert "sam_vit_b: OK" in capsys.readouterr().out
    good.write_bytes(b"abd")
    assert run_cli(["weights", "verify", "sam_vit_b", "--weights", str(tmp_path)]) == 1
    assert "BAD SHA256" in capsys.readouterr().out
    assert run_cli(["weights", "verify", "sam_vit_h", "--weights", str(tmp_path)]) == 1
    assert "MISSING" in capsys.readouterr().out
