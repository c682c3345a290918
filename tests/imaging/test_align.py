"""Registration recovers known rigid motions, flags unrelated content, and warps round-trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fmtest.errors import DataError
from fmtest.imaging.align import (
    estimate_alignment,
    overlap_mask,
    warp_from_reference,
    warp_to_reference,
)


def package_scan(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    """A SAT-like greyscale package: mould, die, leads, a via, plus fine texture."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 0.15, np.float32)
    cv2.rectangle(img, (int(w * .15), int(h * .15)), (int(w * .85), int(h * .85)), 0.45, -1)
    cv2.rectangle(img, (int(w * .35), int(h * .30)), (int(w * .60), int(h * .55)), 0.80, -1)
    for i in range(6):
        x = int(w * .2 + i * w * .1)
        cv2.rectangle(img, (x, int(h * .7)), (x + int(w * .04), int(h * .8)), 0.65, -1)
    cv2.circle(img, (int(w * .75), int(h * .3)), int(min(h, w) * .06), 0.9, -1)
    texture = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5)
    return np.clip(cv2.GaussianBlur(img + 0.1 * (texture - texture.mean()), (0, 0), 0.8), 0, 1)


def moved(reference: np.ndarray, angle: float, shift: tuple[float, float], scale: float = 1.0, seed: int = 1):
    """The reference rotated about its centre, scaled and shifted, with new contrast and noise.

    Returns the image and the true image->reference matrix.
    """
    h, w = reference.shape[:2]
    forward = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    forward[:, 2] += shift
    image = cv2.warpAffine(reference, forward, (w, h), borderMode=cv2.BORDER_REFLECT)
    noise = np.random.default_rng(seed).normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(0.8 * image + 0.1 + noise, 0, 1), cv2.invertAffineTransform(forward)


