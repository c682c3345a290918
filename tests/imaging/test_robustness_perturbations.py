"""Perturbations: identity at level 0, exact geometry, determinism, dtype/range, and invariance scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError, FmtestError
from fmtest.imaging import perturb as rb
from fmtest.metrics import functional as m


def make_sample(rgb: bool = False, ignore: bool = False, sample_id: str = "test/void/001") -> Sample:
    rng = np.random.default_rng(0)
    h, w = 24, 32
    image = rng.random((h, w, 3) if rgb else (h, w)).astype(np.float32)
    mask = np.zeros((h, w), bool)
    mask[8:14, 10:20] = True
    ign = np.zeros((h, w), bool) if ignore else None
    if ignore:
        ign[7, 9:21] = True
    return Sample(id=sample_id, image=image, label="NOK", mask=mask, ignore=ign, meta={"split": "test"})


ALL = sorted(rb.PERTURBATIONS)


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
@pytest.mark.parametrize("name", ALL)
def test_level_zero_is_identity(name, rgb):
    sample = make_sample(rgb=rgb, ignore=True)
    out = rb.PERTURBATIONS[name].apply(sample, 0, seed=3)
    assert out is not sample
    np.testing.assert_array_equal(out.image, sample.image)
    np.testing.assert_array_equal(out.mask, sample.mask)
    np.testing.assert_array_equal(out.ignore, sample.ignore)


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
@pytest.mark.parametrize("name", ALL)
def test_every_ladder_level_changes_the_image_and_keeps_dtype_range_and_identity(name, rgb):
    sample = make_sample(rgb=rgb)
    ladder = rb.DEFAULT_LADDERS[name]
    assert len(ladder) >= 3 and list(ladder) == sorted(ladder)
    for level in ladder:
        out = rb.PERTURBATIONS[name].apply(sample, level, seed=0)
        assert out.image.dtype == np.float32
        assert out.image.shape == sample.image.shape
        assert 0.0 <= out.image.min() and out.image.max() <= 1.0
        assert not np.array_equal(out.image, sample.image)
        assert (out.id, out.label) == (sample.id, sample.label)
        assert out.mask.dtype == bool and out.mask.shape == sample.mask.shape
        assert out.meta == {"split": "test", "perturbation": name, "level": level}


@pytest.mark.parametrize("name", ALL)
def test_deterministic_by_seed(name):
    sample = make_sample(rgb=True)
    level = rb.DEFAULT_LADDERS[name][1]
    a = rb.PERTURBATIONS[name].apply(sample, level, seed=5)
    b = rb.PERTURBATIONS[name].apply(sample, level, seed=5)
    np.testing.assert_array_equal(a.image, b.image)


def test_noise_depends_on_seed_and_image_but_not_on_call_order():
    noise = rb.PERTURBATIONS["gaussian_noise"]
    a, b = make_sample(sample_id="a"), make_sample(sample_id="b")
    assert not np.array_equal(noise.apply(a, 0.05, seed=1).image, noise.apply(a, 0.05, seed=2).image)
    assert not np.array_equal(noise.apply(a, 0.05, seed=1).image, noise.apply(b, 0.05, seed=1).image)
    residual = noise.apply(make_sample(), 0.02, seed=0).image - make_sample().image
    inside = (make_sample().image > 0.1) & (make_sample().image < 0.9)  # away from clipping
    assert residual[inside].std() == pytest.approx(0.02, rel=0.2)


def test_photometric_formulas():
    x = np.linspace(0, 1, 11, dtype=np.float32).reshape(1, 11)
    s = Sample(id="ramp", image=x, label="OK")
    np.testing.assert_allclose(rb.PERTURBATIONS["brightness"].apply(s, 0.1).image, np.clip(x + 0.1, 0, 1), atol=1e-6)
    np.testing.assert_allclose(rb.PERTURBATIONS["gamma"].apply(s, 1.0).image, x**2, atol=1e-6)
    np.testing.assert_allclose(rb.PERTURBATIONS["contrast"].apply(s, 0.5).image, 0.5 + 0.5 * (x - 0.5), atol=1e-6)
    np.testing.assert_allclose(rb.PERTURBATIONS["gain_offset"].apply(s, 0.2).image, 0.8 * x + 0.2, atol=1e-6)
    np.testing.assert_allclose(rb.gain_offset(x, 2.0, -0.5), 2 * x - 0.5, atol=1e-6)


def test_blur_preserves_a_flat_image_and_smooths_an_edge():
    step = np.zeros((9, 9), np.float32)
    step[:, 5:] = 1.0
    blurred = rb.PERTURBATIONS["blur"].apply(Sample(id="s", image=step, label="OK"), 1.0).image
    assert 0.0 < blurred[4, 4] < 0.5 < blurred[4, 5] < 1.0
    flat = np.full((9, 9), 0.4, np.float32)
    np.testing.assert_allclose(rb.PERTURBATIONS["blur"].apply(Sample(id="f", image=flat, label="OK"), 2.0).image,
                               flat, atol=1e-6)


def test_jpeg_error_grows_with_level():
    sample = make_sample(rgb=True)
    errors = [np.abs(rb.PERTURBATIONS["jpeg"].apply(sample, level).image - sample.image).mean()
              for level in (10, 50, 90)]
    assert errors[0] < errors[1] < errors[2]


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
@pytest.mark.parametrize("k", [3, -4])
def test_translate_moves_image_mask_and_ignore_by_exactly_k_pixels(k, rgb):
    sample = make_sample(rgb=rgb, ignore=True)
    out = rb.PERTURBATIONS["translate"].apply(sample, k)
    h, w = sample.mask.shape
    src = (slice(max(0, -k), h - max(0, k)), slice(max(0, -k), w - max(0, k)))
    dst = (slice(max(0, k), h - max(0, -k)), slice(max(0, k), w - max(0, -k)))
    np.testing.assert_array_equal(out.image[dst], sample.image[src])
    np.testing.assert_array_equal(out.mask[dst], sample.mask[src])
    np.testing.assert_array_equal(out.ignore[dst], sample.ignore[src])
    assert out.mask.sum() == sample.mask.sum()  # the defect stays inside the frame
    # the band shifted in from outside the frame is ignored, defect-free, and edge-replicated
    band = np.ones((h, w), bool)
    band[dst] = False
    assert out.ignore[band].all() and not out.mask[band].any()
    edge_row = 0 if k > 0 else h - 1  # the first row shifted in repeats the source's edge row
    np.testing.assert_array_equal(out.image[edge_row, dst[1]], sample.image[edge_row, src[1]])


def test_translate_there_and_back_restores_the_interior():
    sample = make_sample(ignore=True)
    there = rb.PERTURBATIONS["translate"].apply(sample, 4)
    back = rb.PERTURBATIONS["translate"].apply(there, -4)
    interior = (slice(4, -4), slice(4, -4))
    np.testing.assert_array_equal(back.image[interior], sample.image[interior])
    np.testing.assert_array_equal(back.mask, sample.mask)


def test_translate_without_ignore_creates_one_for_the_border_only():
    out = rb.PERTURBATIONS["translate"].apply(make_sample(), 2)
    assert out.ignore is not None and out.ignore.sum() == 24 * 32 - 22 * 30


def test_translate_rejects_fractional_pixels():
    with pytest.raises(ConfigError, match="translate"):
        rb.PERTURBATIONS["translate"].apply(make_sample(), 1.5)


def test_rotate_by_90_degrees_on_a_square_image_is_exact():
    rng = np.random.default_rng(1)
    image = rng.random((11, 11)).astype(np.float32)
    mask = rng.random((11, 11)) < 0.3
    out = rb.PERTURBATIONS["rotate"].apply(Sample(id="sq", image=image, label="NOK", mask=mask), 90)
    np.testing.assert_allclose(out.image, np.rot90(image), atol=1e-6)
    np.testing.assert_array_equal(out.mask, np.rot90(mask))
    assert out.ignore is None  # nothing came from outside the frame


def test_rotate_moves_the_mask_with_the_image():
    image = np.zeros((41, 41), np.float32)
    mask = np.zeros((41, 41), bool)
    mask[5:12, 18:23] = True  # a defect near the top, off the rotation centre
    image[mask] = 1.0
    out = rb.PERTURBATIONS["rotate"].apply(Sample(id="r", image=image, label="NOK", mask=mask), 5)
    bright = out.image > 0.5
    assert (bright & out.mask).sum() / (bright | out.mask).sum() > 0.8
    assert not np.array_equal(out.mask, mask)
    assert out.ignore is not None and out.ignore[0, 0] and not out.ignore[20, 20]


def test_invalid_levels_and_names():
    with pytest.raises(ConfigError, match="jpeg"):
        rb.PERTURBATIONS["jpeg"].apply(make_sample(), 100)
    with pytest.raises(ConfigError, match="gaussian_noise"):
        rb.PERTURBATIONS["gaussian_noise"].apply(make_sample(), -0.1)
    with pytest.raises(ConfigError, match="known: blur"):
        rb.perturbation("fog")


def test_ladders_merge_and_validate_overrides():
    merged = rb.ladders({"blur": [1, 3, 5]})
    assert merged["blur"] == (1, 3, 5) and merged["jpeg"] == rb.DEFAULT_LADDERS["jpeg"]
    assert rb.ladders() == rb.DEFAULT_LADDERS
    with pytest.raises(ConfigError, match="translate"):
        rb.ladders({"translate": [0.5]})
    with pytest.raises(ConfigError, match="non-empty list"):
        rb.ladders({"blur": []})
    with pytest.raises(ConfigError, match="unknown perturbation"):
        rb.ladders({"snow": [1]})


# --------------------------------------------------------------------------- invariance scoring


def test_invariance_summary():
    y_true = np.array([True, True, True, True, False, False, False, False])
    base = y_true.copy()
    perturbed = np.array([True, True, True, False, True, False, False, False])  # 1 slip, 1 false alarm
    base_ious = np.array([0.8, 0.6, 0.7, 0.5, 1.0, 1.0, 1.0, 1.0])
    perturbed_ious = np.array([0.7, 0.6, 0.6, 0.0, 0.0, 1.0, 1.0, 1.0])
    s = m.invariance_summary(base, base_ious, perturbed, perturbed_ious, y_true)
    assert s["flip_rate"] == pytest.approx(2 / 8)
    assert s["delta_iou"] == pytest.approx((0.7 + 0.6 + 0.6 + 0.0) / 4 - (0.8 + 0.6 + 0.7 + 0.5) / 4)
    assert s["delta_f2"] == pytest.approx(15 / 20 - 1.0)  # tp 3, fn 1, fp 1: 5*3 / (5*3 + 4*1 + 1)
    assert s["false_alarm_rate"] == pytest.approx(0.25)
    assert s["slip_rate"] == pytest.approx(0.25)


def test_invariance_summary_for_classification_and_string_labels():
    s = m.invariance_summary(["OK", "NOK"], None, ["OK", "OK"], None, ["OK", "NOK"])
    assert math.isnan(s["delta_iou"])
    assert s["flip_rate"] == 0.5 and s["slip_rate"] == 1.0 and s["delta_f2"] == -1.0


def test_invariance_summary_rejects_mismatched_inputs():
    with pytest.raises(FmtestError, match="differ in shape"):
        m.invariance_summary([True], None, [True, False], None, [True])
    with pytest.raises(FmtestError, match="both runs"):
        m.invariance_summary([True], [0.5], [True], None, [True])
