"""PaDiM-style baseline: a Gaussian per patch position over pretrained features of good parts.

Features are EfficientNet-Lite0 (real ImageNet weights) at strides 8 and 16, the coarser map
upsampled onto the stride-8 grid and concatenated, optionally a seeded random subset of channels
(as PaDiM does, to cut the covariance cost). Each image is squash-resized to `image_size` squared
(no crop, so every pixel of the part gets a score), greyscale replicated to RGB.

`fit` sees only the defect-free training images. A seeded split keeps a calibration part out of
the Gaussian fit: scoring those held-out good images gives honest thresholds, where scoring the
fitted images would give optimistic ones. Covariances use Ledoit-Wolf shrinkage plus `eps`·I, so a
handful of images in a few hundred dimensions still gives an invertible, well-conditioned matrix.

Two thresholds, both quantiles over the calibration images:
- `image_threshold` (quantile `image_quantile` of each calibration image's max score) decides
  whether an image shows a defect at all;
- `pixel_threshold` (quantile `pixel_quantile` of all calibration pixels, capped at the image
  threshold) sets how far a found defect extends.
The mask is `map > pixel_threshold` when `max(map) > image_threshold`, else empty, so the label
(NOK iff the mask is non-empty, `Prediction.from_mask`) is exactly `score > image_threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from tqdm.auto import tqdm

from fmtest.data.sample import OK, Sample, SampleSet
from fmtest.errors import DataError
from fmtest.models import efficientnet, imagenet_cnn
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.options import require_in_range
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")

_FEATURE_STRIDE = efficientnet.FEATURE_STRIDES[0]


@dataclass(frozen=True)
class PadimOptions:
    """`[pipelines.padim]`; defaults follow the PaDiM paper where it has one."""

    image_size: int = 224  # encoder input side, pixels (multiple of 16)
    n_features: int = 100  # random channel subset; 0 keeps all 152
    calibration_fraction: float = 0.25  # share of good training images held out to set thresholds
    pixel_quantile: float = 0.999  # of calibration pixels: a found defect extends over the top 0.1 %
    image_quantile: float = 0.99
    blur_sigma: float = 4.0  # Gaussian smoothing of the map, in pixels at image_size
    covariance_eps: float = 0.01  # added to the covariance diagonal (PaDiM's regulariser)
    seed: int = 0  # channel subset and calibration split

    def __post_init__(self) -> None:
        checks = {
            "image_size": self.image_size >= 32 and self.image_size % 16 == 0,
            "n_features": 0 <= self.n_features <= sum(efficientnet.FEATURE_CHANNELS),
            "calibration_fraction": 0.0 < self.calibration_fraction < 1.0,
            "pixel_quantile": 0.0 <= self.pixel_quantile <= 1.0,
            "image_quantile": 0.0 <= self.image_quantile <= 1.0,
            "blur_sigma": self.blur_sigma >= 0.0,
            "covariance_eps": self.covariance_eps > 0.0,
        }
        require_in_range("padim", self, checks, "image_size a multiple of 16 >= 32, n_features 0..152, fractions "
                                                "in (0, 1), quantiles in [0, 1], blur_sigma >= 0, covariance_eps > 0")


@dataclass
class _Gaussians:
    """Per patch position (P of them): mean (P, d) and inverse covariance (P, d, d)."""

    mean: torch.Tensor
    precision: torch.Tensor


class Padim(Pipeline):
    name = "padim"
    task = "segmentation"
    batch_size = 16
    options_type = PadimOptions

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options = self.read_options(context.options)
        self._gaussians: _Gaussians | None = None
        self.pixel_threshold: float | None = None
        self.image_threshold: float | None = None

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        efficientnet.weights_path()

    @property
    def model_id(self) -> str:
        return efficientnet.weights_sha256()

    @cached_property
    def device(self) -> torch.device:
        return torch.device(self.context.device)

    @property
    def encoder(self) -> efficientnet.LiteFeatures:
        return efficientnet.load_efficientnet_lite0(self.device)

    @cached_property
    def _channels(self) -> torch.Tensor:
        """The seeded random subset of feature channels (PaDiM's dimensionality reduction)."""
        n_all = sum(efficientnet.FEATURE_CHANNELS)
        n_keep = self.options.n_features or n_all
        generator = torch.Generator().manual_seed(self.options.seed)
        return torch.randperm(n_all, generator=generator)[:n_keep].sort().values.to(self.device)

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        """Gaussians from part of the good training images, thresholds from the rest."""
        good = train.filter(lambda ref: ref.label == OK)
        if len(good) < 2:
            raise DataError(f"padim needs at least 2 defect-free training images (one to fit, one to "
                            f"calibrate), found {len(good)}", self.context.dataset)
        order = np.random.default_rng(self.options.seed).permutation(len(good))
        n_cal = min(len(good) - 1, max(1, round(self.options.calibration_fraction * len(good))))
        refs = good.refs
        fit_part = SampleSet([refs[i] for i in sorted(order[n_cal:])])
        calibration = SampleSet([refs[i] for i in sorted(order[:n_cal])])

        embeddings = torch.cat([self._embed(batch) for batch in self._batches(fit_part, "padim: fit")])
        self._gaussians = _fit_gaussians(embeddings, self.options.covariance_eps)

        maps = [m for batch in self._batches(calibration, "padim: calibrate") for m in self._score_maps(batch)]
        image_scores = np.array([m.max() for m in maps])
        self.image_threshold = float(np.quantile(image_scores, self.options.image_quantile))
        pixel = float(np.quantile(np.concatenate([m.ravel() for m in maps]), self.options.pixel_quantile))
        self.pixel_threshold = min(pixel, self.image_threshold)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        if self._gaussians is None:
            raise RuntimeError("Padim.predict called before fit")
        predictions = []
        chunks = [list(samples[i : i + self.batch_size]) for i in range(0, len(samples), self.batch_size)]
        for chunk in tqdm(chunks, desc="padim: predict", leave=False,
                          disable=not self.context.progress or len(chunks) < 2):
            for score_map in self._score_maps(chunk):
                score = float(score_map.max())
                found = score > self.image_threshold
                mask = score_map > self.pixel_threshold if found else np.zeros(score_map.shape, bool)
                predictions.append(Prediction.from_mask(mask, score=score,
                                                        score_map=score_map / max(self.pixel_threshold, 1e-12)))
        return predictions

    def _batches(self, samples: SampleSet, desc: str):
        n = math.ceil(len(samples) / self.batch_size)
        return tqdm(samples.batches(self.batch_size), total=n, desc=desc, leave=False,
                    disable=not self.context.progress)

    def _embed(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(B, P, d) features on the stride-8 grid, P = (image_size / 8)^2."""
        with torch.no_grad():
            x = torch.stack([self._encoder_input(s) for s in samples])
            fine, coarse = self.encoder(x)
            coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")
            features = torch.cat([fine, coarse], dim=1).index_select(1, self._channels)
            return features.flatten(2).transpose(1, 2).contiguous()

    def _encoder_input(self, sample: Sample) -> torch.Tensor:
        return imagenet_cnn.float_input(sample, self.options.image_size, efficientnet.INPUT_MEAN, efficientnet.INPUT_STD, self.device,
                                        "padim")

    def _score_maps(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """Smoothed Mahalanobis maps, one per sample at its own size (float32 numpy)."""
        with torch.no_grad():
            distances = _mahalanobis(self._embed(samples), self._gaussians)
            side = self.options.image_size // _FEATURE_STRIDE
            maps = distances.reshape(-1, 1, side, side)
            size = (self.options.image_size, self.options.image_size)
            maps = _gaussian_blur(F.interpolate(maps, size=size, mode="bilinear", align_corners=False),
                                  self.options.blur_sigma)
            return [F.interpolate(m[None], size=s.image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
                    .cpu().numpy() for m, s in zip(maps, samples)]


def _fit_gaussians(embeddings: torch.Tensor, eps: float) -> _Gaussians:
    """Mean and Ledoit-Wolf-shrunk, eps-regularised inverse covariance per position of (N, P, d)."""
    x = embeddings.transpose(0, 1).double()  # (P, N, d); double: covariances of few samples are delicate
    mean = x.mean(dim=1)
    cov = _ledoit_wolf(x - mean[:, None, :])
    cov += eps * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    precision = torch.cholesky_inverse(torch.linalg.cholesky(cov))
    return _Gaussians(mean=mean.float(), precision=precision.float())


def _ledoit_wolf(centred: torch.Tensor) -> torch.Tensor:
    """Shrink each sample covariance towards a scaled identity by the Ledoit-Wolf (2004) optimum.

    centred: (P, n, d). With S the sample covariance and mu = trace(S)/d, the target is mu·I and
    the weight is min(b², d²)/d², d² = |S - mu·I|²/d (how far S is from the target) and
    b² = (mean_k |x_k x_kᵀ|² - |S|²)/(n·d) (how noisy S is), Frobenius norms throughout.
    """
    n, d = centred.shape[1], centred.shape[2]
    sample_cov = centred.transpose(1, 2) @ centred / n
    mu = torch.diagonal(sample_cov, dim1=1, dim2=2).sum(-1) / d
    frob2 = (sample_cov ** 2).sum(dim=(1, 2))
    dist2 = (frob2 - d * mu * mu) / d  # |S - mu I|^2 / d, expanded with trace(S) = mu d
    fourth = ((centred ** 2).sum(-1) ** 2).mean(-1)  # mean_k |x_k|^4 = mean_k |x_k x_k^T|^2
    noise2 = torch.minimum((fourth - frob2) / (n * d), dist2)
    shrink = torch.where(dist2 > 0, noise2 / dist2.clamp_min(1e-300), torch.ones_like(dist2))
    identity = torch.eye(d, dtype=centred.dtype, device=centred.device)
    return (1 - shrink)[:, None, None] * sample_cov + (shrink * mu)[:, None, None] * identity


def _mahalanobis(embeddings: torch.Tensor, gaussians: _Gaussians) -> torch.Tensor:
    """(B, P) Mahalanobis distances of (B, P, d) embeddings to the per-position Gaussians."""
    diff = embeddings - gaussians.mean[None]
    projected = torch.einsum("bpd,pde->bpe", diff, gaussians.precision)
    return (projected * diff).sum(-1).clamp_min(0).sqrt()


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, 1, H, W), reflecting at the border; sigma 0 is a no-op."""
    if sigma <= 0:
        return maps
    radius = min(math.ceil(4 * sigma), maps.shape[-1] - 1, maps.shape[-2] - 1)  # reflect needs pad < size
    taps = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    padded = F.pad(maps, (radius, radius, 0, 0), mode="reflect")
    maps = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    padded = F.pad(maps, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(padded, kernel.view(1, 1, -1, 1))
