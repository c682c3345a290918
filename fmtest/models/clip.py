"""CLIP ViT-B/16 with OpenAI weights, built on open_clip: checkpoint loading and batched encoding.

Checkpoint formats accepted for the registry key `clip_vit_b16_openai`, and for a user's own ViT-B/16
named with `clip_checkpoint` (all carry the same tensors under open_clip's parameter names, so one strict
state-dict load serves them all):

- an OpenAI TorchScript archive such as `ViT-B-16.pt` (the registry's file, sha256 in its URL). It is opened
  with `torch.jit.load` on the CPU, whose TorchScript unpickler rebuilds no arbitrary Python objects
  (unlike `pickle`); only its tensors are kept.
  `torch.load(weights_only=True)` refuses TorchScript archives, so they are recognised first.
- an open_clip state dict (`open_clip_pytorch_model.bin` / `.pt` / `.pth`), read with
  `torch.load(weights_only=True)`; a training checkpoint's `state_dict` entry and a DataParallel
  `module.` prefix are unwrapped.
- `*.safetensors` (for example `open_clip_model.safetensors`).
When `ViT-B-16.pt` is absent, the open_clip exports of the same weights are looked up under
`<weights>/vit_base_patch16_clip_224.openai/` (the Hugging Face repository that publishes them).

OpenAI trained with QuickGELU, so the model is always built with it: plain GELU would load the same
tensors without complaint and silently compute something else.

Images are squash-resized to the model's input size (no centre crop, as CLIP Surgery and Text2Seg do)
so a whole mask crop or image is seen. The BPE vocabulary ships inside open_clip: nothing downloads.

open_clip is imported where a model is built, not at import (as grounding_dino.py does with
transformers): a pipeline checking for the checkpoint, or a suite skipping it, never pays for it.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fmtest.errors import DataError, MissingWeights
from fmtest.models import registry
from fmtest.util.lazy import lazy_module

if TYPE_CHECKING:
    import open_clip

torch = lazy_module("torch")

CLIP_KEY = "clip_vit_b16_openai"
ARCHITECTURE = "ViT-B-16"
# CLIP's learned temperature; OpenAI's checkpoint saturates it at this clamp value, Text2Seg hard-codes it.
LOGIT_SCALE = 100.0
# OpenAI TorchScript archives keep these as attributes beside the weights; they are no parameters.
# `attn_mask` (the text tower's causal mask) is derived, and appears in archives traced from open_clip.
_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives are zip files with a `constants.pkl` entry (plain torch.save zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def read_clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of any accepted CLIP checkpoint format, under open_clip's names."""
    path = Path(path)
    if not path.is_file():
        raise DataError("CLIP checkpoint file not found", path)
    if is_torchscript_archive(path):
        try:
            state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except RuntimeError as e:
            raise DataError(f"unreadable TorchScript archive ({str(e).splitlines()[0][:200]})", path) from None
        for name in _JIT_EXTRAS:
            state.pop(name, None)
    else:
        state = registry.load_state_dict(path, nested_key="state_dict")
    if all(name.startswith("module.") for name in state):
        state = {name.removeprefix("module."): value for name, value in state.items()}
    return state


def build_clip(checkpoint: Path | None = None) -> open_clip.CLIP:
    """CLIP ViT-B/16 (QuickGELU, fp32, CPU); OpenAI weights from `checkpoint`, random weights without one."""
    import open_clip

    model = open_clip.create_model(ARCHITECTURE, pretrained=None, force_quick_gelu=True)
    return load_clip_weights(model, checkpoint) if checkpoint is not None else model.eval()


def load_clip_weights(model: open_clip.CLIP, checkpoint: Path) -> open_clip.CLIP:
    """Load any accepted checkpoint into `model` strictly (fp16 archives become fp32); errors name the file."""
    state = {name: value.float() for name, value in read_clip_state_dict(checkpoint).items()}
    registry.load_into(model, state, Path(checkpoint))
    return model.eval()


