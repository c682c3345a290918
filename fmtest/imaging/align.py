"""Rigid registration of an image to the defect-free reference, with a quality score.

Method, and why: SAT scans of one package type differ by a shift, a small (sometimes a large)
rotation, and brightness/contrast changes from the recording. We therefore

1. estimate the rotation (and optionally the scale) from the Fourier magnitude spectra, which do
   not depend on translation: in (log-)polar coordinates a rotation becomes a shift that phase
   correlation finds in one step, whatever the angle. The spectrum cannot tell θ from θ+180°, and
   on weakly structured images the estimate can be wrong, so θ, θ+180°, 0° and 180° are all tried;
2. find the translation for each candidate by windowed phase correlation (robust to global
   brightness changes, exact to about half a pixel);
3. refine each distinct orientation to sub-pixel accuracy with OpenCV's ECC (enhanced correlation
   coefficient), which is invariant to contrast/brightness and converges reliably once started
   within a few pixels, and keep the one whose warped overlap correlates best with the reference.

ECC alone fails beyond a few pixels or degrees; phase correlation alone is biased by a few
tenths of a pixel; together they are both robust and precise. Quality is the zero-mean normalised
cross-correlation (NCC) of the overlap after warping: about 1 for the same part, about 0 for
unrelated content. An image that cannot be aligned is reported with `ok=False`, its quality and the
reason (`failure`), never raised on: the caller decides what an unreliable alignment means.

Same answer on every machine: the discrete choices here must not hang on the last bit, which
differs between CPU instruction sets (OpenCV's and numpy's SIMD paths round differently).
- The magnitude spectrum of a real image is point-symmetric, so its polar form repeats every 180°;
  correlating the full circle gave two equal peaks (θ and θ+180°) and rounding picked one. The
  angle is found on the half circle (period 180°), where there is one peak, and both θ and θ+180°
  are candidates, beside 0° and 180°.
- Every distinct orientation is refined and the refined NCCs compared; refined NCCs within
  `_NCC_TIE` of the best are a tie, broken by a rule: the smallest rotation wins (parts are
  usually placed the same way round).
- `cv2.warpPolar` leaves the samples whose interpolation reaches past the image unwritten unless
  told to fill them (`WARP_FILL_OUTLIERS`); unwritten memory holding a NaN bit pattern poisoned the
  estimate depending on what the process had freed before.
- Anything non-finite (pixels, an estimate, a matrix) makes the alignment a failure with its reason,
  never an NCC of 0 that a worse candidate could lose to, nor an overlap of min(1, NaN) = 1.

Each alignment is computed once per process: the result is remembered by the content of both images and
the options (`estimate_alignment`), so the guardrails' check and reference_diff, its fit and its scoring
of the same training images share one registration. Being a function of those alone (the rules above),
a remembered alignment is the one a fresh computation gives.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from fmtest.data.io import to_gray
from fmtest.errors import DataError

_WORK_SIZE = 512  # longest side the estimate runs at; sub-pixel there is ~1 px at 1024-2048 px
_MIN_OVERLAP = 0.5  # shared area (over the smaller image) needed for ok=True
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
# A residual beyond these means ECC ran away from a coarse estimate that was good to ~1 px / 1 deg.
_ECC_MAX_SHIFT = 0.05  # share of the working size
_ECC_MAX_TILT_DEG = 3.0
# Coarse candidates whose NCC differs by less than this are a tie; rounding differences between
# machines are below 1e-5, real differences between orientations of one part above 1e-3.
_NCC_TIE = 1e-4
_REMEMBERED = 16_384  # alignments kept (a few hundred bytes each): every image of a large dataset


@dataclass(frozen=True)
class Alignment:
    """Where an image sits relative to the reference.

    `matrix` (2x3, float64) maps image pixel coordinates (x, y) to reference coordinates.
    `angle_deg` and `scale` are its rotation (OpenCV convention: positive = counter-clockwise as
    displayed) and scale; `dx`, `dy` its translation (the reference position of image pixel (0, 0)).
    `quality` is the NCC of the overlap in [0, 1], `overlap` the shared area over the smaller of
    the two images' areas, `ok` whether both are high enough to trust the alignment; `failure`
    says why not, in words a report can show.
    """

    dx: float
    dy: float
    angle_deg: float
    scale: float
    matrix: np.ndarray
    quality: float
    overlap: float
    ok: bool
    failure: str | None = None


def _gray(image: np.ndarray) -> np.ndarray:
    """Colour is reduced to luminance explicitly (registration needs one channel), never guessed."""
    try:
        return to_gray(image)
    except ValueError:
        raise DataError(f"cannot align an image of shape {np.shape(image)}: expected HxW or HxWx3") from None


def estimate_alignment(image: np.ndarray, reference: np.ndarray, *, allow_scale: bool = False,
                       min_quality: float = 0.5) -> Alignment:
    """Register `image` to `reference` (translation + rotation, and scale if `allow_scale`); computed once per
    process for the same image and reference content and options."""
    img, ref = _gray(image), _gray(reference)
    key = (_content_key(img), _content_key(ref), allow_scale, min_quality)
    with _MEMO_LOCK:
        found = _MEMO.get(key)
        if found is not None:
            _MEMO.move_to_end(key)
            return found
    alignment = _estimate(img, ref, allow_scale, min_quality)
    alignment.matrix.setflags(write=False)  # shared by every caller that asks again
    with _MEMO_LOCK:
        _MEMO[key] = alignment
        while len(_MEMO) > _REMEMBERED:
            _MEMO.popitem(last=False)
    return alignment


_MEMO: OrderedDict[tuple, Alignment] = OrderedDict()
_MEMO_LOCK = threading.Lock()


def _content_key(gray: np.ndarray) -> str:
    h = hashlib.sha256(f"{gray.shape}{gray.dtype.str}".encode())
    h.update(np.ascontiguousarray(gray).tobytes())
    return h.hexdigest()


def _estimate(img: np.ndarray, ref: np.ndarray, allow_scale: bool, min_quality: float) -> Alignment:
    for what, gray in (("image", img), ("reference", ref)):
        if not np.isfinite(gray).all():
            return _failed(f"the {what} has non-finite pixel values (NaN or Inf)")
    factor = min(1.0, _WORK_SIZE / max(*img.shape, *ref.shape))
    img_w, ref_w = _standardise(_resize(img, factor)), _standardise(_resize(ref, factor))
    matrix_w = _register(img_w, ref_w, allow_scale)
    if matrix_w is None:
        return _failed("no orientation gives a defined correlation with the reference")
    matrix = _to_full_resolution(matrix_w, factor)
    quality = _ncc(img_w, ref_w, matrix_w)
    overlap = _overlap(img_w.shape, ref_w.shape, matrix_w)
    if not (np.isfinite(matrix).all() and np.isfinite(quality) and np.isfinite(overlap)):
        return _failed("the estimate is not finite")
    failure = None
    if quality < min_quality:
        failure = f"quality {quality:.2f} below {min_quality:.2f}"
    elif overlap < _MIN_OVERLAP:
        failure = f"overlap {overlap:.2f} with the reference below {_MIN_OVERLAP:.2f}"
    return _make_alignment(matrix, quality, overlap, failure)


def _failed(reason: str) -> Alignment:
    return Alignment(dx=0.0, dy=0.0, angle_deg=0.0, scale=1.0, matrix=np.eye(2, 3), quality=0.0, overlap=0.0,
                     ok=False, failure=reason)


def warp_to_reference(image: np.ndarray, alignment: Alignment, shape: tuple[int, ...], *,
                      replicate_border: bool = False) -> np.ndarray:
    """`image` resampled into the reference frame of size `shape[:2]`; uncovered pixels are 0, or with
    `replicate_border` the nearest edge pixel of the image (no black wedge for a model to remark on)."""
    return _warp(image, alignment.matrix, shape, inverse=False, replicate_border=replicate_border)


def warp_from_reference(mask_or_image: np.ndarray, alignment: Alignment, shape: tuple[int, ...]) -> np.ndarray:
    """Map something drawn in the reference frame back onto the image frame of size `shape[:2]`.

    Boolean masks are resampled nearest-neighbour and come back bool; images bilinearly.
    """
    return _warp(mask_or_image, alignment.matrix, shape, inverse=True)


def overlap_mask(alignment: Alignment, image_shape: tuple[int, ...], reference_shape: tuple[int, ...]) -> np.ndarray:
    """bool mask, reference frame: pixels whose warped value comes entirely from inside the image.

    Border pixels that bilinear interpolation mixes with the zero fill are left out: they would
    read as differences that are not there.
    """
    weight = warp_to_reference(np.ones(image_shape[:2], dtype=np.float32), alignment, reference_shape)
    return weight > 0.999


def _warp(array: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...], inverse: bool,
          replicate_border: bool = False) -> np.ndarray:
    h, w = shape[:2]
    flags = cv2.WARP_INVERSE_MAP if inverse else 0
    if array.dtype == bool:
        out = cv2.warpAffine(array.astype(np.uint8), matrix, (w, h), flags=flags | cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.astype(bool)
    out = cv2.warpAffine(np.asarray(array, dtype=np.float32), matrix, (w, h), flags=flags | cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE if replicate_border else cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape((h, w, *array.shape[2:]))  # warpAffine drops a trailing channel axis of size 1


def _make_alignment(matrix: np.ndarray, quality: float, overlap: float, failure: str | None) -> Alignment:
    a, b = matrix[0, 0], matrix[1, 0]
    return Alignment(dx=float(matrix[0, 2]), dy=float(matrix[1, 2]),
                     angle_deg=_rotation_of(matrix), scale=float(np.hypot(a, b)),
                     matrix=np.asarray(matrix, dtype=np.float64), quality=float(np.clip(quality, 0.0, 1.0)),
                     overlap=float(overlap), ok=failure is None, failure=failure)


def _resize(gray: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by exactly `factor` (OpenCV maps pixel centres: x_small = (x + 0.5) * factor - 0.5)."""
    if factor == 1.0:
        return gray
    return cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


