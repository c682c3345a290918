import base64
import io

import numpy as np
import pytest
from PIL import Image

from fmtest.errors import DataError
from fmtest.overlay import GT_COLOUR, IGNORE_COLOUR, MAX_PNG_BYTES, PRED_ALPHA, PRED_COLOUR, overlay_thumbnail


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)


def square(hw, top, left, side):
    m = np.zeros(hw, bool)
    m[top : top + side, left : left + side] = True
    return m


def test_prediction_fill_and_gt_outline_at_known_pixels():
    image = np.full((100, 100), 0.5, np.float32)
    gt = square((100, 100), 10, 10, 20)
    pred = square((100, 100), 60, 60, 20)
    px = decode(overlay_thumbnail(image, pred_mask=pred, gt_mask=gt, size=100))
    assert px.shape == (100, 100, 3)
    grey = 128
    expected_fill = np.rint((1 - PRED_ALPHA) * grey + PRED_ALPHA * np.array(PRED_COLOUR))
    np.testing.assert_array_equal(px[70, 70], expected_fill)
    # ground truth: outlined, the inside left untouched so the defect stays visible
    for y, x in [(10, 15), (29, 15), (15, 10), (15, 29)]:
        np.testing.assert_array_equal(px[y, x], GT_COLOUR)
    np.testing.assert_array_equal(px[20, 20], [grey] * 3)
    np.testing.assert_array_equal(px[45, 45], [grey] * 3)  # background untouched


def test_gt_outline_drawn_over_prediction_where_they_overlap():
    image = np.zeros((50, 50), np.float32)
    both = square((50, 50), 10, 10, 20)
    px = decode(overlay_thumbnail(image, pred_mask=both, gt_mask=both, size=50))
    np.testing.assert_array_equal(px[10, 20], GT_COLOUR)
    np.testing.assert_array_equal(px[20, 20], np.rint(PRED_ALPHA * np.array(PRED_COLOUR)))


def test_ignore_region_is_hatched_grey():
    image = np.zeros((40, 40), np.float32)
    ignore = square((40, 40), 0, 0, 20)
    px = decode(overlay_thumbnail(image, ignore=ignore, size=40))
    region = px[:20, :20].reshape(-1, 3)
    hatched = (region == IGNORE_COLOUR).all(axis=1)
    assert 0.3 < hatched.mean() < 0.7  # stripes, not a solid block
    assert (px[30:, 30:] == 0).all()


def test_rgb_image_keeps_its_colours():
    image = np.zeros((30, 30, 3), np.float32)
    image[..., 2] = 1.0
    px = decode(overlay_thumbnail(image, size=30))
    np.testing.assert_array_equal(px[5, 5], [0, 0, 255])


def test_large_image_is_shrunk_to_fit_and_small_defect_survives():
    image = np.full((400, 800), 0.2, np.float32)
    pred = np.zeros((400, 800), bool)
    pred[200, 400] = True  # one pixel: must still show at 1/5 scale
    px = decode(overlay_thumbnail(image, pred_mask=pred, size=160))
    assert px.shape[:2] == (80, 160)
    assert (px != px[0, 0]).any(axis=2).sum() >= 1


def test_noisy_image_stays_under_size_budget():
    rng = np.random.default_rng(0)
    image = rng.random((512, 512)).astype(np.float32)
    gt = square((512, 512), 100, 100, 150)
    pred = square((512, 512), 150, 150, 150)
    png = base64.b64decode(overlay_thumbnail(image, pred_mask=pred, gt_mask=gt))
    assert len(png) <= MAX_PNG_BYTES
    assert Image.open(io.BytesIO(png)).size == (160, 160)


@pytest.mark.parametrize(
    ("image", "kwargs", "problem"),
    [
        (np.zeros((10, 10, 4), np.float32), {}, "shape"),
        (np.zeros((10, 10), np.uint8), {}, "dtype"),
        (np.zeros((10, 10), np.float32), {"gt_mask": np.zeros((10, 12), bool)}, "gt_mask is 12x10"),
        (np.zeros((10, 10), np.float32), {"pred_mask": np.zeros((10, 10, 2), bool)}, "pred_mask must be"),
    ],
)
def test_bad_input_names_image_and_problem(image, kwargs, problem):
    with pytest.raises(DataError, match=problem) as info:
        overlay_thumbnail(image, image_id="test/void/003", **kwargs)
    assert "test/void/003" in str(info.value)
