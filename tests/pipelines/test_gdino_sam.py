"""gdino_sam on injected random-weight tiny models: masks, labels, options, skips, and the suite end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fakes import REPO, TESTS
from tiny_models import build_tiny_grounding_dino, build_tiny_sam, vocab_folder

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError, MissingWeights
from fmtest.models import grounding_dino as gd
from fmtest.models import registry
from fmtest.models.sam import SamEngine
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.gdino_sam import GroundingDinoSam
from fmtest.pipelines.saa_plus import SaaPlus

REPO = REPO


class EncoderCalls:
    def __init__(self, sam):
        self.images = 0
        sam.image_encoder.register_forward_hook(lambda m, inputs, out: self._count(inputs[0]))

    def _count(self, batch):
        self.images += batch.shape[0]


@pytest.fixture(scope="module")
def tiny_model_set():
    tokenizer = gd.load_bert_tokenizer(vocab_folder())
    sam = build_tiny_sam()
    return SamEngine(sam, "tiny-sam"), build_tiny_grounding_dino(tokenizer, num_queries=5), EncoderCalls(sam)


@pytest.fixture
def tiny_models(tiny_model_set):
    """Built once per module, injected per test so tests without it see the real (missing) weights."""
    engine, detector, _ = tiny_model_set
    with registry.inject("sam_vit_h", engine), registry.inject(gd.WEIGHT_KEY, detector):
        yield tiny_model_set


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(1)
    grey = rng.random((70, 90)).astype(np.float32)  # SAT-like single channel
    rgb = rng.random((64, 48, 3)).astype(np.float32)
    return [Sample(id="grey", image=grey, label="NOK"), Sample(id="rgb", image=rgb, label="OK")]


def context(**options) -> PipelineContext:
    return PipelineContext(dataset="satsim", options=options, prompt="defect", weights_dir=Path("/nonexistent"))


def test_mask_is_union_of_sam_masks_from_detected_boxes(tiny_models, samples):
    engine, detector, _ = tiny_models
    predictions = GroundingDinoSam(context()).predict(samples)
    # the same explicit conversion the pipeline must make: greyscale replicated into 3 uint8 channels
    rgbs = [np.round(s.image * 255).astype(np.uint8) for s in samples]
    rgbs = [np.repeat(r[..., None], 3, 2) if r.ndim == 2 else r for r in rgbs]
    detections = detector.detect(rgbs, "defect", 0.35, 0.25)  # batched, as the pipeline does
    for sample, rgb, found, prediction in zip(samples, rgbs, detections, predictions, strict=True):
        assert len(found) > 0
        masks, _ = engine.masks_from_boxes_batched(rgb, sample.sha256, found.boxes_xyxy)
        assert prediction.mask.shape == sample.image.shape[:2] and prediction.mask.dtype == bool
        np.testing.assert_array_equal(prediction.mask, masks.any(axis=0))
        assert prediction.label == ("NOK" if prediction.mask.any() else "OK")
        assert prediction.score == pytest.approx(float(found.scores.max()))


def test_no_box_gives_empty_mask_and_ok(tiny_models, samples):
    predictions = GroundingDinoSam(context(box_threshold=1.0)).predict(samples)
    for sample, prediction in zip(samples, predictions, strict=True):
        assert prediction.label == "OK" and prediction.score == 0.0
        assert prediction.mask.shape == sample.image.shape[:2] and not prediction.mask.any()


def test_two_sam_pipelines_share_one_embedding_per_image(tiny_models, samples):
    _, _, calls = tiny_models
    fresh = [Sample(id=f"new{i}", image=s.image[::-1].copy(), label=s.label) for i, s in enumerate(samples)]
    before = calls.images
    GroundingDinoSam(context()).predict(fresh)
    SaaPlus(PipelineContext(dataset="satsim", prompt="defect", options={"binarisation": "top_k_union"})).predict(fresh)
    assert calls.images - before == len(fresh)


def test_model_id_combines_both_models(tiny_models):
    engine, detector, _ = tiny_models
    model_id = GroundingDinoSam(context()).model_id
    assert model_id == registry.combined_id(detector.model_id, engine.model_id) and len(model_id) == 64


@pytest.mark.parametrize("options,message", [
    ({"box_treshold": 0.3}, "unknown option"),
    ({"box_threshold": "high"}, "box_threshold must be float"),
    ({"text_threshold": 1.5}, r"text_threshold must be in \[0, 1\]"),
    ({"sam_variant": "vit_x"}, "sam_variant must be one of"),
])
def test_bad_options_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        GroundingDinoSam.check_available(context(**options))


def test_missing_weights_names_file_folder_and_command(tmp_path):
    with pytest.raises(MissingWeights) as e:
        GroundingDinoSam.check_available(PipelineContext(dataset="satsim", weights_dir=tmp_path))
    message = str(e.value)
    assert str(tmp_path) in message and "fmtest weights download" in message


SUITE_CONFIG = """
[datasets.satsim]
n_train = 4
n_test_good = 3
n_test_defective = 3
size = 128
"""

INJECT_PLUGIN = '''
"""Injects random-weight tiny SAM and GroundingDINO for the whole pytest session."""
import contextlib
from tiny_models import inject_tiny_sam_and_grounding_dino

_models = contextlib.ExitStack()

def pytest_configure(config):
    inject_tiny_sam_and_grounding_dino(_models, num_queries=3)

def pytest_unconfigure(config):
    _models.close()
'''


def run_suite(tmp_path: Path, pipelines: str, inject: bool) -> subprocess.CompletedProcess:
    (tmp_path / "suite.toml").write_text(SUITE_CONFIG)
    (tmp_path / "empty_weights").mkdir(exist_ok=True)
    (tmp_path / "tiny_models_plugin.py").write_text(textwrap.dedent(INJECT_PLUGIN))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)]),
           "FMTEST_TEST_VOCAB": str(vocab_folder())}
    args = [sys.executable, "-m", "pytest", str(REPO / "suites"), f"--fm-pipeline={pipelines}",
            "--fm-dataset=satsim", f"--fm-config={tmp_path / 'suite.toml'}",
            f"--fm-weights={tmp_path / 'empty_weights'}", f"--fm-results={tmp_path / 'results.json'}",
            "--fm-no-cache", "-p", "no:cacheprovider", "-rs", "-q"]
    if inject:
        args[3:3] = ["-p", "tiny_models_plugin"]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def test_suite_skips_without_weights_with_precise_message(tmp_path):
    run = run_suite(tmp_path, "gdino_sam,saa_plus", inject=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "2 skipped" in out
    expected = f"grounding-dino-tiny/model.safetensors not found in {tmp_path / 'empty_weights'}"
    skip_line = next(line for line in out.splitlines() if line.startswith("SKIPPED [2]"))
    assert expected in skip_line and "fmtest weights download groundingdino_swint_ogc" in skip_line


@pytest.mark.slow
def test_suite_runs_end_to_end_with_injected_tiny_models(tmp_path):
    import json

    run = run_suite(tmp_path, "gdino_sam,saa_plus", inject=True)
    out = run.stdout + run.stderr
    summary = out.strip().splitlines()[-1]  # pytest's closing line: no case may be skipped or errored
    assert "skipped" not in summary and "error" not in summary, out
    cases = {c["pipeline"]: c for c in json.loads((tmp_path / "results.json").read_text())["cases"]}
    assert set(cases) == {"gdino_sam", "saa_plus"}
    for case in cases.values():
        assert case["outcome"] in ("passed", "failed")
        assert len(case["images"]) == 6 and 0.0 <= case["metrics"]["iou"] <= 1.0
        assert case["metrics"]["images_per_second"] > 0
        assert case["model_sha256"] == registry.combined_id("tiny-random-gdino-0", "tiny-sam")
