"""ImageNet CNNs from torchvision checkpoints, read in the two ways fmtest needs them.

- `pooled_features`: one vector per whole image (global average pool of the last stage), the input
  of the supervised reference's MLP. ResNet-50 (`resnet50-0676ba61.pth`) when present, else the
  EfficientNet-Lite0 that ships in a pip package, so the reference runs without any download.
- `stage_maps`: stages 1-3 of a ResNet, upsampled to stage 1's grid and concatenated (SAA+'s
  saliency runs a Wide ResNet-50-2 this way, as `SAA/modelinet.py` does with timm's `features_only`).

Checkpoints come through the weights registry; torchvision names each file by the first 8 hex
digits of its sha256 and the loader checks them, as torch.hub does. timm's Wide ResNet-50-2 file
(`wide_resnet50_2_timm`, SAA+'s weights) is built with `timm.create_model(pretrained=False)` and
loaded from the weights folder: nothing is fetched from a hub. Tests inject an `ImageNetCnn` (any
torchvision or timm ResNet with random weights) under the same key. Images are resized to a square
without cropping (a defect at the border stays in view), greyscale replicated to RGB, and
normalised with ImageNet's mean/std (the ResNets) or to [-1, 1] (EfficientNet-Lite0's TF training).
How they are resized is the caller's: the supervised reference shrinks with pixel-area averaging
(`cv2.INTER_AREA`, no published code to follow); SAA+'s saliency uses `cv2.resize`'s default,
bilinear, as SAA+ does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.errors import DataError
from fmtest.models import efficientnet, registry
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")

RESNET50_KEY = "resnet50_imagenet"
WIDE_RESNET50_KEY = "wide_resnet50_2_imagenet"  # torchvision's weights
WIDE_RESNET50_TIMM_KEY = "wide_resnet50_2_timm"  # timm's weights: SAA+'s
ARCHITECTURES = {RESNET50_KEY: "resnet50", WIDE_RESNET50_KEY: "wide_resnet50_2"}  # torchvision.models builders
TIMM_ARCHITECTURES = {WIDE_RESNET50_TIMM_KEY: "wide_resnet50_2"}  # timm.create_model names
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLED_BACKBONES = ("resnet50", "efficientnet_lite0")
MAX_REMEMBERED = 20_000  # feature vectors kept per extractor (a 2048-d vector is 8 kB)
BATCH = 16


@dataclass(frozen=True, eq=False)
class ImageNetCnn:
    """A torchvision ResNet-family classifier (eval mode, frozen) and what produced it (file sha256)."""

    module: torch.nn.Module
    model_id: str


_LOADED: dict[tuple[str, str, str], ImageNetCnn] = {}
_LOCK = threading.Lock()


def load_resnet(key: str, weights_dir: Path | None, device: str = "cpu") -> ImageNetCnn:
    """The registry checkpoint `key` in its torchvision architecture, loaded once per process and device."""
    injected = registry.injected(key)
    if injected is not None:
        return injected  # type: ignore[return-value]
    path = registry.resolve(key, weights_dir).resolve()
    with _LOCK:
        cache_key = (key, str(path), device)
        if cache_key not in _LOADED:
            sha = registry.file_sha256(path)
            if key in TIMM_ARCHITECTURES:
                import timm

                module = timm.create_model(TIMM_ARCHITECTURES[key], pretrained=False)
            else:
                prefix = registry.spec(key).sha256_prefix or ""
                if not sha.startswith(prefix):
                    raise DataError(f"sha256 {sha[:16]}... does not start with {prefix}, the hash in torchvision's "
                                    f"file name; re-download with `fmtest weights download {key}`", path)
                import torchvision

                module = getattr(torchvision.models, ARCHITECTURES[key])(weights=None)
            registry.load_into(module, registry.load_state_dict(path, nested_key=None), path)
            module.eval().requires_grad_(False).to(device)
            _LOADED[cache_key] = ImageNetCnn(module, sha)
        return _LOADED[cache_key]


def checkpoint_id(key: str, weights_dir: Path | None) -> str:
    """The model id `load_resnet(key, ...)` reports, without loading it: the file's sha256 or an injected model's id."""
    injected = registry.injected(key)
    if injected is not None:
        return injected.model_id  # type: ignore[attr-defined]
    return registry.file_sha256(registry.resolve(key, weights_dir).resolve())


def pooled_model_id(backbone: str, weights_dir: Path | None) -> str:
    """The model id of `pooled_features(backbone, ...)`, without building the extractor."""
    if backbone == "resnet50":
        return checkpoint_id(RESNET50_KEY, weights_dir)
    if backbone == "efficientnet_lite0":
        return efficientnet.weights_sha256()
    raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(POOLED_BACKBONES)}")


def area_or_linear(image: np.ndarray, size: int) -> int:
    """cv2 interpolation for squashing `image` to `size`: pixel-area averaging to shrink, bilinear to grow."""
    return cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR


def to_batch(images_rgb: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float],
             device: str | torch.device,
             interpolation: Callable[[np.ndarray, int], int] = area_or_linear) -> torch.Tensor:
    """(B, 3, size, size) float tensor of uint8 images, resized (cv2, `interpolation(image, size)`), normalised."""
    resized = [cv2.resize(im, (size, size), interpolation=interpolation(im, size)) for im in images_rgb]
    x = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.to(device)


def float_input(sample: Sample, size: int, mean: Sequence[float], std: Sequence[float], device: str | torch.device,
                pipeline: str) -> torch.Tensor:
    """(3, size, size) tensor of a float image in [0, 1] (greyscale replicated to RGB), resized with torch's
    antialiased bilinear and normalised: the anomaly detectors' (padim, patchcore) encoder input."""
    image = np.asarray(sample.image, dtype=np.float32)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # the encoder wants RGB: replicate grey
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{pipeline} needs an HxW or HxWx3 image, got shape {sample.image.shape}",
                        sample.source or sample.id)
    x = torch.tensor(image, device=device).permute(2, 0, 1)[None]  # a copy: samples are read-only
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                        antialias=True)[0]
    return (x - torch.tensor(mean, device=device)[:, None, None]) / torch.tensor(std, device=device)[:, None, None]


