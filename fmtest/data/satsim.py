"""satsim: synthetic scanning-acoustic-microscopy (SAT) images of an electronic package.

A stand-in for the private IndustrialSAT data that runs with zero downloads and has exact masks.
Each part is a top view of a package: mold compound, lead-frame pads on all four sides, a die on
its paddle with a textured solder layer and a grid of bumps, and bond wires from die to pads.
Defects are the ones the study names: voids (small round blobs), cracks (thin curved lines) and
delaminations (large irregular regions of changed reflection).

The nuisances are the ones that defeat a reference-image difference on real SAT recordings:
manufacturing tolerance of every feature position, misregistration (shift, rotation), blur,
brightness/contrast drift with an illumination ramp, and noise.

Rendering order keeps the mask exact: the scene is drawn in part coordinates, warped and blurred;
the defect's strength field is warped by the same transform and applied pixel-wise, then the
pixel-wise gain/offset and the (identical) noise field follow. So a defective render differs from
the defect-free render of the same key only inside the mask.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import cv2
import numpy as np

from fmtest.data.base import Dataset
from fmtest.data.options import require_non_negative
from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError

DEFECT_TYPES = ("void", "crack", "delamination")
_SPLIT_CODES = {"train": 0, "test": 1, "reference": 2}
_TYPE_CODES = {"good": 0, "void": 1, "crack": 2, "delamination": 3}
# Half coverage is the geometric outline of a defect: the mask is the warped outline, and the
# defect's visible strength ramps from 0 at the outline to full inside it.
_OUTLINE = 0.5


@dataclass(frozen=True)
class Nuisance:
    """Largest deviation drawn per image (uniformly, signed where it makes sense); 0 turns one off.

    Lengths are in pixels of the rendered image. The same unit draws are scaled by these strengths,
    so rendering one key at growing strengths moves the same part further in the same direction.
    """

    shift: float = 2.0  # misregistration per axis, px
    rotation: float = 1.0  # degrees
    brightness: float = 0.05  # additive offset, plus an illumination ramp of half this size
    contrast: float = 0.10  # relative gain change
    noise: float = 0.02  # standard deviation of additive Gaussian noise
    blur: float = 1.0  # largest Gaussian blur sigma, px
    tolerance: float = 2.0  # deviation of die, pads and wires from their nominal positions, px


# The reference recording: a nominal part, registered and without drift, but still a recording (noise).
NOMINAL = Nuisance(shift=0.0, rotation=0.0, brightness=0.0, contrast=0.0, blur=0.0, tolerance=0.0)


@dataclass(frozen=True)
class SatPart:
    image: np.ndarray  # float32 HxW in [0, 1]
    mask: np.ndarray  # bool HxW, the defect
    meta: dict = field(default_factory=dict)  # the nuisance values drawn for this image


@functools.cache
def render_version() -> str:
    """What a rendered part depends on besides its arguments: this module's code and the libraries that draw."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"numpy {np.__version__} opencv {cv2.__version__}".encode())
    return h.hexdigest()[:32]


