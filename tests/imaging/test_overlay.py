import base64
import io

import numpy as np
import pytest
from PIL import Image

from fmtest.errors import DataError
from fmtest.imaging.overlay import (
    GT_COLOUR,
    IGNORE_COLOUR,
    LAYER_MAX_SIDE,
    MAX_PNG_BYTES,
    PRED_ALPHA,
    PRED_COLOUR,
    SCORE_MAP_TOP,
    image_layers,
    overlay_thumbnail,
)


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


# --------------------------------------------------------------------------- full-size viewer layers

def png_pixels(data: bytes) -> tuple[str, np.ndarray]:
    image = Image.open(io.BytesIO(data))
    return image.mode, np.asarray(image.convert("RGBA")).astype(int)


def test_layers_are_separate_transparent_pngs_at_known_pixels():
    image = np.full((100, 100), 0.5, np.float32)
    gt, pred = square((100, 100), 10, 10, 20), square((100, 100), 60, 60, 20)
    ignore = square((100, 100), 80, 0, 20)
    layers = image_layers(image, pred, gt, ignore)
    assert set(layers) == {"image", "gt", "prediction"}  # no score map given: no such layer
    mode, px = png_pixels(layers["image"])
    assert mode == "L" and px.shape == (100, 100, 4) and (px[..., 0] == 128).all()  # grey stays one channel
    _, gt_px = png_pixels(layers["gt"])
    np.testing.assert_array_equal(gt_px[10, 15], [*GT_COLOUR, 255])  # outline
    assert gt_px[20, 20, 3] == 0 and gt_px[45, 45, 3] == 0  # inside and background see-through
    hatched = (gt_px[80:, :20, :3] == IGNORE_COLOUR).all(axis=2)
    assert 0.3 < hatched.mean() < 0.7
    _, pred_px = png_pixels(layers["prediction"])
    np.testing.assert_array_equal(pred_px[70, 70], [*PRED_COLOUR, round(255 * PRED_ALPHA)])
    assert pred_px[20, 20, 3] == 0


def test_layers_are_shrunk_to_the_long_side_and_a_one_pixel_void_survives():
    image = np.full((600, 3000), 0.2, np.float32)
    void = np.zeros((600, 3000), bool)
    void[300, 1500] = True
    layers = image_layers(image, gt_mask=void, pred_mask=void, max_side=LAYER_MAX_SIDE)
    for name in ("image", "gt", "prediction"):
        assert Image.open(io.BytesIO(layers[name])).size == (LAYER_MAX_SIDE, 205), name
    for name in ("gt", "prediction"):
        assert (png_pixels(layers[name])[1][..., 3] > 0).sum() >= 1, name
    assert Image.open(io.BytesIO(image_layers(image[:50, :80])["image"])).size == (80, 50)  # never enlarged


def test_score_map_layer_is_on_one_scale_in_units_of_the_threshold():
    image = np.zeros((10, 40), np.float32)
    score_map = np.repeat(np.linspace(0, 2 * SCORE_MAP_TOP, 40, dtype=np.float32)[None], 10, axis=0)
    mode, px = png_pixels(image_layers(image, score_map=score_map)["score_map"])
    assert mode == "P"  # one byte per pixel
    brightness = px[0, :, :3].sum(axis=1)
    assert brightness[0] < brightness[10] < brightness[19]  # rising up to the top of the scale...
    assert (brightness[20:] == brightness[-1]).all()  # ...and saturated beyond it: 2x and 4x look alike
    with pytest.raises(DataError, match="score_map must be a HxW map"):
        image_layers(image, score_map=score_map[:, :30], image_id="test/void/003")


def test_layer_store_writes_as_it_goes_and_shares_the_reference(tmp_path):
    from fmtest.data.sample import Sample
    from fmtest.pipelines.base import Prediction
    from fmtest.report.layers import LayerStore, layers_dir

    report = tmp_path / "out" / "scoreboard.html"
    stale = layers_dir(report) / "padim-satsim" / "old.image.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    store = LayerStore(report, "padim-satsim")
    assert not stale.exists()
    reference = Sample("reference", np.full((40, 60), 0.3, np.float32), "OK")
    mask = square((40, 60), 5, 5, 10)
    for i, image_id in enumerate(["test/void/001", "test/good/002"]):
        sample = Sample(image_id, np.full((40, 60), 0.1 * (i + 1), np.float32), "NOK" if i == 0 else "OK",
                        mask=mask if i == 0 else np.zeros((40, 60), bool))
        store.add(sample, Prediction.from_mask(mask, score_map=np.ones((40, 60), np.float32)), reference)
    manifest = store.manifest()
    assert manifest["folder"] == "scoreboard_files/padim-satsim"  # relative to the report's folder
    first, second = manifest["images"]["test/void/001"], manifest["images"]["test/good/002"]
    assert set(first) == {"image", "gt", "prediction", "score_map", "reference"}
    assert first["reference"] == second["reference"]  # one file for the group's reference
    folder = report.parent / manifest["folder"]
    written = sorted(p.name for p in folder.iterdir())
    assert len(written) == 9 and written == sorted({f for files in (first, second) for f in files.values()})
    assert all("/" not in f for f in first.values())
    _, px = png_pixels((folder / first["image"]).read_bytes())
    assert px[0, 0, 0] == round(0.1 * 255)
