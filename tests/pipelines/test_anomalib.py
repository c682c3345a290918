"""The `anomalib` pipeline: a team's anomalib model as the model under test; and fmtest's PatchCore beside anomalib's.

A tiny PatchCore (ResNet-18 with random weights: nothing is downloaded) is trained here with anomalib's own
Engine on PNG boards, saved as a Lightning checkpoint and a torch export, and fmtest's answers are checked against
anomalib's own predictions on the same images. Needs `pip install 'fmtest[anomalib]'`; importing anomalib and
Lightning costs about 10 s once per module.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from boards import board, sample
from boards import train_set as boards

from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError, Unavailable
from fmtest.models import registry
from fmtest.pipelines.anomalib_model import Anomalib
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.patchcore import (
    FEATURE_LIMIT,
    GridPoints,
    Patchcore,
    gaussian_blur,
    greedy_coreset,
)
from fmtest.util.extras import installed

pytestmark = pytest.mark.skipif(not installed("anomalib"), reason="needs anomalib: pip install 'fmtest[anomalib]'")

SIDE = 64  # the model's input size: images of this size reach it unresized


def crop(image: np.ndarray) -> np.ndarray:
    return image[4:4 + SIDE, 16:16 + SIDE]  # the board's defect (centre 52, 36) stays inside


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.rint(image * 255).astype(np.uint8))
    return path


def read_sample(path: Path, label: str = OK) -> Sample:
    """The PNG as fmtest reads greyscale files: float32 in [0, 1]."""
    return Sample(id=path.stem, image=cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255,
                  label=label)


@dataclass(frozen=True)
class Answer:
    """anomalib's own prediction for one image (Engine.predict), at the model's input size."""

    flagged: bool
    mask: np.ndarray
    normalised_map: np.ndarray


@dataclass
class AnomalibRun:
    """What anomalib trained and what it answered."""

    folder: Path  # the suite folder: checkpoints are named relative to it
    test_files: list[Path]  # SIDE x SIDE boards, defective ones first
    wide_files: list[Path]  # the same boards uncropped (72 x 96): the model resizes them
    train_files: list[Path]
    predicted: list[Answer]
    predicted_wide: list[Answer]
    raw_scores: list[float]  # its torch model's unnormalised image score per test file


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> AnomalibRun:
    from anomalib.data import Folder, PredictDataset
    from anomalib.engine import Engine
    from anomalib.models import Patchcore

    root = tmp_path_factory.mktemp("anomalib")
    data = root / "data"
    train = [write_png(data / "good" / f"{i}.png", crop(board(100 + i)[0])) for i in range(12)]
    for i in range(4):  # faint defects: anomalib's threshold (the F1-best on these) sits below the test's clear ones
        image, mask = board(200 + i, defect=True)
        write_png(data / "bad" / f"{i}.png", crop(0.5 * (image + board(200 + i)[0])))
        write_png(data / "mask" / f"{i}.png", crop(mask.astype(np.float32)))
        write_png(data / "test_good" / f"{i}.png", crop(board(300 + i)[0]))
    test_files = [root / "test" / f"{kind}_{i}.png" for kind in ("bad", "good") for i in range(3)]
    wide_files = [root / "wide" / f.name for f in test_files]
    for i in range(3):
        for files, shape in ((test_files, crop), (wide_files, lambda x: x)):
            write_png(files[i], shape(board(400 + i, defect=True)[0]))
            write_png(files[3 + i], shape(board(500 + i)[0]))

    torch.manual_seed(0)
    datamodule = Folder(name="boards", root=data, normal_dir="good", abnormal_dir="bad", normal_test_dir="test_good",
                        mask_dir="mask", train_batch_size=4, eval_batch_size=4, num_workers=0,
                        val_split_mode="same_as_test", seed=0)
    model = Patchcore(backbone="resnet18", pre_trained=False, coreset_sampling_ratio=0.1, num_neighbors=3,
                      pre_processor=Patchcore.configure_pre_processor(image_size=(SIDE, SIDE)),
                      evaluator=False, visualizer=False)
    engine = Engine(default_root_dir=root / "results", accelerator="cpu", devices=1, logger=False,
                    enable_progress_bar=False, enable_model_summary=False)
    engine.fit(model=model, datamodule=datamodule)
    engine.trainer.save_checkpoint(root / "models" / "patchcore.ckpt")
    exported = engine.export(model, "torch", export_root=root / "export")
    shutil.copy(exported, root / "models" / "patchcore.pt")

    by_file = {Path(path): Answer(bool(batch.pred_label[i]), batch.pred_mask[i].reshape(SIDE, SIDE).numpy(),
                                  batch.anomaly_map[i].reshape(SIDE, SIDE).numpy())
               for folder in ("test", "wide") for batch in engine.predict(model=model, data_path=root / folder)
               for i, path in enumerate(batch.image_path)}
    predicted, predicted_wide = [by_file[f] for f in test_files], [by_file[f] for f in wide_files]
    model.eval()
    with torch.no_grad():  # the batches Engine.predict returns hold transformed images: read the files again
        raw = [float(model.model(model.pre_processor.transform(PredictDataset(f)[0].image[None])).pred_score)
               for f in test_files]
    return AnomalibRun(root, test_files, wide_files, train, predicted, predicted_wide, raw)


def pipeline(run: AnomalibRun, **options) -> Anomalib:
    options = {"checkpoint": "models/patchcore.ckpt", "model": "Patchcore", **options}
    return Anomalib(PipelineContext(dataset="boards", options=options, suite_dir=run.folder, progress=False))


def train_set(run: AnomalibRun) -> SampleSet:
    return SampleSet([SampleRef(f.stem, OK, lambda f=f: read_sample(f)) for f in run.train_files])


def fitted(run: AnomalibRun, **options) -> Anomalib:
    model = pipeline(run, **options)
    model.fit(train_set(run), None)
    return model


@pytest.fixture(scope="module")
def from_checkpoint(run) -> Anomalib:
    """The Lightning checkpoint with its own thresholds: loaded once (building the network costs seconds)."""
    return fitted(run)


# --- agreement with anomalib's own predictions ----------------------------------------------------

def test_lightning_checkpoint_answers_as_anomalib_does(run, from_checkpoint):
    predictions = from_checkpoint.predict([read_sample(f) for f in run.test_files])
    assert {p.label for p in predictions} == {OK, NOK}  # both answers, or the comparison would be vacuous
    for p, theirs, raw in zip(predictions, run.predicted, run.raw_scores):
        assert p.label == (NOK if theirs.flagged else OK)
        assert p.score == pytest.approx(raw, rel=1e-4)  # the raw score: anomalib's normalised one is clamped
        if p.label == NOK:
            np.testing.assert_array_equal(p.mask, theirs.mask)
            np.testing.assert_allclose(p.score_map * 0.5, theirs.normalised_map, atol=1e-5)
        else:
            assert not p.mask.any()


def test_images_of_another_size_get_the_models_answer_laid_onto_them(run, from_checkpoint):
    predictions = from_checkpoint.predict([read_sample(f) for f in run.wide_files])
    assert {p.label for p in predictions} == {OK, NOK}
    for p, theirs in zip(predictions, run.predicted_wide):
        assert p.label == (NOK if theirs.flagged else OK) and p.mask.shape == (72, 96)
        if p.label == NOK:  # anomalib's own mask is at 64 x 64; ours is its map resized, then thresholded
            theirs_here = cv2.resize(theirs.mask.astype(np.uint8), (96, 72),
                                     interpolation=cv2.INTER_NEAREST).astype(bool)
            assert (p.mask & theirs_here).sum() / (p.mask | theirs_here).sum() > 0.85


def test_torch_export_needs_trust_and_then_answers_as_the_checkpoint(run, from_checkpoint):
    untrusted = pipeline(run, checkpoint="models/patchcore.pt", model=None)
    with pytest.raises(ConfigError, match="trust_remote_code = true"):
        untrusted.fit(train_set(run), None)
    samples = [read_sample(f) for f in run.test_files]
    exported = fitted(run, checkpoint="models/patchcore.pt", model=None, trust_remote_code=True).predict(samples)
    for a, b in zip(exported, from_checkpoint.predict(samples)):
        assert a.label == b.label and a.score == b.score and np.array_equal(a.mask, b.mask)


def test_model_id_is_the_checkpoint_sha256_and_the_cache_key_follows_the_file(run, tmp_path):
    shutil.copytree(run.folder / "models", tmp_path / "models")
    path = tmp_path / "models" / "patchcore.ckpt"
    context = PipelineContext(dataset="boards", options={"checkpoint": "models/patchcore.ckpt", "model": "Patchcore"},
                              suite_dir=tmp_path, progress=False)
    before = Anomalib(context)
    model_id, fingerprint = before.model_id, before.fingerprint
    assert model_id == hashlib.sha256(path.read_bytes()).hexdigest()
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["state_dict"]["post_processor._image_threshold"] *= 2  # a retrained model, same file name
    torch.save(checkpoint, path)
    assert before.model_id == model_id  # an instance keeps naming the file it was set up with
    after = Anomalib(context)
    assert after.model_id == hashlib.sha256(path.read_bytes()).hexdigest() != model_id
    assert after.fingerprint != fingerprint


def test_calibrate_sets_the_thresholds_on_good_training_images(run):
    model = fitted(run, threshold="calibrate", image_quantile=0.5, pixel_quantile=0.99)
    train_scores = [model.model.answer(read_sample(f).image).score for f in run.train_files]
    assert model.thresholds.image == pytest.approx(float(np.quantile(train_scores, 0.5)))
    predictions = model.predict([read_sample(f) for f in run.test_files])
    for p, raw in zip(predictions, run.raw_scores):
        assert p.score == pytest.approx(raw, rel=1e-4)
        assert (p.label == NOK) == (p.score > model.thresholds.image)
        if p.label == NOK:
            np.testing.assert_array_equal(p.mask, p.score_map > 1.0)


def test_a_checkpoint_without_thresholds_asks_for_calibration(run, tmp_path):
    checkpoint = torch.load(run.folder / "models" / "patchcore.ckpt", weights_only=False)
    for key in ("post_processor._image_threshold", "post_processor._pixel_threshold"):
        checkpoint["state_dict"][key] = torch.tensor(float("nan"))  # trained without a validation set
    (tmp_path / "models").mkdir()
    torch.save(checkpoint, tmp_path / "models" / "patchcore.ckpt")
    run_here = AnomalibRun(tmp_path, [], [], run.train_files, [], [], [])
    with pytest.raises(DataError, match="threshold = \"calibrate\""):
        pipeline(run_here).fit(train_set(run), None)
    calibrated = fitted(run_here, threshold="calibrate")
    answers = calibrated.predict([read_sample(f) for f in run.test_files])
    assert all(p.error is None and p.label in (OK, NOK) and math.isfinite(p.score) for p in answers)


def test_a_checkpoint_of_a_pretrained_backbone_loads_without_a_download(run, tmp_path, monkeypatch):
    """Trained with `pre_trained = True` (anomalib's default), the weights are in the checkpoint: nothing is fetched."""
    checkpoint = torch.load(run.folder / "models" / "patchcore.ckpt", weights_only=False)
    checkpoint["hyper_parameters"]["pre_trained"] = True
    (tmp_path / "models").mkdir()
    torch.save(checkpoint, tmp_path / "models" / "patchcore.ckpt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_here = AnomalibRun(tmp_path, [], [], run.train_files, [], [], [])
    samples = [read_sample(f) for f in run.test_files[:2]]
    for a, b in zip(fitted(run_here).predict(samples), fitted(run).predict(samples)):
        assert a.score == b.score


# --- configuration and refusals --------------------------------------------------------------------

def test_a_checkpoint_names_its_model_class(run):
    with pytest.raises(ConfigError, match="does not record its anomalib class: set model = "):
        pipeline(run, model=None)
    with pytest.raises(ConfigError, match="did you mean Patchcore"):
        pipeline(run, model="Patchkore").fit(train_set(run), None)
    assert pipeline(run, model="patchcore").model.module.__class__.__name__ == "Patchcore"


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(run):
    with pytest.raises(DataError, match=r"patchcore\.ckpt: not an anomalib Padim checkpoint"):
        pipeline(run, model="Padim").fit(train_set(run), None)


def test_without_a_checkpoint_the_case_is_skipped_naming_the_setting(tmp_path):
    with pytest.raises(Unavailable, match=r"set checkpoint = .* in \[pipelines\.anomalib\]"):
        Anomalib.check_available(PipelineContext(dataset="boards", suite_dir=tmp_path))


def test_a_missing_or_unknown_file_is_one_config_line(tmp_path):
    context = PipelineContext(dataset="boards", options={"checkpoint": "nope.ckpt", "model": "Padim"},
                              suite_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"nope\.ckpt does not exist"):
        Anomalib.check_available(context)
    with pytest.raises(ConfigError, match=r"\.ckpt, \.pt, \.pth, \.xml"):
        Anomalib(PipelineContext(dataset="boards", options={"checkpoint": "model.onnx"}))


@pytest.mark.skipif(installed("openvino"), reason="checks the message shown where openvino is not installed")
def test_an_openvino_model_without_openvino_is_skipped_naming_the_command(tmp_path):
    (tmp_path / "model.xml").write_text("<net/>")
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(Unavailable, match="openvino is not installed: pip install openvino"):
        Anomalib.check_available(PipelineContext(dataset="boards", options={"checkpoint": "model.xml"},
                                                 suite_dir=tmp_path))


# --- fmtest's PatchCore beside anomalib's ----------------------------------------------------------

def test_fmtest_patchcore_scores_as_anomalibs_patchcore_on_the_same_features():
    """Same encoder and memory bank: anomalib's PatchcoreModel gives the same image scores and anomaly maps."""
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    ours = Patchcore(PipelineContext(dataset="toy", options={"calibration_fraction": 0.5, "coreset_ratio": 0.1},
                                     progress=False))
    ours.fit(boards(8), None)
    samples = [sample("bad", seed=200, defect=True), sample("good", seed=300)]

    class SameStages(torch.nn.Module):
        def forward(self, x):
            fine, coarse = ours.stages.forward(x)
            return {"layer2": fine, "layer3": coarse}

    theirs = PatchcoreModel(layers=["layer2", "layer3"], backbone="resnet18", pre_trained=False, num_neighbors=9)
    theirs.feature_extractor = SameStages()
    theirs.memory_bank = (ours.bank.points.values / ours.bank.points.scale).float()
    with torch.no_grad():
        answer = theirs.eval()(torch.stack([ours._encoder_input(s) for s in samples]))
    for i, s in enumerate(samples):
        features = ours._patch_features([s])[0]
        score, patch_scores = ours.bank.score(GridPoints.of(features.flatten(1).T, FEATURE_LIMIT, ours._scale))
        assert score == pytest.approx(float(answer.pred_score[i]), rel=1e-5)
        upsampled = torch.nn.functional.interpolate(patch_scores.reshape(features.shape[-2:])[None, None],
                                                    size=(128, 128), mode="nearest")[0, 0]
        np.testing.assert_allclose(gaussian_blur(upsampled, 4.0).numpy(), answer.anomaly_map[i, 0].double().numpy(),
                                   rtol=1e-4)


def test_fmtest_coreset_is_anomalibs_k_center_greedy():
    """Given the same start and no projection, anomalib's KCenterGreedy picks the same patches."""
    from anomalib.models.components import KCenterGreedy

    points = GridPoints.of(torch.randn(3000, 40, generator=torch.Generator().manual_seed(1)) * 3, FEATURE_LIMIT,
                           2.0 ** 13)
    sampler = KCenterGreedy(embedding=(points.values / points.scale).float(), sampling_ratio=0.05)

    class NoProjection:
        def fit(self, embedding):
            return self

        def transform(self, embedding):
            return embedding

    sampler.model = NoProjection()
    torch.manual_seed(5)
    start = int(torch.randint(high=3000, size=(1,)))
    torch.manual_seed(5)  # anomalib draws its first centre from torch's global generator
    assert sampler.select_coreset_idxs() == greedy_coreset(points, 150, start).tolist()


@pytest.mark.slow  # exporting through ONNX takes ~10 s
@pytest.mark.skipif(not (installed("openvino") and installed("onnxscript")),
                    reason="needs openvino and onnxscript (pip install openvino onnxscript)")
def test_openvino_export_answers_as_the_checkpoint(run, from_checkpoint):
    from anomalib.models import Patchcore

    module = Patchcore.load_from_checkpoint(run.folder / "models" / "patchcore.ckpt", pre_trained=False).eval()
    xml = module.to_openvino(export_root=run.folder / "openvino")
    exported = fitted(run, checkpoint=str(xml.relative_to(run.folder)), model=None)
    assert exported.model_id == registry.combined_id(registry.file_sha256(xml),
                                                     registry.file_sha256(xml.with_suffix(".bin")))
    samples = [read_sample(f) for f in run.test_files]  # at the model's input size: no resizing on either side
    for a, b in zip(exported.predict(samples), from_checkpoint.predict(samples)):
        assert a.label == b.label and np.array_equal(a.mask, b.mask) and a.score_map is None
        assert 0.0 <= a.score <= 1.0  # the graph ends in anomalib's normalisation
