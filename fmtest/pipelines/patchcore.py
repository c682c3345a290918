"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022): a reference baseline.

The standard unsupervised detector a team would try first, beside padim. The algorithm is the paper's as
anomalib implements it (`anomalib.models.image.patchcore`; tests/pipelines/test_anomalib.py compares the two when anomalib
is installed). fmtest runs its own implementation so that it needs no extra, no download and no Lightning, fits
the default run's time, and is bit-reproducible:

- Locally aware patch features: two stages of an ImageNet CNN at strides 8 and 16, each averaged over its 3x3
  neighbourhood, the coarser one upsampled (bilinear) onto the finer grid, concatenated.
- Memory bank: the patches of good training images, reduced by greedy k-center coreset subsampling to
  `coreset_ratio` of them. Distances for the selection are taken in a very sparse random projection
  (Li, Hastie and Church 2006, as anomalib) to `projection_dim` dimensions when the features are wider; the first
  centre is drawn with `seed`.
- Scores: a patch scores its distance to the nearest memory-bank feature. The image score is the largest patch
  score s*, weighted by how isolated that patch's nearest neighbour m* is in the bank:
  s = (1 - softmax(distances to m*'s `num_neighbors` nearest bank features)[m*]) * s* (paper eq. 7);
  with one neighbour, s = s*.
- Anomaly map: patch scores upsampled (nearest) to `image_size`, Gaussian-smoothed (sigma `blur_sigma` pixels,
  borders reflected; anomalib's sigma 4), then resized (bilinear) to the image.

Backbone (`backbone = "auto"`): torchvision's Wide ResNet-50-2, layers 2 and 3 as in the paper, when
`wide_resnet50_2-95faca4d.pth` is in the weights folder; else the EfficientNet-Lite0 that ships in a pip package
(padim's features, stride-8 and stride-16 stages). The model id starts with the backbone's name.

Thresholds as padim: a seeded share of the good training images (`calibration_fraction`) stays out of the memory
bank and sets the image and pixel thresholds (fmtest.pipelines.calibration). The label is the image decision.

Exact arithmetic: features are rounded onto a power-of-two grid (step 1/8192 for EfficientNet-Lite0's 152
channels, whose values are of order 5) chosen so that every squared distance and each partial sum of it is an
integer below 2^53. float64 computes those exactly in any summation order, so the coreset, the nearest neighbours
and the scores are bit-identical for any batch size, thread count or BLAS, given the same features; ties go to
the lowest index. Each image is scored on its own. (The CNN's convolutions are batch-invariant but can differ in
their last bits between thread counts; padim shares that.)

Cost: `image_size = 128` (a 16x16 patch grid) and `coreset_ratio = 0.05` keep a default-run case on 2 CPU
cores to 1-3 s of fitting and scoring (satsim, elpv); the paper's 224 pixels cost 6-8x as much (the coreset
search grows with the square of the patch count), anomalib's coreset_ratio 0.1 1-2x, both together 8-15x.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from tqdm.auto import tqdm

from fmtest.data.sample import Sample, SampleSet
from fmtest.errors import DataError, MissingWeights
from fmtest.models import efficientnet, imagenet_cnn, registry
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.calibration import Thresholds, split_good
from fmtest.pipelines.options import parse_options, require_choice, require_in_range
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")

BACKBONES = ("auto", "wide_resnet50_2", "efficientnet_lite0")
FEATURE_LIMIT = 256.0  # features are clamped to +-this before gridding; ImageNet CNN stages stay below ~50
_EXACT_INTEGERS = 2.0 ** 53  # float64 holds every integer up to this exactly


@dataclass(frozen=True)
class PatchcoreOptions:
    """`[pipelines.patchcore]`; defaults follow the paper and anomalib except where the run's cost decides."""

    backbone: str = "auto"  # auto: wide_resnet50_2 when its checkpoint is present, else efficientnet_lite0
    image_size: int = 128  # encoder input side, pixels (multiple of 16); the paper uses 224
    coreset_ratio: float = 0.05  # share of the patches kept in the memory bank; anomalib 0.1, the paper 0.01-0.25
    num_neighbors: int = 9  # bank neighbours of m* in the image score's reweighting (anomalib's default)
    projection_dim: int = 128  # dimensions the coreset selection works in (the paper's d*); 0: no projection
    calibration_fraction: float = 0.25  # share of good training images held out to set thresholds
    pixel_quantile: float = 0.999  # of calibration pixels
    image_quantile: float = 0.99  # of calibration image scores
    blur_sigma: float = 4.0  # Gaussian smoothing of the map, pixels at image_size
    seed: int = 0  # calibration split, projection and first coreset centre


@dataclass(frozen=True)
class _Stages:
    """An ImageNet CNN read at its stride-8 and stride-16 stages, and how its input is normalised."""

    name: str
    forward: Callable[[torch.Tensor], list[torch.Tensor]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def grid_scale(max_abs: float, dim: int) -> float:
    """The largest power of two s such that vectors of `dim` values |x| <= max_abs, times s and rounded, have
    squared distances, norms and dot products (and every partial sum of them) that are integers below 2^53."""
    largest = math.sqrt(_EXACT_INTEGERS / (4 * dim))  # |a_i - b_i| <= 2 largest, dim terms: 4 dim largest^2
    return 2.0 ** math.floor(math.log2(largest / max_abs))


@dataclass(frozen=True)
class GridPoints:
    """Vectors as integers on a grid of step 1/scale (held in float64), with their squared norms.

    Distances between points of one grid are computed exactly (see the module docstring)."""

    values: torch.Tensor  # (n, d) float64, integer-valued
    squared_norms: torch.Tensor  # (n,)
    scale: float

    @classmethod
    def of(cls, vectors: torch.Tensor, max_abs: float, scale: float) -> GridPoints:
        values = (vectors.double().clamp(-max_abs, max_abs) * scale).round()
        return cls(values, (values * values).sum(dim=1), scale)

    def __len__(self) -> int:
        return self.values.shape[0]

    def take(self, index: torch.Tensor | slice) -> GridPoints:
        return GridPoints(self.values[index], self.squared_norms[index], self.scale)

    def squared_distances(self, other: GridPoints) -> torch.Tensor:
        """(len(self), len(other)) squared distances, in grid units, exact."""
        return self.squared_norms[:, None] + other.squared_norms[None, :] - 2.0 * (self.values @ other.values.T)

    def distances(self, other: GridPoints) -> torch.Tensor:
        """Euclidean distances in feature units (sqrt is correctly rounded, the scale a power of two)."""
        return self.squared_distances(other).sqrt() / self.scale


def sparse_projection(points: GridPoints, n_components: int, generator: np.random.Generator) -> GridPoints:
    """The points in a very sparse random projection (entries -1, 0, +1, density 1/sqrt(d)), on a new exact grid.

    The projection's usual scale factor is left out: a common factor does not change which point is farthest."""
    dim = points.values.shape[1]
    nonzero = generator.random((dim, n_components)) < 1 / math.sqrt(dim)
    signs = np.where(generator.random((dim, n_components)) < 0.5, -1.0, 1.0)
    matrix = torch.from_numpy(nonzero * signs).to(points.values.device)
    projected = (points.values @ matrix) / points.scale  # integer sums (exact), then a power-of-two scaling
    max_abs = FEATURE_LIMIT * max(1, int(nonzero.sum(axis=0).max()))
    return GridPoints.of(projected, max_abs, grid_scale(max_abs, n_components))


def greedy_coreset(points: GridPoints, n_select: int, start: int) -> torch.Tensor:
    """Indices of a k-center greedy coreset (paper, Algorithm 1): from `start`, repeatedly the point farthest from
    every chosen one (the lowest index on a tie), until `n_select` are chosen or only duplicates remain."""
    chosen = [start]
    nearest_chosen = points.squared_distances(points.take(slice(start, start + 1)))[:, 0]
    while len(chosen) < n_select:
        farthest = int(torch.argmax(nearest_chosen))
        if nearest_chosen[farthest] == 0:
            break
        chosen.append(farthest)
        to_new = points.squared_distances(points.take(slice(farthest, farthest + 1)))[:, 0]
        nearest_chosen = torch.minimum(nearest_chosen, to_new)
    return torch.tensor(chosen, device=points.values.device)


@dataclass(frozen=True)
class MemoryBank:
    """The coreset of good patches and how an image is scored against it."""

    points: GridPoints
    num_neighbors: int

    def score(self, patches: GridPoints) -> tuple[float, torch.Tensor]:
        """(image score, patch scores (P,) float64) of one image's patches, in feature units."""
        squared = patches.squared_distances(self.points)
        nearest = torch.argmin(squared, dim=1)  # the first of equal minima
        patch_scores = squared.gather(1, nearest[:, None])[:, 0].sqrt() / patches.scale
        worst = int(torch.argmax(patch_scores))
        worst_score = float(patch_scores[worst])
        n_support = min(self.num_neighbors, len(self.points))
        if n_support == 1:
            return worst_score, patch_scores
        m_star = self.points.take(nearest[worst : worst + 1])
        to_m_star = self.points.squared_distances(m_star)[:, 0]
        support = self.points.take(torch.sort(to_m_star, stable=True).indices[:n_support])  # m* itself first
        weight = 1.0 - torch.softmax(patches.take(slice(worst, worst + 1)).distances(support)[0], dim=0)[0]
        return float(weight) * worst_score, patch_scores


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (H, W) with reflected borders (anomalib's kernel radius int(4 sigma + 0.5)),
    accumulated tap by tap in a fixed order, so the result does not depend on the thread count."""
    if sigma <= 0:
        return image
    height, width = image.shape
    radius = min(int(4 * sigma + 0.5), height - 1, width - 1)  # reflection needs padding < size
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(image[None, None], (radius, radius, radius, radius), mode="reflect")[0, 0]
    rows = sum(kernel[i] * padded[:, i : i + width] for i in range(2 * radius + 1))
    return sum(kernel[i] * rows[i : i + height] for i in range(2 * radius + 1))


class Patchcore(Pipeline):
    name = "patchcore"
    task = "segmentation"
    batch_size = 16
    options_type = PatchcoreOptions

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options: PatchcoreOptions = self.read_options(context.options)
        self.bank: MemoryBank | None = None
        self.thresholds: Thresholds | None = None
        self._scale: float | None = None

    @classmethod
    def read_options(cls, options: Mapping[str, object]) -> PatchcoreOptions:
        o = parse_options(PatchcoreOptions, cls.name, options)
        require_choice(cls.name, "backbone", o.backbone, BACKBONES)
        checks = {
            "image_size": o.image_size >= 32 and o.image_size % 16 == 0,
            "coreset_ratio": 0.0 < o.coreset_ratio <= 1.0,
            "num_neighbors": o.num_neighbors >= 1,
            "projection_dim": o.projection_dim >= 0,
            "calibration_fraction": 0.0 < o.calibration_fraction < 1.0,
            "pixel_quantile": 0.0 <= o.pixel_quantile <= 1.0,
            "image_quantile": 0.0 <= o.image_quantile <= 1.0,
            "blur_sigma": o.blur_sigma >= 0.0,
        }
        require_in_range(cls.name, o, checks, "image_size a multiple of 16 >= 32, coreset_ratio in (0, 1], "
                                              "num_neighbors >= 1, projection_dim >= 0, calibration_fraction in "
                                              "(0, 1), quantiles in [0, 1], blur_sigma >= 0")
        return o

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        if cls.read_options(context.options).backbone == "wide_resnet50_2":
            registry.require(imagenet_cnn.WIDE_RESNET50_KEY, context.weights_dir)
        else:
            efficientnet.weights_path()

    @cached_property
    def device(self) -> torch.device:
        return torch.device(self.context.device)

    @cached_property
    def backbone(self) -> str:
        """The backbone that runs: "auto" takes Wide ResNet-50-2 when its checkpoint is present (or injected)."""
        if self.options.backbone != "auto":
            return self.options.backbone
        try:
            registry.require(imagenet_cnn.WIDE_RESNET50_KEY, self.context.weights_dir)
        except MissingWeights:
            return "efficientnet_lite0"
        return "wide_resnet50_2"

    @cached_property
    def stages(self) -> _Stages:
        if self.backbone == "wide_resnet50_2":
            cnn = imagenet_cnn.load_resnet(imagenet_cnn.WIDE_RESNET50_KEY, self.context.weights_dir,
                                           str(self.device))
            return _Stages(self.backbone, lambda x: imagenet_cnn.resnet_stages(cnn.module, x, 3)[1:],
                           imagenet_cnn.IMAGENET_MEAN, imagenet_cnn.IMAGENET_STD)
        return _Stages(self.backbone, efficientnet.load_efficientnet_lite0(self.device),
                       efficientnet.INPUT_MEAN, efficientnet.INPUT_STD)

    @property
    def model_id(self) -> str:
        """Read from the checkpoint file (hashed once per process): a cached rerun builds no network."""
        if self.backbone == "wide_resnet50_2":
            return f"{self.backbone}:{imagenet_cnn.checkpoint_id(imagenet_cnn.WIDE_RESNET50_KEY, self.context.weights_dir)}"
        return f"{self.backbone}:{efficientnet.weights_sha256()}"

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        """Memory bank from part of the good training images, thresholds from the rest."""
        fit_part, calibration = split_good(train, self.options.calibration_fraction, self.options.seed, self.name,
                                           self.context.dataset)
        features = []
        for batch in self._batches(fit_part, "patchcore: fit"):
            batch_features = self._patch_features(batch)
            bad = [s.id for s, f in zip(batch, batch_features) if not torch.isfinite(f).all()]
            if bad:
                raise DataError(f"patchcore: non-finite features of training image(s) {', '.join(bad)}",
                                self.context.dataset)
            features.append(batch_features)
        patches = torch.cat(features).permute(0, 2, 3, 1).flatten(0, 2)
        self._scale = grid_scale(FEATURE_LIMIT, patches.shape[1])
        points = GridPoints.of(patches, FEATURE_LIMIT, self._scale)
        generator = np.random.default_rng([self.options.seed, 1])  # its own stream: the split uses `seed` alone
        wide = 0 < self.options.projection_dim < patches.shape[1]
        selection = sparse_projection(points, self.options.projection_dim, generator) if wide else points
        n_select = max(1, int(len(points) * self.options.coreset_ratio))
        chosen = greedy_coreset(selection, n_select, start=int(generator.integers(len(points))))
        self.bank = MemoryBank(points.take(chosen), self.options.num_neighbors)

        scores, maps = [], []
        for batch in self._batches(calibration, "patchcore: calibrate"):
            for sample, (score, anomaly_map) in zip(batch, self._score(batch)):
                if not math.isfinite(score):
                    raise DataError(f"patchcore: non-finite features of training image {sample.id}",
                                    self.context.dataset)
                scores.append(score)
                maps.append(anomaly_map)
        self.thresholds = Thresholds.from_good(scores, maps, self.options.image_quantile, self.options.pixel_quantile,
                                               self.context.dataset)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        if self.bank is None or self.thresholds is None:
            raise RuntimeError("Patchcore.predict called before fit")
        predictions = []
        chunks = [list(samples[i : i + self.batch_size]) for i in range(0, len(samples), self.batch_size)]
        for chunk in tqdm(chunks, desc="patchcore: predict", leave=False,
                          disable=not self.context.progress or len(chunks) < 2):
            for score, anomaly_map in self._score(chunk):
                predictions.append(self.thresholds.predict(score, anomaly_map))
        return predictions

    def _batches(self, samples: SampleSet, desc: str):
        return tqdm(samples.batches(self.batch_size), total=math.ceil(len(samples) / self.batch_size), desc=desc,
                    leave=False, disable=not self.context.progress)

    def _patch_features(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(B, d, h, w) locally aware patch features on the stride-8 grid."""
        with torch.no_grad():
            x = torch.stack([self._encoder_input(s) for s in samples])
            fine, coarse = (F.avg_pool2d(m, kernel_size=3, stride=1, padding=1) for m in self.stages.forward(x))
            coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            return torch.cat([fine, coarse], dim=1)

    def _encoder_input(self, sample: Sample) -> torch.Tensor:
        return imagenet_cnn.float_input(sample, self.options.image_size, self.stages.mean, self.stages.std, self.device,
                                        "patchcore")

    def _score(self, samples: Sequence[Sample]) -> list[tuple[float, np.ndarray]]:
        """(image score, anomaly map at the image's size) per sample; non-finite features give a NaN score."""
        results = []
        for sample, features in zip(samples, self._patch_features(samples)):
            if not torch.isfinite(features).all():
                results.append((math.nan, np.full(sample.image.shape[:2], np.nan, np.float32)))
                continue
            grid = features.shape[-2:]
            patches = GridPoints.of(features.flatten(1).T, FEATURE_LIMIT, self._scale)
            score, patch_scores = self.bank.score(patches)
            results.append((score, self._anomaly_map(patch_scores.reshape(grid), sample.image.shape[:2])))
        return results

    def _anomaly_map(self, patch_scores: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
        """Patch scores (h, w) -> nearest-upsampled to image_size, smoothed, bilinear to `shape` (float32)."""
        size = (self.options.image_size, self.options.image_size)
        upsampled = F.interpolate(patch_scores[None, None], size=size, mode="nearest")[0, 0]
        smoothed = gaussian_blur(upsampled, self.options.blur_sigma)
        resized = F.interpolate(smoothed[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
        return resized.float().cpu().numpy()