def bilinear(image: np.ndarray, size: int) -> int:
    """cv2.resize's default, bilinear, whatever the size: what SAA+'s `cv2.resize(image, (256, 256))` does."""
    return cv2.INTER_LINEAR


def resnet_stages(module: torch.nn.Module, x: torch.Tensor, last: int) -> list[torch.Tensor]:
    """Outputs of `layer1` .. `layer<last>` of a torchvision or timm ResNet (timm names the stem's ReLU act1)."""
    stem_activation = module.act1 if hasattr(module, "act1") else module.relu
    x = module.maxpool(stem_activation(module.bn1(module.conv1(x))))
    outputs = []
    for index in range(1, last + 1):
        x = getattr(module, f"layer{index}")(x)
        outputs.append(x)
    return outputs


def stage_maps(cnn: ImageNetCnn, image: np.ndarray, size: int) -> torch.Tensor:
    """(1, C, h, w): stages 1-3 at `size` x `size` input (bilinear resize, as SAA+), nearest-upsampled to stage
    1's grid, concatenated. The image's channels are normalised with ImageNet's RGB mean/std in the order given."""
    device = next(cnn.module.parameters()).device
    batch = to_batch([image], size, IMAGENET_MEAN, IMAGENET_STD, device, interpolation=bilinear)
    with torch.no_grad():
        maps = resnet_stages(cnn.module, batch, last=3)
        grid = maps[0].shape[-2:]
        return torch.cat([maps[0]] + [torch.nn.functional.interpolate(m, size=grid, mode="nearest")
                                      for m in maps[1:]], dim=1)


class PooledFeatures:
    """Global-average-pooled features of whole images, remembered by image content.

    Cross-validation fits one model per fold on the same images; each image's vector is computed
    once per process and extractor, not once per fold.
    """

    def __init__(self, name: str, model_id: str, forward: Callable[[torch.Tensor], torch.Tensor],
                 mean: Sequence[float], std: Sequence[float], size: int, device: str):
        self.name, self.model_id = name, model_id
        self._forward, self._mean, self._std, self._size, self._device = forward, mean, std, size, device
        self._remembered: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, samples: Sequence[Sample]) -> np.ndarray:
        """(N, D) float32, one row per sample."""
        missing = [s for s in samples if s.sha256 not in self._remembered]
        for start in range(0, len(missing), BATCH):
            chunk = missing[start:start + BATCH]
            x = to_batch([to_rgb_uint8(s.image) for s in chunk], self._size, self._mean, self._std, self._device)
            with torch.no_grad():
                vectors = self._forward(x).float().cpu().numpy()
            with self._lock:
                for sample, vector in zip(chunk, vectors, strict=True):
                    self._remembered[sample.sha256] = vector
                while len(self._remembered) > MAX_REMEMBERED:
                    self._remembered.popitem(last=False)
        with self._lock:
            return np.stack([self._remembered[s.sha256] for s in samples])


_EXTRACTORS: dict[tuple, PooledFeatures] = {}


def pooled_features(backbone: str, weights_dir: Path | None, device: str, size: int) -> PooledFeatures:
    """The process-wide extractor for `backbone` ("resnet50" or "efficientnet_lite0") at `size` px."""
    if backbone == "resnet50":
        cnn = load_resnet(RESNET50_KEY, weights_dir, device)
        key: tuple = (cnn, device, size)
    elif backbone == "efficientnet_lite0":
        key = (backbone, device, size)
    else:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(POOLED_BACKBONES)}")
    with _LOCK:
        if key not in _EXTRACTORS:
            if backbone == "resnet50":
                module = cnn.module

                def forward(x: torch.Tensor) -> torch.Tensor:
                    return resnet_stages(module, x, last=4)[-1].mean(dim=(2, 3))

                _EXTRACTORS[key] = PooledFeatures("resnet50", cnn.model_id, forward, IMAGENET_MEAN, IMAGENET_STD,
                                                  size, device)
            else:
                model = efficientnet.build_efficientnet_lite0().to(device).requires_grad_(False)

                def forward(x: torch.Tensor) -> torch.Tensor:
                    return model.forward_head(model.forward_features(x), pre_logits=True)

                _EXTRACTORS[key] = PooledFeatures("efficientnet_lite0", efficientnet.weights_sha256(), forward,
                                                  efficientnet.INPUT_MEAN, efficientnet.INPUT_STD, size, device)
        return _EXTRACTORS[key]
