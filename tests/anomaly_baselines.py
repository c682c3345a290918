"""Checks padim and patchcore share: both fit on good circuit boards (`boards`) and must behave alike on them."""

from __future__ import annotations

import pytest
import torch
from boards import H, W, board, sample, train_set

from fmtest.data.sample import NOK, Sample, SampleRef, SampleSet
from fmtest.errors import DataError
from fmtest.pipelines.base import Pipeline, Prediction


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tensors are tiny: on a shared CPU, torch's thread pool only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def check_finds_big_defects_and_passes_clean_parts(fitted: Pipeline) -> list[tuple[Sample, Prediction]]:
    """Two defective boards flagged with a mask on the defect, at most 2 of 8 clean ones flagged (a new good
    part beats the max of n calibration parts with chance 1/(n+1): expect ~1 of 8), every defect scoring
    above every clean part. Returns the defective samples with their predictions for the pipeline's own checks."""
    defective = [sample(f"bad/{i}", seed=200 + i, defect=True) for i in range(2)]
    clean = [sample(f"good/{i}", seed=300 + i) for i in range(8)]
    predictions = fitted.predict(defective + clean)
    for s, p in zip(defective, predictions[:2]):
        assert p.label == NOK and p.mask.shape == (H, W) and p.mask.dtype == bool
        assert (p.mask & s.mask).sum() / s.mask.sum() > 0.5
    assert sum(p.label == NOK for p in predictions[2:]) <= 2
    assert min(p.score for p in predictions[:2]) > max(p.score for p in predictions[2:])
    return list(zip(defective, predictions[:2]))


def predict_rgb_crop(pipeline: Pipeline) -> Prediction:
    """Fit on RGB boards, then predict a defective 64x80 crop of another: a size the pipeline did not fit on."""
    pipeline.fit(train_set(4, rgb=True), None)
    image, mask = board(7, defect=True, rgb=True)
    prediction, = pipeline.predict([Sample(id="crop", image=image[4:68, 8:88], label=NOK, mask=mask[4:68, 8:88])])
    return prediction


def training_images_read(pipeline: Pipeline) -> list[str]:
    """The ids `fit` decodes from four good training boards and a defective one (whose decoding fails the test)."""
    loaded: list[str] = []

    def refuse():
        raise AssertionError("fit decoded a defective image")

    pipeline.fit(SampleSet(train_set(4, loaded=loaded).refs + [SampleRef("train/nok", NOK, refuse)]), None)
    return sorted(loaded)


def check_needs_two_good_training_images(pipeline: Pipeline) -> None:
    with pytest.raises(DataError, match="at least 2"):
        pipeline.fit(train_set(1), None)
