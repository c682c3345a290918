"""Image and mask decoding and conversions."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from fmtest.data.io import (
    list_images,
    read_image,
    read_mask,
    read_pixels,
    to_gray,
    to_rgb_uint8,
)
from fmtest.errors import DataError


def ramp(dtype, top: int, shape=(6, 10)) -> np.ndarray:
    return np.linspace(0, top, np.prod(shape)).round().astype(dtype).reshape(shape)


def test_8bit_png_is_scaled_by_255(tmp_path):
    pixels = ramp(np.uint8, 255)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.shape == (6, 10)
    np.testing.assert_allclose(image, pixels / 255, atol=1e-7)


def test_16bit_png_keeps_its_precision(tmp_path):
    pixels = ramp(np.uint16, 65535, (40, 50))
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(image, pixels / 65535, atol=1e-7)
    assert len(np.unique(image)) > 256  # more grey levels than an 8-bit reader could return
    assert image.max() == 1.0


@pytest.mark.parametrize("dtype,top", [(np.uint8, 255), (np.uint16, 65535)])
def test_tiff_integer(tmp_path, dtype, top):
    pixels = ramp(dtype, top)
    tifffile.imwrite(tmp_path / "a.tif", pixels)
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), pixels / top, atol=1e-7)


def test_float_tiff_in_unit_range_passes_and_out_of_range_is_named(tmp_path):
    tifffile.imwrite(tmp_path / "ok.tiff", np.full((4, 4), 0.25, np.float32))
    assert read_image(tmp_path / "ok.tiff").max() == pytest.approx(0.25)
    tifffile.imwrite(tmp_path / "bad.tif", np.full((4, 4), 3.0, np.float32))
    with pytest.raises(DataError, match=r"bad\.tif.*\[0, 1\]"):
        read_image(tmp_path / "bad.tif")


def test_rgb_jpeg(tmp_path):
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 0] = 200
    pixels[..., 2] = 40
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=98)
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image.mean(axis=(0, 1)), [200 / 255, 0, 40 / 255], atol=0.03)


def test_alpha_is_dropped(tmp_path):
    rgba = np.dstack([np.full((5, 5), v, np.uint8) for v in (10, 20, 30, 0)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png")[0, 0], np.array([10, 20, 30]) / 255, atol=1e-7)
    la = np.dstack([np.full((5, 5), 99, np.uint8), np.zeros((5, 5), np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    image = read_image(tmp_path / "la.png")
    assert image.shape == (5, 5)
    assert image[0, 0] == pytest.approx(99 / 255)


def test_palette_image_reads_as_rgb_and_its_pixels_as_indices(tmp_path):
    im = Image.new("P", (4, 3))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert image.shape == (3, 4, 3)
    np.testing.assert_allclose(image[1, 1], [1, 0, 0])
    assert read_pixels(tmp_path / "p.png")[1, 1] == 1


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("name", ["bad.png", "bad.jpg", "bad.tif"])
def test_corrupt_file_is_a_data_error_naming_it(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DataError, match=re.escape(name) + ": cannot decode image") as info:
        read_image(tmp_path / name)
    assert info.value.__suppress_context__  # no decoder traceback chained to the user's message


def test_truncated_png_is_a_data_error(tmp_path):
    Image.fromarray(ramp(np.uint8, 255, (64, 64))).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png: cannot decode"):
        read_image(tmp_path / "cut.png")


def _save_mask(tmp_path, pixels, name="m.png", **kw):
    path = tmp_path / name
    if name.endswith(".tif"):
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path, **kw)
    return path


def test_mask_is_defect_above_127(tmp_path):
    pixels = np.zeros((20, 30), np.uint8)
    pixels[1, 2], pixels[2, 2], pixels[3, 5], pixels[0, 0] = 127, 128, 255, 3
    mask = read_mask(_save_mask(tmp_path, pixels), (20, 30, 3))
    assert mask.dtype == bool
    assert mask.sum() == 2 and mask[2, 2] and mask[3, 5]


def test_a_background_stored_as_1_is_background(tmp_path):
    pixels = np.ones((20, 20), np.uint8)
    pixels[5:9, 5:9] = 255
    mask = read_mask(_save_mask(tmp_path, pixels), (20, 20))
    assert mask.sum() == 16 and mask[5:9, 5:9].all()
    assert not read_mask(_save_mask(tmp_path, np.ones((20, 20), np.uint8), "ok.png"), (20, 20)).any()


def test_a_0_1_label_mask_marks_1_as_defect(tmp_path):
    pixels = np.zeros((10, 10), np.uint8)
    pixels[2:4, 2:4] = 1
    assert read_mask(_save_mask(tmp_path, pixels), (10, 10)).sum() == 4


def test_jpeg_noise_and_anti_aliasing_threshold_at_127(tmp_path):
    pixels = np.zeros((64, 64), np.uint8)
    pixels[16:48, 16:48] = 255
    pixels[15, 16:48] = pixels[48, 16:48] = 128  # anti-aliased edges, on the defect side of 127
    path = _save_mask(tmp_path, pixels, "m.jpg", quality=75)
    stored = np.asarray(Image.open(path))
    assert len(np.unique(stored)) > 2  # the JPEG really is noisy
    mask = read_mask(path, (64, 64))
    np.testing.assert_array_equal(mask, stored > 127)
    assert abs(int(mask.sum()) - 32 * 34) <= 64


def test_16bit_and_float_masks_threshold_at_the_same_fraction(tmp_path):
    pixels = np.zeros((10, 10), np.uint16)
    pixels[0, :4] = [0, 32639, 32640, 65535]  # 127 * 257 is the 16-bit level of 127
    mask = read_mask(_save_mask(tmp_path, pixels, "m16.png"), (10, 10))
    assert mask.sum() == 2 and mask[0, 2:4].all()
    floats = np.zeros((10, 10), np.float32)
    floats[0, :4] = [0.0, 0.49, 0.51, 1.0]
    mask = read_mask(_save_mask(tmp_path, floats, "mf.tif"), (10, 10))
    assert mask.sum() == 2 and mask[0, 2:4].all()


def test_a_mask_that_is_not_two_level_is_refused_naming_the_file(tmp_path):
    path = _save_mask(tmp_path, ramp(np.uint8, 255, (20, 20)), "photo.png")
    with pytest.raises(DataError, match=r"photo\.png: mask is not two-level: 50% of its pixels are mid-grey"):
        read_mask(path, (20, 20))
    assert read_mask(path, (20, 20), threshold=199).sum() == int((ramp(np.uint8, 255, (20, 20)) > 199).sum())


def test_rgb_mask_reads_its_brightest_channel(tmp_path):
    pixels = np.zeros((4, 4, 3), np.uint8)
    pixels[0, 0, 2] = 255
    pixels[1, 1, 0] = 9
    mask = read_mask(_save_mask(tmp_path, pixels), (4, 4))
    assert mask.shape == (4, 4) and mask.sum() == 1 and mask[0, 0]


def test_mask_size_mismatch_names_mask_and_both_sizes(tmp_path):
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DataError, match=r"m\.png: mask is 32x16 but its image is 30x20"):
        read_mask(tmp_path / "m.png", (20, 30))


def test_to_rgb_uint8_replicates_grey_and_rounds():
    grey = np.array([[0.0, 0.5], [1.0, 1.7]], np.float32)
    rgb = to_rgb_uint8(grey)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb[0, 1, 1] == 128 and rgb[1, 1, 0] == 255
    colour = np.random.default_rng(0).random((3, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_rgb_uint8(colour), np.round(colour * 255).astype(np.uint8))
    with pytest.raises(ValueError):
        to_rgb_uint8(np.zeros((2, 2, 4)))


def test_to_gray_uses_luma_weights():
    red = np.zeros((2, 2, 3), np.float32)
    red[..., 0] = 1
    assert to_gray(red)[0, 0] == pytest.approx(0.299)
    grey = np.full((2, 2), 0.3, np.float32)
    np.testing.assert_array_equal(to_gray(grey), grey)
    assert to_gray(np.ones((2, 2, 3))).dtype == np.float32


def test_list_images_is_sorted_and_skips_other_files(tmp_path):
    for name in ("b.png", "a.TIF", "notes.txt", "c.jpg"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.TIF", "b.png", "c.jpg"]
