"""The supervised reference: backbone choice, labelled fitting, per-image feature memo, and a real ELPV run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from fmtest.data.folds import stratified_folds
from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError, MissingWeights
from fmtest.models import imagenet_cnn, registry
from fmtest.pipelines import PIPELINES, TASKS, pipeline_class
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.supervised import Supervised


def context(tmp_path, **options) -> PipelineContext:
    return PipelineContext(dataset="toy", options={"input_size": 32, "hidden_units": 16, "max_iter": 200, **options},
                           weights_dir=tmp_path)


def toy_set(n_ok: int, n_nok: int, seed: int = 0) -> SampleSet:
    """Grey OK parts; NOK parts carry a bright bar: separable by any feature extractor."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_ok + n_nok):
        image = np.clip(0.3 + 0.05 * rng.normal(size=(40, 40)), 0, 1).astype(np.float32)
        label = OK if i < n_ok else NOK
        if label == NOK:
            image[rng.integers(5, 30):, rng.integers(5, 30):][:6, :6] = 1.0
        samples.append(Sample(id=f"toy{i:03d}", image=image, label=label))
    return SampleSet([SampleRef(s.id, s.label, lambda s=s: s) for s in samples])


class CountingResnet(torch.nn.Module):
    """torchvision ResNet-18 (random weights) that counts the images it has seen."""

    def __init__(self):
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=10)
        self.seen = 0
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(self.net, name))
        self.conv1.register_forward_hook(lambda module, args, out: setattr(self, "seen", self.seen + len(out)))


@pytest.fixture
def tiny_resnet():
    torch.manual_seed(0)
    cnn = imagenet_cnn.ImageNetCnn(CountingResnet().eval(), "random-resnet18")
    with registry.inject(imagenet_cnn.RESNET50_KEY, cnn):
        yield cnn


def test_registered_as_a_classifier_scored_by_five_fold_cross_validation():
    assert "supervised" in PIPELINES and TASKS["supervised"] == "classification"
    assert pipeline_class("supervised").cross_validation_folds == 5
    assert pipeline_class("padim").cross_validation_folds == 0


def test_resnet50_when_present_learns_labelled_images_and_computes_each_image_once(tmp_path, tiny_resnet):
    pipeline = Supervised(context(tmp_path))
    assert pipeline.backbone == "resnet50" and pipeline.model_id == "resnet50:random-resnet18"
    data = toy_set(12, 12)
    train, held_out = stratified_folds(data, 4, seed=0)[0]
    pipeline.fit(train, None)
    predictions = pipeline.predict(list(held_out))
    assert [p.label for p in predictions] == held_out.labels
    assert all(0.0 <= p.score <= 1.0 for p in predictions)
    assert tiny_resnet.module.seen == len(data)
    again = Supervised(context(tmp_path, seed=1))  # another fold: same images, no new forward pass
    again.fit(SampleSet(data.refs[:6] + data.refs[-6:]), None)
    assert tiny_resnet.module.seen == len(data)


def test_efficientnet_lite0_without_the_resnet_checkpoint(tmp_path):
    pipeline = Supervised(context(tmp_path))
    assert pipeline.backbone == "efficientnet_lite0"
    assert pipeline.model_id.startswith("efficientnet_lite0:") and len(pipeline.model_id) == 19 + 64
    features = pipeline.features(list(toy_set(1, 1)))
    assert features.shape == (2, 1280) and np.isfinite(features).all()


def test_forced_resnet50_without_its_checkpoint_is_unavailable(tmp_path):
    Supervised.check_available(context(tmp_path))
    with pytest.raises(MissingWeights,
                       match="resnet50-0676ba61.pth not found.*fmtest weights download resnet50_imagenet"):
        Supervised.check_available(context(tmp_path, backbone="resnet50"))


def test_fit_needs_both_labels(tmp_path, tiny_resnet):
    with pytest.raises(DataError, match="learns from labelled OK and NOK images.*hold 0 NOK.*5-fold cross-validation"):
        Supervised(context(tmp_path)).fit(toy_set(6, 0), None)
    with pytest.raises(RuntimeError, match="before fit"):
        Supervised(context(tmp_path)).predict(list(toy_set(1, 0)))


@pytest.mark.parametrize("options,message", [
    ({"backbone": "vgg16"}, "backbone must be one of auto, resnet50, efficientnet_lite0"),
    ({"decision_threshold": 1.5}, "decision_threshold must be in"),
    ({"hidden_units": 0}, "hidden_units must be >= 1"),
    ({"alpha": -1.0}, "alpha must not be negative"),
    ({"layers": 2}, "unknown option"),
])
def test_bad_options(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        Supervised.check_available(context(tmp_path, **options))


def test_auto_runs_the_resnet_file_in_the_weights_folder_and_never_falls_back_from_it(tmp_path):
    """The study's "pre-trained ResNet": present, it is what runs; a wrong file is refused, not swapped out."""
    (tmp_path / "resnet50-0676ba61.pth").write_bytes(b"not the published file")
    pipeline = Supervised(context(tmp_path))
    assert pipeline.backbone == "resnet50"
    with pytest.raises(DataError, match="does not start with 0676ba61"):
        pipeline.features(list(toy_set(1, 1)))


def test_torchvision_checkpoint_with_another_hash_is_rejected(tmp_path):
    (tmp_path / "resnet50-0676ba61.pth").write_bytes(b"not the published file")
    with pytest.raises(DataError, match="does not start with 0676ba61"):
        imagenet_cnn.load_resnet(imagenet_cnn.RESNET50_KEY, tmp_path)


def elpv_cells(n_good: int, n_defective: int):
    from fmtest.data.elpv import Elpv, ElpvOptions

    return Elpv(ElpvOptions(n_train=0, n_test_good=n_good, n_test_defective=n_defective, seed=1)).test


def test_real_elpv_cells_are_fitted_from_their_labels(tmp_path):
    """Real 300 px greyscale electroluminescence cells go through the bundled backbone and the MLP."""
    cells = elpv_cells(15, 15)
    pipeline = Supervised(PipelineContext(dataset="elpv", options={"input_size": 112}, weights_dir=tmp_path))
    pipeline.fit(cells, None)
    predictions = pipeline.predict(list(cells))
    assert np.mean([p.label == s.label for p, s in zip(predictions, cells, strict=True)]) >= 0.9


@pytest.mark.slow
def test_real_elpv_held_out_cells_are_recognised_well_above_chance(tmp_path):
    cells = elpv_cells(60, 60)
    correct = []
    for train, held_out in stratified_folds(cells, 3, seed=0):
        pipeline = Supervised(PipelineContext(dataset="elpv", weights_dir=tmp_path))
        pipeline.fit(train, None)
        correct += [p.label == s.label for p, s in zip(pipeline.predict(list(held_out)), held_out, strict=True)]
    assert np.mean(correct) >= 0.7