def _to_full_resolution(matrix_w: np.ndarray, factor: float) -> np.ndarray:
    """The working-resolution matrix expressed in full-resolution pixel coordinates."""
    shrink = np.array([[factor, 0.0, 0.5 * factor - 0.5], [0.0, factor, 0.5 * factor - 0.5], [0, 0, 1]])
    grow = np.linalg.inv(shrink)
    full = grow @ np.vstack([matrix_w, [0.0, 0.0, 1.0]]) @ shrink
    return full[:2]


def _standardise(gray: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread: padding with 0 then adds no edge, and contrast differences drop out."""
    std = float(gray.std())
    return ((gray - gray.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _pad_square(gray: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, size), dtype=np.float32)
    out[: gray.shape[0], : gray.shape[1]] = gray
    return out


@dataclass(frozen=True)
class _Candidate:
    rotation: float  # degrees in (-180, 180]
    matrix: np.ndarray  # working resolution, image -> reference
    ncc: float


def _register(img: np.ndarray, ref: np.ndarray, allow_scale: bool) -> np.ndarray | None:
    """The refined working-resolution matrix of the best orientation; None when no candidate gives a
    finite NCC.

    Coarse NCC says little about which orientation wins once refined (on near-symmetric parts the
    two ends of a half turn are a few thousandths apart refined and a tenth apart coarse), so the
    best coarse candidate of each orientation (candidates within ECC's reach count as one) is refined
    and the refined NCCs decide, near-ties (`_NCC_TIE`) going to the smallest rotation.
    """
    candidates = sorted(_coarse_candidates(img, ref, allow_scale), key=lambda c: -c.ncc)
    orientations: list[_Candidate] = []
    for c in candidates:
        if not any(_same_orientation(c, kept) for kept in orientations):
            orientations.append(c)
    refined = []
    for c in orientations:
        matrix = _refine_ecc(img, ref, c.matrix, allow_scale)
        ncc = _ncc(img, ref, matrix)
        if np.isfinite(ncc):
            refined.append(_Candidate(_rotation_of(matrix), matrix, ncc))
    if not refined:
        return None
    best = max(c.ncc for c in refined)
    return min((c for c in refined if c.ncc >= best - _NCC_TIE), key=lambda c: abs(c.rotation)).matrix


def _coarse_candidates(img: np.ndarray, ref: np.ndarray, allow_scale: bool) -> list[_Candidate]:
    """0°, 180° and the estimated θ, θ+180°, each with its phase-correlation translation and NCC
    (candidates whose NCC is undefined are left out)."""
    size = max(*img.shape, *ref.shape)
    img_sq, ref_sq = _pad_square(img, size), _pad_square(ref, size)
    angle, scale = _rotation_scale(img_sq, ref_sq, allow_scale)
    orientations = [(0.0, 1.0), (180.0, 1.0)]
    if np.isfinite(angle) and np.isfinite(scale):
        orientations += [(angle, scale), (angle + 180.0, scale)]
    centre = (size / 2.0, size / 2.0)
    out = []
    for rotation, cand_scale in orientations:
        rot = cv2.getRotationMatrix2D(centre, rotation, cand_scale)
        rotated = cv2.warpAffine(img_sq, rot, (size, size), flags=cv2.INTER_LINEAR)
        matrix = rot.copy()
        matrix[:, 2] += _phase_shift(ref_sq, rotated)
        ncc = _ncc(img, ref, matrix)
        if np.isfinite(ncc):
            out.append(_Candidate(_wrap_degrees(rotation), matrix, ncc))
    return out


def _same_orientation(a: _Candidate, b: _Candidate) -> bool:
    """Within ECC's reach of each other: refining either ends in the same place."""
    return abs(_wrap_degrees(a.rotation - b.rotation)) <= _ECC_MAX_TILT_DEG


def _rotation_of(matrix: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0])))


