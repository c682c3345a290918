"""Perturbations with severity ladders: the acquisition changes the robustness suite applies.

A robustness case re-runs a pipeline on perturbed test images and compares with the clean run:
a model that is right for the right reasons keeps its verdict under a small acquisition change
(brighter, noisier, shifted, recompressed). Each perturbation is one parameter, `level`, where
level 0 is the identity (the clean image, bit for bit) and larger levels are more severe.

Conventions: images stay float32 in [0, 1] (clipped) with their shape (HxW or HxWx3). Geometric
perturbations move mask and ignore with the same transform as the image, nearest-neighbour, so a
shift of k pixels moves the mask by exactly k pixels. Pixels shifted in from outside the field of
view are filled by repeating the edge in the image, are defect-free in the mask, and are marked
ignore (they hold no real content, so IoU leaves them out).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError

ImageOp = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
AffineOp = Callable[[tuple[int, int], float], np.ndarray]  # (height, width), level -> 2x3 matrix


@dataclass(frozen=True)
class Perturbation:
    """One kind of perturbation; `unit` says what `level` measures, `valid` which levels make sense.

    Photometric perturbations set `image_op`; geometric ones set `affine` (the image, mask and
    ignore are all warped with it).
    """

    name: str
    unit: str
    valid: Callable[[float], bool]
    image_op: ImageOp | None = None
    affine: AffineOp | None = None

    def check_level(self, level: float) -> None:
        if not self.valid(level):
            raise ConfigError(f"robustness level {level!r} is not valid for {self.name}: level is {self.unit}")

    def apply(self, sample: Sample, level: float, seed: int = 0) -> Sample:
        """A new Sample (same id and label) perturbed at `level`; level 0 returns the image unchanged.

        Random perturbations draw from a generator seeded by (seed, sample id): the same seed gives
        the same result, and different images get different noise.
        """
        self.check_level(level)
        image = _as_unit_float(sample.image)
        if level == 0:
            return replace(sample, image=image, meta={**sample.meta, "perturbation": self.name, "level": 0})
        mask, ignore = sample.mask, sample.ignore
        if self.affine is not None:
            matrix = self.affine(image.shape[:2], level)
            image = _warp(image, matrix, cv2.INTER_LINEAR, cv2.BORDER_REPLICATE, 0)
            if mask is not None:
                mask = _warp_bool(mask, matrix, fill=False)
            if ignore is not None:
                ignore = _warp_bool(ignore, matrix, fill=True)
            elif mask is not None:
                outside = _warp_bool(np.zeros(mask.shape, bool), matrix, fill=True)
                ignore = outside if outside.any() else None
        else:
            rng = np.random.default_rng([seed, zlib.crc32(sample.id.encode())])
            image = self.image_op(image, level, rng)
        image = np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
        meta = {**sample.meta, "perturbation": self.name, "level": level}
        return replace(sample, image=image, mask=mask, ignore=ignore, meta=meta)


def _as_unit_float(image: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def _warp(array: np.ndarray, matrix: np.ndarray, interpolation: int, border: int, fill: float) -> np.ndarray:
    h, w = array.shape[:2]
    return cv2.warpAffine(array, matrix, (w, h), flags=interpolation, borderMode=border, borderValue=fill)


def _warp_bool(mask: np.ndarray, matrix: np.ndarray, fill: bool) -> np.ndarray:
    warped = _warp(mask.astype(np.uint8), matrix, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT, int(fill))
    return warped.astype(bool)


# --------------------------------------------------------------------------- the perturbations


def _brightness(image, level, rng):
    return image + np.float32(level)


def _contrast(image, level, rng):
    mean = image.mean(dtype=np.float64)
    return mean + (1.0 - level) * (image - mean)


def _gamma(image, level, rng):
    return np.power(image, np.float32(1.0 + level))


def _gaussian_noise(image, level, rng):
    return image + rng.normal(0.0, level, image.shape).astype(np.float32)


def _blur(image, level, rng):
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(level), borderType=cv2.BORDER_REFLECT)


def _jpeg(image, level, rng):
    quality = int(round(100 - level))
    rgb = image.ndim == 3
    pixels = np.round(image * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels[..., ::-1] if rgb else pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode a {image.shape} image")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR if rgb else cv2.IMREAD_GRAYSCALE)
    return (decoded[..., ::-1] if rgb else decoded).astype(np.float32) / 255.0


def _gain_offset(image, level, rng):
    return gain_offset(image, gain=1.0 - level, offset=level)


def gain_offset(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """out = gain * x + offset: how a shifted SAT acquisition gate changes echo amplitude and floor."""
    return np.asarray(image, dtype=np.float32) * np.float32(gain) + np.float32(offset)


def _translation(shape, level):
    return np.float64([[1, 0, level], [0, 1, level]])


def _rotation(shape, level):
    h, w = shape
    return cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(level), 1.0)


def _is_integer(level: float) -> bool:
    return float(level).is_integer()


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in [
        Perturbation("brightness", "an added intensity offset, -1..1", lambda v: -1 <= v <= 1, _brightness),
        Perturbation("contrast", "the contrast loss about the image mean, <= 1 (1: flat image)",
                     lambda v: v <= 1, _contrast),
        Perturbation("gamma", "the change of the gamma exponent (out = x ** (1 + level)), > -1",
                     lambda v: v > -1, _gamma),
        Perturbation("gaussian_noise", "the noise standard deviation, >= 0", lambda v: v >= 0, _gaussian_noise),
        Perturbation("blur", "the Gaussian blur sigma in pixels, >= 0", lambda v: v >= 0, _blur),
        Perturbation("jpeg", "the JPEG quality loss, 100 - quality, an integer 0..99 (0: not compressed)",
                     lambda v: _is_integer(v) and 0 <= v <= 99, _jpeg),
        Perturbation("gain_offset", "the gate shift: gain 1 - level, offset + level (the floor rises, the peak "
                     "stays), 0..1", lambda v: 0 <= v <= 1, _gain_offset),
        Perturbation("translate", "the shift right and down in whole pixels", _is_integer, affine=_translation),
        Perturbation("rotate", "the counter-clockwise rotation about the image centre in degrees",
                     lambda v: -360 <= v <= 360, affine=_rotation),
    ]
}

DEFAULT_LADDERS: dict[str, tuple[float, ...]] = {
    "brightness": (0.05, 0.1, 0.2),
    "contrast": (0.1, 0.25, 0.5),
    "gamma": (0.1, 0.25, 0.5),
    "gaussian_noise": (0.01, 0.03, 0.05),
    "blur": (0.5, 1.0, 2.0),
    "jpeg": (10, 30, 50),  # JPEG quality 90, 70, 50
    "gain_offset": (0.05, 0.1, 0.2),
    "translate": (2, 5, 10),
    "rotate": (1, 2, 5),
}


def perturbation(name: str) -> Perturbation:
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown perturbation {name!r}; known: {', '.join(sorted(PERTURBATIONS))}") from None


def ladders(overrides: Mapping[str, Sequence[float]] | None = None) -> dict[str, tuple[float, ...]]:
    """DEFAULT_LADDERS with the suite config's `[robustness]` ladders laid over them, every level checked."""
    merged = dict(DEFAULT_LADDERS)
    for name, levels in (overrides or {}).items():
        p = perturbation(name)
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
            raise ConfigError(f"robustness ladder for {name} must be a non-empty list of levels, got {levels!r}")
        for level in levels:
            if not isinstance(level, (int, float)) or isinstance(level, bool):
                raise ConfigError(f"robustness level {level!r} for {name} is not a number")
            p.check_level(level)
        merged[name] = tuple(levels)
    return merged


# --------------------------------------------------------------------------- invariance scoring