def max_corner_error(matrix: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest disagreement (pixels) where the two matrices send the image corners and centre."""
    h, w = shape
    pts = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2]], float)
    return float(np.abs(pts @ matrix[:, :2].T + matrix[:, 2] - (pts @ truth[:, :2].T + truth[:, 2])).max())


@pytest.fixture(scope="module")
def reference():
    return package_scan()


@pytest.mark.parametrize("angle, shift", [
    (0.0, (0.0, 0.0)), (0.0, (3.4, -2.7)), (0.0, (0.25, 0.6)), (4.0, (6.0, 3.0)), (-12.0, (-4.0, 8.0)),
    (30.0, (0.0, 0.0)), (90.0, (2.0, 2.0)), (175.0, (3.0, 1.0)),
])
def test_recovers_shift_and_rotation(reference, angle, shift):
    image, truth = moved(reference, angle, shift)
    a = estimate_alignment(image, reference)
    assert a.ok and a.quality > 0.9
    assert max_corner_error(a.matrix, truth, reference.shape) < 1.0
    true_angle = np.degrees(np.arctan2(-truth[1, 0], truth[0, 0]))
    assert abs((a.angle_deg - true_angle + 180) % 360 - 180) < 0.5


def test_subpixel_shift_is_sub_pixel(reference):
    image, truth = moved(reference, 0.0, (1.3, -0.4))
    a = estimate_alignment(image, reference)
    assert abs(a.dx - truth[0, 2]) < 0.2 and abs(a.dy - truth[1, 2]) < 0.2


@pytest.mark.parametrize("scale", [0.9, 1.1])
def test_recovers_scale_only_when_allowed(reference, scale):
    image, truth = moved(reference, 8.0, (3.0, -2.0), scale=scale)
    a = estimate_alignment(image, reference, allow_scale=True)
    assert abs(a.scale - 1 / scale) < 0.01
    assert max_corner_error(a.matrix, truth, reference.shape) < 1.0
    assert estimate_alignment(image, reference).scale == pytest.approx(1.0)


def test_large_image_keeps_full_resolution_accuracy():
    reference = package_scan(600, 760, seed=3)
    image, truth = moved(reference, 7.0, (13.3, -21.6))
    a = estimate_alignment(image, reference)
    assert max_corner_error(a.matrix, truth, reference.shape) < 1.0


def test_crop_of_reference_is_placed_where_it_was_cut(reference):
    crop = reference[20:140, 30:170]
    a = estimate_alignment(crop, reference)
    assert a.ok
    assert a.dx == pytest.approx(30, abs=0.5) and a.dy == pytest.approx(20, abs=0.5)


def test_colour_image_aligns_to_grey_reference(reference):
    image, truth = moved(reference, 5.0, (2.0, 1.0))
    rgb = np.stack([image, 0.9 * image, 0.7 * image], axis=-1)
    a = estimate_alignment(rgb, reference)
    assert a.ok and max_corner_error(a.matrix, truth, reference.shape) < 1.0


def test_random_noise_is_not_ok(reference):
    noise = np.random.default_rng(5).random(reference.shape).astype(np.float32)
    a = estimate_alignment(noise, reference)
    assert not a.ok and a.quality < 0.3


def test_blank_image_is_not_ok(reference):
    a = estimate_alignment(np.full_like(reference, 0.5), reference)
    assert not a.ok and a.quality == 0.0


def test_min_quality_decides_ok(reference):
    image, _ = moved(reference, 3.0, (1.0, 1.0))
    assert estimate_alignment(image, reference, min_quality=0.5).ok
    assert not estimate_alignment(image, reference, min_quality=0.9999).ok


def test_bad_shape_names_the_problem(reference):
    with pytest.raises(DataError, match="shape"):
        estimate_alignment(np.zeros((10, 10, 4), np.float32), reference)


def test_warp_round_trip_of_a_mask(reference):
    image, _ = moved(reference, 10.0, (4.0, -3.0))
    a = estimate_alignment(image, reference)
    mask = np.zeros(reference.shape, bool)
    mask[60:90, 70:110] = True
    in_image = warp_from_reference(mask, a, image.shape)
    assert in_image.dtype == bool and in_image.shape == image.shape
    back = warp_to_reference(in_image, a, reference.shape)
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.9


def test_warp_to_reference_matches_reference(reference):
    image, _ = moved(reference, -6.0, (5.0, 2.0))
    a = estimate_alignment(image, reference)
    warped = warp_to_reference(image, a, reference.shape)
    covered = overlap_mask(a, image.shape, reference.shape)
    inner = cv2.erode(covered.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert np.corrcoef(warped[inner], reference[inner])[0, 1] > 0.95
    beyond = cv2.dilate(covered.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    assert beyond.any() and not warped[beyond].any()


def test_warp_keeps_channels_and_size():
    a = estimate_alignment(package_scan(), package_scan())
    rgb = np.random.default_rng(0).random((160, 200, 3)).astype(np.float32)
    out = warp_to_reference(rgb, a, (120, 150))
    assert out.shape == (120, 150, 3) and out.dtype == np.float32
    assert warp_from_reference(rgb[..., :1], a, (160, 200)).shape == (160, 200, 1)


@pytest.mark.parametrize("angle, shift", [(0.0, (5.5, -3.2)), (-40.0, (2.0, 1.0))])
def test_recovers_motion_of_a_texture(angle, shift):
    """Woven, noisy texture (MVTec-like): no layout to lock onto, only the texture itself."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:400, :400]
    texture = (0.25 * np.sin(xx / 3.0) * np.sin(yy / 3.0)).astype(np.float32)
    texture += cv2.GaussianBlur(rng.random((400, 400)).astype(np.float32), (0, 0), 2.0)
    forward = cv2.getRotationMatrix2D((200, 200), angle, 1.0)
    forward[:, 2] += shift
    image = cv2.warpAffine(texture, forward, (400, 400))[100:300, 100:300]
    truth = cv2.invertAffineTransform(forward)  # in crop coordinates: shift in by 100, out by 100
    truth[:, 2] = truth[:, :2] @ [100.0, 100.0] + truth[:, 2] - 100.0
    a = estimate_alignment(image, texture[100:300, 100:300])
    assert a.ok and max_corner_error(a.matrix, truth, (200, 200)) < 1.0


# -- same answer on every machine, and non-finite is a failure -----------------------------------
class _PoisonedPolar:
    """cv2 as fmtest.imaging.align sees it, except that warpPolar writes into memory holding NaN, as a reused
    buffer can: every sample the transform leaves unwritten stays NaN."""

    def __getattr__(self, name):
        return getattr(cv2, name)

    @staticmethod
    def warpPolar(src, dsize, center, max_radius, flags):
        dst = np.full((dsize[1], dsize[0]), np.nan, np.float32)
        return cv2.warpPolar(src, dsize, center, max_radius, flags, dst=dst)


def test_polar_transform_writes_every_sample(reference, monkeypatch):
    """Memory the polar transform leaves unwritten must not reach the estimate (it did: a NaN there
    made the rotation NaN and the result depend on what the process had freed before)."""
    from fmtest.imaging import align

    image, truth = moved(reference, 30.0, (2.0, -1.0))
    clean = align._estimate(image, reference, False, 0.5)  # computed, not the process's remembered alignment
    monkeypatch.setattr(align, "cv2", _PoisonedPolar())
    poisoned = align._estimate(image, reference, False, 0.5)
    assert poisoned.ok and np.array_equal(poisoned.matrix, clean.matrix)


def test_an_alignment_is_computed_once_per_content_and_options(reference, monkeypatch):
    """The guardrails and reference_diff align the same images to the same reference: the second asks get the
    first answer, found by content (a copy of the image is the same image), not by which array was passed."""
    from fmtest.imaging import align

    computed = []
    estimate = align._estimate
    monkeypatch.setattr(align, "_estimate", lambda *args: computed.append(args[2:]) or estimate(*args))
    image, _ = moved(reference, 4.0, (1.0, 2.0), seed=11)
    first = estimate_alignment(image, reference)
    assert estimate_alignment(image.copy(), reference.copy()) is first and len(computed) == 1
    assert not first.matrix.flags.writeable  # shared: nobody may change it for the others
    assert estimate_alignment(image, reference, min_quality=0.9) is not first  # other options: computed anew
    assert estimate_alignment(np.clip(image + 0.01, 0, 1), reference) is not first  # other content: too
    assert computed == [(False, 0.5), (False, 0.9), (False, 0.5)]


@pytest.mark.parametrize("where", ["image", "reference"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_fail_the_alignment_with_the_reason(reference, where, bad):
    image, _ = moved(reference, 3.0, (1.0, 1.0))
    spoiled = (image if where == "image" else reference).copy()
    spoiled[40, 50] = bad
    a = estimate_alignment(spoiled, reference) if where == "image" else estimate_alignment(image, spoiled)
    assert not a.ok and f"the {where} has non-finite pixel values" in a.failure
    assert np.isfinite(a.matrix).all() and a.quality == 0.0


def test_undefined_correlation_is_nan_never_zero(reference):
    """A NaN NCC returned as 0.0 beat a candidate whose NCC is negative; a NaN overlap read as 1."""
    from fmtest.imaging.align import _ncc, _overlap

    ref = reference.astype(np.float32)
    nan_matrix = np.full((2, 3), np.nan)
    assert np.isnan(_ncc(ref, ref, nan_matrix)) and np.isnan(_overlap(ref.shape, ref.shape, nan_matrix))
    assert np.isnan(_ncc(np.zeros_like(ref), ref, np.eye(2, 3)))  # flat: no correlation defined
    assert _ncc(ref, ref, np.eye(2, 3)) == pytest.approx(1.0)


def test_a_half_turn_symmetric_part_keeps_the_smaller_rotation():
    """Both ends of a half turn fit a point-symmetric part equally well: a rule decides (the smallest
    rotation), not the last bit of the correlation, which differs between CPUs."""
    part = package_scan(160, 160, seed=4)
    symmetric = 0.5 * (part + part[::-1, ::-1])
    image, _ = moved(symmetric, 2.0, (1.5, -1.0))
    a = estimate_alignment(image, symmetric)
    assert a.ok and abs(a.angle_deg) < 10.0


def test_a_wrong_orientation_never_wins_a_near_tie_by_coarse_order(reference):
    """The orientation a part is really in wins on refined correlation, whichever end of a half turn
    the coarse search put first."""
    image, truth = moved(reference, 178.0, (2.0, 3.0))
    a = estimate_alignment(image, reference)
    assert a.ok and max_corner_error(a.matrix, truth, reference.shape) < 1.0