def _wrap_degrees(angle: float) -> float:
    """The same rotation in (-180, 180]."""
    return 180.0 - (180.0 - angle) % 360.0


def _phase_shift(ref: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """Translation t such that ref(x) ≈ moved(x - t)."""
    window = cv2.createHanningWindow(ref.shape[::-1], cv2.CV_32F)
    (sx, sy), _ = cv2.phaseCorrelate(moved, ref, window)
    return np.array([sx, sy])


def _log_spectrum(gray: np.ndarray) -> np.ndarray:
    window = cv2.createHanningWindow(gray.shape[::-1], cv2.CV_32F)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(gray * window)))
    return np.log1p(spectrum).astype(np.float32)


def _rotation_scale(img: np.ndarray, ref: np.ndarray, allow_scale: bool) -> tuple[float, float]:
    """Angle (deg, in [-90, 90)) and scale that map `img` onto `ref` up to a half turn, from phase
    correlation of the polar spectra over the half circle (the spectrum repeats every 180°)."""
    size = img.shape[0]
    centre, radius = (size / 2.0, size / 2.0), size / 2.0
    n_angle, n_radius = 360, size // 2
    flags = cv2.INTER_LINEAR | cv2.WARP_FILL_OUTLIERS | (cv2.WARP_POLAR_LOG if allow_scale else cv2.WARP_POLAR_LINEAR)
    half = n_angle // 2
    # Drop the lowest frequencies: they carry the window's shape, not the part's orientation.
    cut = n_radius // 8
    polar_img, polar_ref = (cv2.warpPolar(_log_spectrum(x), (n_radius, n_angle), centre, radius, flags)[:half, cut:]
                            for x in (img, ref))
    (shift_r, shift_a), _ = cv2.phaseCorrelate(np.ascontiguousarray(polar_img), np.ascontiguousarray(polar_ref))
    angle = -shift_a * 360.0 / n_angle
    scale = float(np.exp(-shift_r * np.log(radius) / n_radius)) if allow_scale else 1.0
    return float(angle), scale