class ClipEncoder:
    """One CLIP model with its tokenizer: turns RGB images and texts into unit-length embeddings."""

    def __init__(self, model: open_clip.CLIP, model_id: str, device: str = "cpu"):
        from open_clip import get_tokenizer
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from open_clip.tokenizer import default_bpe

        self.model = model.eval().to(device)
        self.model_id = model_id
        self.device = device
        self.tokenizer = get_tokenizer(ARCHITECTURE)
        expected = model.vocab_size
        found = len(self.tokenizer.encoder)
        if found != expected:  # an empty or foreign vocabulary would tokenize every prompt to nonsense
            raise DataError(f"CLIP tokenizer has {found} tokens but the model expects {expected}", default_bpe())
        self.mean = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)  # CLIP's input normalisation
        self.std = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)
        size = model.visual.image_size
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self._ensembles: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}

    def preprocess(self, images_rgb: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 3, S, S) normalized input from HxWx3 uint8 images of any size (bicubic squash resize)."""
        h, w = self.image_size
        batch = []
        for image in images_rgb:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"CLIP wants HxWx3 uint8 images, got {image.dtype} {image.shape}")
            resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC), dtype=np.float32)
            batch.append((torch.from_numpy(resized).permute(2, 0, 1) / 255.0 - self.mean) / self.std)
        return torch.stack(batch).to(self.device)

    def encode_images(self, images_rgb: Sequence[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        """(N, D) unit image embeddings, `batch_size` images per forward pass."""
        with torch.no_grad():
            chunks = [
                self.model.encode_image(self.preprocess(images_rgb[i:i + batch_size]), normalize=True)
                for i in range(0, len(images_rgb), batch_size)
            ]
        if not chunks:
            return torch.empty(0, self.model.text_projection.shape[1], device=self.device)
        return torch.cat(chunks)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(T, D) unit text embeddings."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.no_grad():
            return self.model.encode_text(tokens, normalize=True)

    def encode_text_ensembles(self, texts: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(T, D): per text, the renormalized mean of its unit embeddings over `templates` ("... {} ...").

        Remembered per (text, templates): an 85-template ensemble is worth encoding once per session.
        """
        templates = tuple(templates)
        with torch.no_grad():
            for text in dict.fromkeys(texts):
                if (text, templates) not in self._ensembles:
                    mean = self.encode_texts([t.format(text) for t in templates]).mean(dim=0)
                    self._ensembles[text, templates] = torch.nn.functional.normalize(mean, dim=-1)
            return torch.stack([self._ensembles[text, templates] for text in texts])


# open_clip exports of the same OpenAI weights, accepted when ViT-B-16.pt is absent. The folder is the
# Hugging Face repository that publishes them, so the name says which weights the file holds.
OPEN_CLIP_EXPORTS = ("vit_base_patch16_clip_224.openai/open_clip_model.safetensors",
                     "vit_base_patch16_clip_224.openai/open_clip_pytorch_model.bin")


def clip_checkpoint(weights_dir: Path | None) -> Path:
    """The CLIP file to load: OpenAI's ViT-B-16.pt, else an open_clip export of the same weights.

    Raises the registry's MissingWeights (file, folder searched, download command) when neither is there.
    """
    try:
        return registry.resolve(CLIP_KEY, weights_dir)
    except MissingWeights:
        folder = registry.weights_dir(weights_dir)
        for name in OPEN_CLIP_EXPORTS:
            if (folder / name).is_file():
                return folder / name
        raise


def require_clip(weights_dir: Path | None) -> None:
    """Raise MissingWeights unless a CLIP checkpoint is present or a ClipEncoder is injected."""
    if registry.injected(CLIP_KEY) is None:
        clip_checkpoint(weights_dir)


def model_id(weights_dir: Path | None, checkpoint: Path | None = None) -> str:
    """The model id `clip_encoder` reports for these arguments, without loading the model."""
    injected, path = _injected_or_file(weights_dir, checkpoint)
    if injected is not None:
        return injected.model_id
    return registry.identify(path, "clip_checkpoint")


def _injected_or_file(weights_dir: Path | None, checkpoint: Path | None) -> tuple[ClipEncoder | None, Path | None]:
    """`registry.user_injected_or_registry` for CLIP, the file checked to exist."""
    injected, path = registry.user_injected_or_registry(CLIP_KEY, checkpoint, lambda: clip_checkpoint(weights_dir))
    if path is not None and not path.is_file():
        raise DataError("CLIP checkpoint file not found", path)
    return injected, path  # type: ignore[return-value]


_LOADED: dict[tuple[str, str], ClipEncoder] = {}
_LOAD_LOCK = threading.Lock()


def clip_encoder(weights_dir: Path | None, device: str = "cpu", checkpoint: Path | None = None) -> ClipEncoder:
    """The session's CLIP ViT-B/16, loaded once per process: the user's `checkpoint` (`clip_checkpoint`) when
    given, else an injected ClipEncoder (tests), else the registry's file.

    Any accepted format of the same architecture loads, fine-tuned or not; the file's sha256 is the model id
    (`registry.identify`: a file named like OpenAI's `ViT-B-16.pt` must be OpenAI's file).
    Tests inject without any file: `registry.inject(CLIP_KEY, ClipEncoder(tiny_models.build_tiny_clip(), "tiny"))`
    """
    injected, path = _injected_or_file(weights_dir, checkpoint)
    if injected is not None:
        return injected
    key = (str(path), device)
    with _LOAD_LOCK:
        if key not in _LOADED:
            sha = registry.identify(path, "clip_checkpoint")
            _LOADED[key] = ClipEncoder(build_clip(path), sha, device)
        return _LOADED[key]
