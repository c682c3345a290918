"""reference_diff: learns only from good training images, finds an obvious defect, flags bad alignment."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, Unavailable
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.reference_diff import ReferenceDiff

H, W = 120, 150  # non-square on purpose


def package(seed: int, angle: float = 0.0, shift=(0.0, 0.0), defect: bool = False, rgb: bool = False):
    """A package scan (mould, die, leads) seen with a small misregistration and contrast drift.

    Returns (image, mask): the defect is a dark void on the die, the mask its true outline.
    """
    rng = np.random.default_rng(seed)
    img = np.full((H, W), 0.15, np.float32)
    cv2.rectangle(img, (20, 18), (130, 102), 0.45, -1)
    cv2.rectangle(img, (50, 35), (95, 70), 0.8, -1)
    for i in range(6):
        cv2.rectangle(img, (30 + 16 * i, 82), (36 + 16 * i, 95), 0.65, -1)
    mask = np.zeros((H, W), np.uint8)
    if defect:
        cv2.circle(mask, (72, 52), 9, 1, -1)
        img[mask > 0] = 0.25
    forward = cv2.getRotationMatrix2D((W / 2, H / 2), angle, 1.0)
    forward[:, 2] += shift
    img = cv2.warpAffine(cv2.GaussianBlur(img, (0, 0), 1.0), forward, (W, H), borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(mask, forward, (W, H), flags=cv2.INTER_NEAREST) > 0
    gain, offset = rng.uniform(0.85, 1.1), rng.uniform(-0.05, 0.05)
    img = np.clip(gain * img + offset + rng.normal(0, 0.015, img.shape), 0, 1).astype(np.float32)
    if rgb:
        img = np.stack([img, 0.95 * img, 0.9 * img], axis=-1)
    return img, mask


def sample(sample_id: str, seed: int, defect: bool = False, **kw) -> Sample:
    image, mask = package(seed, defect=defect, **kw)
    return Sample(id=sample_id, image=image, label=NOK if defect else OK, mask=mask)


def train_set(n: int = 6, loaded: list | None = None) -> SampleSet:
    """Good parts with jittered pose; `loaded` records which ids the pipeline decoded."""
    def ref(i: int) -> SampleRef:
        def load():
            if loaded is not None:
                loaded.append(f"train/{i}")
            return sample(f"train/{i}", seed=100 + i, angle=(-1) ** i * 1.5, shift=(i % 3 - 1, 1 - i % 2))
        return SampleRef(id=f"train/{i}", label=OK, load=load)
    return SampleSet([ref(i) for i in range(n)])


def make(options=None) -> ReferenceDiff:
    return ReferenceDiff(PipelineContext(dataset="toy", options=options or {}, progress=False))


@pytest.fixture(scope="module")
def fitted() -> ReferenceDiff:
    pipeline = make()
    pipeline.fit(train_set(), sample("reference", seed=0))
    return pipeline


def test_without_reference_is_unavailable():
    with pytest.raises(Unavailable, match="reference"):
        make().fit(train_set(2), None)


def test_finds_big_defect_and_passes_clean_part(fitted):
    defective = sample("bad", seed=7, defect=True, angle=2.0, shift=(3.0, -2.0))
    clean = sample("good", seed=8, angle=-2.0, shift=(-2.0, 1.0))
    bad_pred, good_pred = fitted.predict([defective, clean])
    assert bad_pred.label == NOK and good_pred.label == OK
    assert bad_pred.mask.shape == (H, W) and bad_pred.mask.dtype == bool
    hit = (bad_pred.mask & defective.mask).sum()
    assert hit / defective.mask.sum() > 0.9  # the whole void is found...
    assert bad_pred.mask.sum() < 3 * defective.mask.sum()  # ...plus a blurred rim, not the whole die
    assert not bad_pred.mask[:, :40].any()  # nothing on the far-away leads and mould
    assert bad_pred.score > 5 * good_pred.score and bad_pred.score > 1.0


def test_score_map_is_the_difference_in_units_of_the_threshold(fitted):
    defective = sample("bad", seed=7, defect=True, angle=2.0, shift=(3.0, -2.0))
    prediction, = fitted.predict([defective])
    score_map = prediction.score_map
    assert score_map.shape == (H, W) and score_map.dtype == np.float32
    assert score_map[prediction.mask].min() > 0.5  # bilinear warp back: the edge is softened, not moved
    assert score_map[defective.mask].mean() > 1.0 > np.median(score_map[~defective.mask])
    assert score_map.max() == pytest.approx(prediction.score, rel=0.05)  # the peak, warped back


def test_colour_images_and_other_sizes():
    pipeline = make()
    pipeline.fit(train_set(), sample("reference", seed=0, rgb=True))
    image, mask = package(9, defect=True, rgb=True, shift=(2.0, 2.0))
    crop = Sample(id="crop", image=image[5:115, 10:140], label=NOK, mask=mask[5:115, 10:140])
    prediction, = pipeline.predict([crop])
    assert prediction.mask.shape == (110, 130)
    assert (prediction.mask & crop.mask).sum() / crop.mask.sum() > 0.9
    assert prediction.mask.sum() < 3 * crop.mask.sum()


def test_fit_reads_only_good_training_images():
    loaded: list[str] = []

    def refuse():
        raise AssertionError("fit decoded a defective image")

    train = SampleSet(train_set(4, loaded).refs + [SampleRef(id="train/nok", label=NOK, load=refuse)])
    pipeline = make()
    pipeline.fit(train, sample("reference", seed=0))
    assert sorted(loaded) == [f"train/{i}" for i in range(4)]


def test_threshold_comes_from_training_images_and_prediction_changes_nothing(fitted):
    noisier = make()
    noisier.fit(SampleSet([SampleRef("n", OK, lambda: Sample("n", package(50)[0] + np.float32(0.08) *
                           np.random.default_rng(0).random((H, W), np.float32), OK))]), sample("reference", seed=0))
    assert noisier.threshold > fitted.threshold  # noisier good parts, higher threshold
    before = (fitted.threshold, fitted.min_area)
    fitted.predict([sample("bad", seed=3, defect=True)])
    assert (fitted.threshold, fitted.min_area) == before


def test_learned_min_area_passes_every_training_image(fitted):
    assert fitted.min_area > 1
    predictions = fitted.predict(list(train_set()))
    assert all(p.label == OK for p in predictions)


def test_explicit_min_area_is_used():
    pipeline = make({"min_area": 100000})
    pipeline.fit(train_set(3), sample("reference", seed=0))
    assert pipeline.min_area == 100000
    prediction, = pipeline.predict([sample("bad", seed=7, defect=True)])
    assert prediction.label == OK  # the defect is smaller than the required area


def test_unalignable_image_is_a_failed_answer_not_an_ok(fitted):
    """No trustworthy difference map, no answer: the gate counts it as unusable, it never passes a part."""
    noise = np.random.default_rng(1).random((H, W)).astype(np.float32)
    prediction, = fitted.predict([Sample(id="noise", image=noise, label=OK)])
    assert prediction.error is not None and prediction.label == NOK
    assert "cannot be aligned" in prediction.error and "quality 0." in prediction.error


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_are_a_failed_answer_naming_the_cause(fitted, bad):
    image = sample("bad", seed=11, defect=False).image.copy()
    image[10, 10] = bad
    prediction, = fitted.predict([Sample(id="nan", image=image, label=OK)])
    assert prediction.error is not None and "non-finite" in prediction.error and prediction.label == NOK


def test_training_misalignments_are_counted_per_fit():
    """Each fit reports its own count, not the sum over every fit of the instance."""
    noise = np.random.default_rng(3).random((H, W)).astype(np.float32)
    train = SampleSet(train_set(4).refs + [SampleRef(id="train/noise", label=OK,
                                                     load=lambda: Sample(id="train/noise", image=noise, label=OK))])
    pipeline = make()
    counts = []
    for _ in range(2):
        pipeline.fit(train, sample("reference", seed=0))
        counts.append(pipeline.n_train_misaligned)
    assert counts == [1, 1]


def test_deterministic(fitted):
    s = sample("bad", seed=11, defect=True, angle=1.0)
    a, b = fitted.predict([s]), fitted.predict([s])
    assert np.array_equal(a[0].mask, b[0].mask) and a[0].score == b[0].score


@pytest.mark.parametrize("options", [{"threshold_quantile": 1.5}, {"min_area": -1}, {"blur": 2},
                                     {"min_area": "big"}, {"allow_scale": 1}])
def test_bad_options_name_the_setting(options):
    with pytest.raises(ConfigError, match=r"pipelines\.reference_diff"):
        make(options)