def _refine_ecc(img: np.ndarray, ref: np.ndarray, coarse: np.ndarray, allow_scale: bool) -> np.ndarray:
    """Sub-pixel residual motion after the coarse warp; the coarse matrix if ECC fails or runs away.

    ECC estimates a rigid residual, or an affine one projected onto the nearest similarity when
    scale is allowed (ECC has no similarity model). The result is not compared by NCC with the
    coarse estimate: bilinear resampling at half-pixel offsets averages out noise and inflates NCC.
    """
    size = ref.shape[::-1]
    warped = cv2.warpAffine(img, coarse, size, flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(np.ones_like(img, dtype=np.uint8), coarse, size, flags=cv2.INTER_NEAREST)
    motion = cv2.MOTION_AFFINE if allow_scale else cv2.MOTION_EUCLIDEAN
    try:
        _, residual = cv2.findTransformECC(ref, warped, np.eye(2, 3, dtype=np.float32), motion, _ECC_CRITERIA,
                                           covered, 5)
    except cv2.error:  # no convergence (flat or unrelated content)
        return coarse
    if not np.isfinite(residual).all():
        return coarse
    residual = residual.astype(np.float64)  # maps reference coords -> coarse-warped coords
    if allow_scale:
        a = (residual[0, 0] + residual[1, 1]) / 2
        b = (residual[1, 0] - residual[0, 1]) / 2
        residual[:, :2] = [[a, -b], [b, a]]
    shift = np.abs(residual[:, 2]).max()
    tilt = abs(np.degrees(np.arctan2(residual[1, 0], residual[0, 0])))
    if shift > _ECC_MAX_SHIFT * max(size) or tilt > _ECC_MAX_TILT_DEG:
        return coarse
    inv = cv2.invertAffineTransform(residual)  # image -> ref = inverse(residual) after coarse
    refined = inv[:, :2] @ coarse
    refined[:, 2] += inv[:, 2]
    return refined


def _ncc(img: np.ndarray, ref: np.ndarray, matrix: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation of the reference and the warped image on their overlap;
    NaN when it is not defined (a non-finite matrix, no overlap, a flat image), so no caller can take
    an undefined correlation for a poor one."""
    if not np.isfinite(matrix).all():
        return math.nan
    size = ref.shape[::-1]
    warped = cv2.warpAffine(img, matrix, size, flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(np.ones_like(img, dtype=np.uint8), matrix, size, flags=cv2.INTER_NEAREST) > 0
    if covered.sum() < 16:
        return math.nan
    a, b = warped[covered].astype(np.float64), ref[covered].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else math.nan


def _overlap(img_shape: tuple[int, int], ref_shape: tuple[int, int], matrix: np.ndarray) -> float:
    """Shared area over the smaller of the two areas, so a crop of the reference still counts as whole;
    NaN for a non-finite or degenerate matrix."""
    if not np.isfinite(matrix).all():
        return math.nan
    covered = cv2.warpAffine(np.ones(img_shape, dtype=np.uint8), matrix, ref_shape[::-1], flags=cv2.INTER_NEAREST)
    img_area = img_shape[0] * img_shape[1] * abs(np.linalg.det(matrix[:, :2]))
    if not img_area > 0:
        return math.nan
    return float(min(1.0, covered.sum() / min(img_area, ref_shape[0] * ref_shape[1])))