def render_part(key: int | Sequence[int], defect: str | None = None, size: int = 256,
                nuisance: Nuisance = Nuisance()) -> SatPart:
    """Render one part. Same key, same part: the scene, the recording and the defect each draw from
    their own random stream, so changing `defect` or `nuisance` leaves everything else unchanged."""
    if defect is not None and defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect type {defect!r}; known: {', '.join(DEFECT_TYPES)}")
    scene_seed, record_seed, defect_seed = np.random.SeedSequence(key).spawn(3)
    scene_rng, record_rng = np.random.default_rng(scene_seed), np.random.default_rng(record_seed)
    layout = _draw_layout(scene_rng, size, nuisance.tolerance)
    scene = _draw_scene(scene_rng, layout, size)
    strength = np.zeros_like(scene)
    if defect is not None:
        strength = _DEFECT_SHAPES[defect](np.random.default_rng(defect_seed), layout, size)

    rec = _draw_recording(record_rng, nuisance, size)
    warp = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), rec["rotation_deg"], 1.0)
    warp[:, 2] += rec["shift_px"]
    image = cv2.warpAffine(scene, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if rec["blur_sigma"] > 0.05:
        image = cv2.GaussianBlur(image, (0, 0), rec["blur_sigma"])
    strength = cv2.warpAffine(strength, warp, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    mask = strength > _OUTLINE
    if defect is not None:
        ramp = np.where(mask, (strength - _OUTLINE) / (1 - _OUTLINE), 0.0).astype(np.float32)
        image = _DEFECT_LOOKS[defect](image, ramp)

    image = (image - 0.5) * rec["gain"] + 0.5 + rec["offset"] + rec["illumination"]
    image = np.clip(image + rec["noise"], 0.0, 1.0).astype(np.float32)
    meta = {k: rec[k] for k in ("shift_px", "rotation_deg", "blur_sigma", "gain")}
    meta["shift_px"] = tuple(float(v) for v in meta["shift_px"])
    return SatPart(image=image, mask=mask, meta=meta)


# --- the part ---------------------------------------------------------------------------------


@dataclass
class _Layout:
    """Feature positions of one part in part coordinates (px), nominal plus tolerance."""

    die: tuple[float, float, float, float]  # y0, x0, y1, x1
    paddle: tuple[float, float, float, float]
    pads: list[tuple[float, float, float, float]]
    wires: list[tuple[tuple[float, float], tuple[float, float]]]


def _draw_layout(rng: np.random.Generator, size: int, tolerance: float) -> _Layout:
    def jitter(n: int = 1) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, n) * tolerance

    c = size / 2
    dy, dx = jitter(2)
    half_h, half_w = 0.19 * size + jitter()[0] / 2, 0.22 * size + jitter()[0] / 2
    die = (c + dy - half_h, c + dx - half_w, c + dy + half_h, c + dx + half_w)
    pad_dy, pad_dx = jitter(2) / 2
    paddle = (c + pad_dy - 0.25 * size, c + pad_dx - 0.28 * size, c + pad_dy + 0.25 * size, c + pad_dx + 0.28 * size)

    pads, wires = [], []
    n_per_side, pad_len, pad_w = 7, 0.09 * size, 0.045 * size
    for side in range(4):
        offsets = (np.arange(n_per_side) - (n_per_side - 1) / 2) * 0.1 * size + jitter(n_per_side) / 2
        for along in offsets:
            inner, outer = 0.4 * size, 0.4 * size + pad_len
            pad_center = _side_point(side, c, along, (inner + outer) / 2)
            pad_h, pad_wd = (pad_len, pad_w) if side in (0, 2) else (pad_w, pad_len)
            pads.append((pad_center[0] - pad_h / 2, pad_center[1] - pad_wd / 2,
                         pad_center[0] + pad_h / 2, pad_center[1] + pad_wd / 2))
            wire_end = _side_point(side, c, along * 1.05, inner + 0.01 * size)
            wires.append((_die_bond_point(die, side, along * 0.55, 0.02 * size), wire_end))
    return _Layout(die=die, paddle=paddle, pads=pads, wires=wires)


def _die_bond_point(die, side: int, along: float, inset: float) -> tuple[float, float]:
    """(y, x) of a bond pad on the die, `inset` in from the die edge facing `side`."""
    y0, x0, y1, x1 = die
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    points = [(y0 + inset, cx + along), (cy + along, x1 - inset), (y1 - inset, cx + along), (cy + along, x0 + inset)]
    return points[side]


def _side_point(side: int, c: float, along: float, dist: float) -> tuple[float, float]:
    """(y, x) of a point `dist` from the centre towards side 0=top, 1=right, 2=bottom, 3=left."""
    return [(c - dist, c + along), (c + along, c + dist), (c + dist, c + along), (c + along, c - dist)][side]


def _draw_scene(rng: np.random.Generator, layout: _Layout, size: int) -> np.ndarray:
    scale = size / 256
    img = 0.30 + 0.03 * _smooth_noise(rng, size, 24 * scale) + 0.015 * _smooth_noise(rng, size, 0.8)
    _fill_rect(img, layout.paddle, 0.42)
    for pad in layout.pads:
        _fill_rect(img, pad, 0.62)
    _fill_rect(img, _grow(layout.die, 1.0), 0.68)  # the die edge reflects strongly
    _fill_rect(img, layout.die, 0.52)
    y0, x0, y1, x1 = (int(v) for v in layout.die)
    solder = 0.035 * _smooth_noise(rng, size, 1.8 * scale)
    img[y0 + 1 : y1, x0 + 1 : x1] += solder[y0 + 1 : y1, x0 + 1 : x1]
    pitch = 22 * scale
    for cy in np.arange(layout.die[0] + pitch * 0.8, layout.die[2] - pitch * 0.5, pitch):
        for cx in np.arange(layout.die[1] + pitch * 0.8, layout.die[3] - pitch * 0.5, pitch):
            coverage, where = _disk_coverage(size, cy, cx, 2.6 * scale + 0.5, 2.6 * scale + 0.5, 0.0)
            _blend(img, coverage, 0.64, where)
    wire_width = max(1.2, 1.4 * scale)
    for start, end in layout.wires:
        coverage, where = _segment_coverage(size, start, end, wire_width)
        _blend(img, coverage, 0.80, where)
    return img.astype(np.float32)


def _grow(rect, by):
    return rect[0] - by, rect[1] - by, rect[2] + by, rect[3] + by


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation: texture at scale `sigma`."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return smooth / max(float(smooth.std()), 1e-6)


def _fill_rect(img: np.ndarray, rect, value: float) -> None:
    """Paint an axis-aligned rectangle with exact sub-pixel coverage at its edges. Only the rows and columns it
    covers are touched: blending with coverage 0 leaves a pixel as it was, so the image is the same."""
    y0, x0, y1, x1 = rect
    ys, xs = np.arange(img.shape[0]), np.arange(img.shape[1])
    cov_y = np.clip(np.minimum(ys + 1, y1) - np.maximum(ys, y0), 0, 1)
    cov_x = np.clip(np.minimum(xs + 1, x1) - np.maximum(xs, x0), 0, 1)
    rows, cols = np.flatnonzero(cov_y), np.flatnonzero(cov_x)
    if rows.size and cols.size:
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        _blend(img, np.outer(cov_y[r0:r1], cov_x[c0:c1]), value, np.s_[r0:r1, c0:c1])


def _blend(img: np.ndarray, coverage: np.ndarray, value: float, where=np.s_[:, :]) -> None:
    img[where] += coverage * (value - img[where])


def _max_into(field_: np.ndarray, coverage: np.ndarray, where) -> None:
    field_[where] = np.maximum(field_[where], coverage)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return ys + 0.5, xs + 0.5  # pixel centres


def _window(size: int, y0: float, x0: float, y1: float, x1: float):
    """The pixels a shape inside [y0, y1] x [x0, x1] can touch: their slice and pixel-centre grids."""
    r0, r1 = max(math.floor(y0) - 1, 0), min(math.ceil(y1) + 2, size)
    c0, c1 = max(math.floor(x0) - 1, 0), min(math.ceil(x1) + 2, size)
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    return np.s_[r0:r1, c0:c1], ys + 0.5, xs + 0.5


def _disk_coverage(size: int, cy: float, cx: float, ry: float, rx: float, angle: float):
    """Approximate pixel coverage of a rotated ellipse (a one-pixel ramp across its outline)."""
    reach = max(rx, ry) + 1
    where, ys, xs = _window(size, cy - reach, cx - reach, cy + reach, cx + reach)
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = (xs - cx) * ca + (ys - cy) * sa, -(xs - cx) * sa + (ys - cy) * ca
    dist = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return np.clip((1.0 - dist) * min(rx, ry) + 0.5, 0.0, 1.0), where


def _segment_coverage(size: int, p0, p1, width: float):
    """Approximate pixel coverage of a line segment of the given width with round caps."""
    (y0, x0), (y1, x1) = p0, p1
    reach = width / 2 + 1
    where, ys, xs = _window(size, min(y0, y1) - reach, min(x0, x1) - reach, max(y0, y1) + reach, max(x0, x1) + reach)
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((ys - y0) * dy + (xs - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
    dist = np.hypot(ys - (y0 + t * dy), xs - (x0 + t * dx))
    return np.clip(width / 2 - dist + 0.5, 0.0, 1.0), where


# --- defects (strength fields in part coordinates, 1 inside, 0 outside) ---------------------------


def _random_point_in(rng: np.random.Generator, rect, margin: float) -> tuple[float, float]:
    y0, x0, y1, x1 = rect
    return rng.uniform(y0 + margin, y1 - margin), rng.uniform(x0 + margin, x1 - margin)


def _void_shape(rng: np.random.Generator, layout: _Layout, size: int) -> np.ndarray:
    scale = size / 256
    field_ = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(1, 4)):
        r = max(2.0, rng.uniform(2.5, 6.5) * scale)
        cy, cx = _random_point_in(rng, layout.die, r + 3)
        _max_into(field_, *_disk_coverage(size, cy, cx, r * rng.uniform(0.7, 1.0), r, rng.uniform(0, math.pi)))
    return field_


def _crack_shape(rng: np.random.Generator, layout: _Layout, size: int) -> np.ndarray:
    """A gently curved, slightly jagged line (a quadratic Bezier with jittered vertices)."""
    scale = size / 256
    length = rng.uniform(0.15, 0.32) * size
    start = np.array(_random_point_in(rng, layout.die, 4))
    heading = rng.uniform(0, 2 * math.pi)
    end = start + length * np.array([math.sin(heading), math.cos(heading)])
    lo, hi = np.array(layout.die[:2]) + 3, np.array(layout.die[2:]) - 3
    end = np.clip(end, lo, hi)
    normal = np.array([-(end - start)[1], (end - start)[0]]) / max(np.linalg.norm(end - start), 1e-6)
    control = (start + end) / 2 + normal * rng.uniform(-0.35, 0.35) * length
    t = np.linspace(0, 1, 16)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    points[1:-1] += rng.normal(0, 0.6 * scale, points[1:-1].shape)
    width = max(1.8, rng.uniform(1.6, 2.4) * scale)
    field_ = np.zeros((size, size), np.float32)
    for p0, p1 in zip(points[:-1], points[1:], strict=True):
        _max_into(field_, *_segment_coverage(size, tuple(p0), tuple(p1), width))
    return field_


def _delamination_shape(rng: np.random.Generator, layout: _Layout, size: int) -> np.ndarray:
    """A star-shaped region with a wavy outline, kept on the die paddle where delamination occurs."""
    ys, xs = _grid(size)
    radius = rng.uniform(0.07, 0.14) * size
    cy, cx = _random_point_in(rng, layout.die, radius * 0.3)
    angle = np.arctan2(ys - cy, xs - cx)
    outline = np.ones_like(angle)
    for k in range(2, 6):
        outline += rng.uniform(0.03, 0.18) / (k - 1) * np.cos(k * angle + rng.uniform(0, 2 * math.pi))
    dist = np.hypot(ys - cy, xs - cx)
    region = np.clip(radius * outline - dist + 0.5, 0.0, 1.0)
    y0, x0, y1, x1 = layout.paddle
    inside = ((ys > y0 + 2) & (ys < y1 - 2) & (xs > x0 + 2) & (xs < x1 - 2)).astype(np.float32)
    return (region * inside).astype(np.float32)


_DEFECT_SHAPES = {"void": _void_shape, "crack": _crack_shape, "delamination": _delamination_shape}
# How each defect changes the recorded reflection where its strength ramp is > 0.
_DEFECT_LOOKS = {
    "void": lambda img, s: img + 0.30 * s,  # air pocket: strong reflection, bright
    "crack": lambda img, s: img - 0.26 * s,  # scattering at the crack: dark line
    "delamination": lambda img, s: img + 0.75 * s * (0.82 - img),  # bright, texture washed out
}


# --- the recording -----------------------------------------------------------------------------


def _draw_recording(rng: np.random.Generator, nuisance: Nuisance, size: int) -> dict:
    u = rng.uniform(-1.0, 1.0, 6)
    blur_u, ramp_angle = rng.uniform(0.0, 1.0), rng.uniform(0, 2 * math.pi)
    noise = rng.standard_normal((size, size)).astype(np.float32) * np.float32(nuisance.noise)
    ys, xs = _grid(size)
    ramp = ((ys / size - 0.5) * math.sin(ramp_angle) + (xs / size - 0.5) * math.cos(ramp_angle))
    return {
        "shift_px": u[0:2] * nuisance.shift,
        "rotation_deg": float(u[2] * nuisance.rotation),
        "gain": float(1.0 + u[3] * nuisance.contrast),
        "offset": float(u[4] * nuisance.brightness),
        "illumination": (ramp * nuisance.brightness * abs(u[5])).astype(np.float32),
        "blur_sigma": float(blur_u * nuisance.blur),
        "noise": noise,
    }


# --- the dataset -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SatSimOptions:
    size: int = 256
    n_train: int = 40
    n_test_good: int = 60
    n_test_defective: int = 30
    seed: int = 0
    defect_types: tuple[str, ...] = DEFECT_TYPES
    shift: float = Nuisance.shift
    rotation: float = Nuisance.rotation
    brightness: float = Nuisance.brightness
    contrast: float = Nuisance.contrast
    noise: float = Nuisance.noise
    blur: float = Nuisance.blur
    tolerance: float = Nuisance.tolerance

    def __post_init__(self) -> None:
        nuisance = {f.name: getattr(self, f.name) for f in fields(Nuisance)}
        require_non_negative("satsim", n_train=self.n_train, n_test_good=self.n_test_good,
                             n_test_defective=self.n_test_defective, **nuisance)
        if self.size < 64:
            raise ConfigError(f"option size must be >= 64 (the package layout needs room), got {self.size}",
                              "[datasets.satsim]")
        unknown = sorted(set(self.defect_types) - set(DEFECT_TYPES))
        if unknown or not self.defect_types:
            raise ConfigError(f"option defect_types must name some of {', '.join(DEFECT_TYPES)}, "
                              f"got {list(self.defect_types)}", "[datasets.satsim]")

    @property
    def nuisance(self) -> Nuisance:
        return Nuisance(**{f.name: getattr(self, f.name) for f in fields(Nuisance)})


class SatSim(Dataset):
    """Generated on access: each sample is rendered from (seed, split, defect type, index) alone."""

    name = "satsim"
    options_type = SatSimOptions
    has_masks = True

    def __init__(self, options: SatSimOptions = SatSimOptions()):
        self.options = options
        o = options
        # one reference sample, so the sample memo renders it once per run
        self._reference = self._ref("reference", "good", 0, replace(NOMINAL, noise=o.noise))
        defective = [self._ref("test", o.defect_types[i % len(o.defect_types)], i // len(o.defect_types))
                     for i in range(o.n_test_defective)]
        super().__init__(train=SampleSet([self._ref("train", "good", i) for i in range(o.n_train)]),
                         test=SampleSet([self._ref("test", "good", i) for i in range(o.n_test_good)] + defective))

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> SatSim:
        return cls(cls.read_options(options))

    @property
    def reference(self) -> Sample:
        return self._reference.get()

    def _ref(self, split: str, kind: str, index: int, nuisance: Nuisance | None = None) -> SampleRef:
        sample_id = f"{split}/{kind}/{index:03d}"
        key = (self.options.seed, _SPLIT_CODES[split], _TYPE_CODES[kind], index)
        defect = None if kind == "good" else kind
        nuisance = nuisance or self.options.nuisance
        size = self.options.size

        def load() -> Sample:
            part = render_part(key, defect, size, nuisance)
            return Sample(id=sample_id, image=part.image, label=OK if defect is None else NOK, mask=part.mask,
                          meta={"defect_type": kind, "split": split, **part.meta})

        content = json.dumps([render_version(), key, defect, size, dataclasses.asdict(nuisance), sample_id],
                             sort_keys=True)
        return SampleRef(id=sample_id, label=OK if defect is None else NOK, load=load, content_key=content)

    def describe(self) -> str:
        return f"{super().describe()}; generated, seed {self.options.seed}, {self.options.size}px"
