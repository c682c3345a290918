"""GroundingDINO through transformers' `GroundingDinoForObjectDetection`, fully offline.

Why transformers and not `groundingdino-py`: the latter is an unmaintained sdist that pins
supervision 0.6.0 and calls `BertModel.get_extended_attention_mask`, removed in transformers 5.
transformers ships the same architecture. Two checkpoint layouts load:

- the transformers folder (`IDEA-Research/grounding-dino-tiny`: config.json, model.safetensors, the BERT
  WordPiece vocabulary and the image-processor settings);
- an original-layout file (`groundingdino_swint_ogc.pth`, `groundingdino_swinb_cogcoor.pth`, or a model
  fine-tuned with the IDEA-Research code), converted at load time by `gdino_convert`. It carries no
  vocabulary: the bert-base-uncased `vocab.txt` comes from the weights folder (`bert_base_uncased_vocab`).

Which file: the pipeline's `gdino_checkpoint` (a folder or a file), else the registry's folder, else the
registry's original Swin-T OGC file.

Thresholds follow the original `get_grounding_output` of Grounded-SAM: a query is kept when its best
token probability exceeds `box_threshold`; `text_threshold` only chooses which prompt tokens name the
box (its phrase). Boxes come back in the original image's pixel coordinates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fmtest.errors import DataError, MissingWeights
from fmtest.models import gdino_convert, registry
from fmtest.models.precision import autocast
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")

WEIGHT_KEY = "groundingdino_swint_ogc"  # the transformers folder; also the key tests inject a detector under
ORIGINAL_KEY = "groundingdino_swint_ogc_pth"  # the same Swin-T OGC model, as the original release file
VOCAB_KEY = "bert_base_uncased_vocab"
BERT_UNCASED_VOCAB_SIZE = 30_522


@dataclass(frozen=True)
class Detections:
    """Boxes for one image: (N,4) xyxy pixels of the original image, (N,) scores, one phrase per box."""

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    phrases: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.scores)


def caption_for(prompts: str | Sequence[str]) -> str:
    """The caption GroundingDINO was trained on: lower case, phrases separated and ended by ' .'."""
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    phrases = [p.strip().lower().rstrip(".").strip() for p in items]
    phrases = [p for p in phrases if p]
    if not phrases:
        raise DataError("GroundingDINO needs a non-empty text prompt")
    return " . ".join(phrases) + " ."


def load_bert_tokenizer(folder: Path, expected_vocab: int = BERT_UNCASED_VOCAB_SIZE):
    """BERT WordPiece tokenizer from a folder holding vocab.txt or tokenizer.json (+ tokenizer_config.json).

    transformers 5 can hand back a silently empty tokenizer (5 special tokens) instead of failing,
    so the vocabulary size is checked and a mismatch raised naming the folder.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertTokenizer

    folder = Path(folder)
    if not any((folder / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
        raise MissingWeights("neither vocab.txt nor tokenizer.json (BERT uncased WordPiece vocabulary) found",
                             folder)
    tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    if len(tokenizer) != expected_vocab:
        raise DataError(f"tokenizer has {len(tokenizer)} entries, expected {expected_vocab} "
                        "(bert-base-uncased vocabulary); the folder's vocab.txt is wrong or was not read", folder)
    return tokenizer


class GroundingDino:
    """A GroundingDINO model with its tokenizer and image processor: images + prompt -> boxes."""

    def __init__(self, model, tokenizer, image_processor, model_id: str, device: str = "cpu"):
        if len(tokenizer) != model.config.text_config.vocab_size:
            raise DataError(f"tokenizer has {len(tokenizer)} entries but the text encoder expects "
                            f"{model.config.text_config.vocab_size}")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_id = model_id
        self.device = device

    def forward(self, images_rgb: Sequence[np.ndarray], caption: str, precision: str = "fp32"):
        """Raw model outputs and the token ids for a batch of RGB uint8 images and one caption.

        The batch runs as one model call (the image processor pads to the largest image and masks
        the padding); `precision = "bf16"` runs it under bfloat16 autocast.
        """
        for image in images_rgb:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise DataError(f"GroundingDINO needs HxWx3 uint8 RGB images, got {image.dtype} {image.shape}")
        pixels = self.image_processor(images=list(images_rgb), return_tensors="pt")
        text = self.tokenizer([caption] * len(images_rgb), padding="longest", return_tensors="pt")
        inputs = {**pixels, **text}
        with torch.no_grad(), autocast(self.device, precision):
            outputs = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        return outputs, text["input_ids"]

    def detect(self, images_rgb: Sequence[np.ndarray], prompts: str | Sequence[str],
               box_threshold: float, text_threshold: float, precision: str = "fp32") -> list[Detections]:
        """Boxes whose best token probability exceeds `box_threshold`, one Detections per image."""
        if not len(images_rgb):
            return []
        outputs, input_ids = self.forward(images_rgb, caption_for(prompts), precision)
        probs = outputs.logits.sigmoid().float().cpu()  # (B, Q, max_text_len); -inf padding -> 0
        boxes = outputs.pred_boxes.float().cpu()  # (B, Q, 4) cx, cy, w, h relative to the image
        # special tokens and the phrase separator never name a box
        skip = set(self.tokenizer.all_special_ids) | {self.tokenizer.convert_tokens_to_ids(".")}
        results = []
        for prob, box, ids, image in zip(probs, boxes, input_ids, images_rgb, strict=True):
            scores = prob.max(dim=-1).values
            keep = scores > box_threshold
            h, w = image.shape[:2]
            cx, cy, bw, bh = box[keep].unbind(-1)
            xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)
            xyxy = xyxy * torch.tensor([w, h, w, h], dtype=xyxy.dtype)
            phrases = tuple(self._phrase(p, ids, skip, text_threshold) for p in prob[keep])
            results.append(Detections(xyxy.numpy(), scores[keep].numpy(), phrases))
        return results

    def _phrase(self, token_probs: torch.Tensor, ids: torch.Tensor, skip: set[int], threshold: float) -> str:
        chosen = [int(t) for t, p in zip(ids, token_probs[: len(ids)]) if p > threshold and int(t) not in skip]
        return self.tokenizer.decode(chosen).strip()


def load_grounding_dino(folder: Path, device: str = "cpu", model_id: str | None = None) -> GroundingDino:
    """Load a transformers-layout GroundingDINO folder offline; every failure names the folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import (
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
    )

    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not (folder / "config.json").is_file():
        raise MissingWeights("config.json not found (not a transformers GroundingDINO folder)", folder)
    try:
        model, info = GroundingDinoForObjectDetection.from_pretrained(
            str(folder), local_files_only=True, output_loading_info=True)
    except Exception as e:  # corrupt safetensors, bad config: many exception types, one meaning
        raise DataError(f"cannot load GroundingDINO ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                        folder) from None
    if info["missing_keys"] or info.get("mismatched_keys"):
        missing = sorted(info["missing_keys"]) + [str(k) for k in info.get("mismatched_keys", [])]
        raise DataError(f"checkpoint does not match the GroundingDINO config: {len(missing)} missing or "
                        f"mismatched weights (e.g. {', '.join(missing[:3])})", weights)
    tokenizer = load_bert_tokenizer(folder, model.config.text_config.vocab_size)
    processor_file = folder / "preprocessor_config.json"
    # no preprocessor file: the class defaults are the original resize (shortest 800, longest 1333)
    image_processor = (GroundingDinoImageProcessor.from_pretrained(str(folder), local_files_only=True)
                       if processor_file.is_file() else GroundingDinoImageProcessor())
    return GroundingDino(model, tokenizer, image_processor,
                         model_id or registry.file_sha256(weights), device=device)


def load_original_checkpoint(path: Path, vocab_folder: Path, device: str = "cpu") -> GroundingDino:
    """Load an original-layout GroundingDINO file (converted to transformers' model) with a BERT vocabulary."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GroundingDinoImageProcessor

    path = Path(path)
    if not path.is_file():
        raise MissingWeights("GroundingDINO checkpoint file not found", path)
    model_id = registry.identify(path, "gdino_checkpoint")
    state = registry.load_state_dict(path)
    if not gdino_convert.is_original_layout(state):
        raise DataError("not a GroundingDINO checkpoint of the IDEA-Research layout (no backbone.0.patch_embed "
                        "weights); a transformers model must be given as its folder", path)
    model = gdino_convert.build_from_original(state, path)
    tokenizer = load_bert_tokenizer(vocab_folder, model.config.text_config.vocab_size)
    # the original inference transform: shortest side 800, longest 1333, ImageNet mean/std (the class defaults)
    return GroundingDino(model, tokenizer, GroundingDinoImageProcessor(), model_id, device=device)


def grounding_dino(weights_dir: Path | None, device: str, checkpoint: Path | None = None) -> GroundingDino:
    """The process-wide detector, loaded once: the user's `checkpoint` (`gdino_checkpoint`: a transformers
    folder or an original-layout file) when given, else an injected one (tests), else the registry's folder,
    else the registry's original Swin-T OGC file."""
    injected, checkpoint = registry.user_injected_or_registry(WEIGHT_KEY, checkpoint, lambda: resolve(weights_dir))
    if injected is not None:
        return injected  # type: ignore[return-value]
    if checkpoint.is_dir():
        return _load_folder(checkpoint, device)
    return _load_original(checkpoint, resolve_vocabulary(weights_dir).resolve(), device)


def model_id(weights_dir: Path | None, checkpoint: Path | None = None) -> str:
    """The model id `grounding_dino` reports for these arguments, without loading the model: the sha256 of
    a folder's model.safetensors or of an original-layout file, or an injected detector's id."""
    injected, checkpoint = registry.user_injected_or_registry(WEIGHT_KEY, checkpoint, lambda: resolve(weights_dir))
    if injected is not None:
        return injected.model_id  # type: ignore[attr-defined]
    if checkpoint.is_dir() and (checkpoint / "model.safetensors").is_file():
        return registry.file_sha256(checkpoint / "model.safetensors")
    if checkpoint.is_file():
        return registry.identify(checkpoint, "gdino_checkpoint")
    return grounding_dino(weights_dir, "cpu", checkpoint).model_id  # not loadable: loading says why


def resolve(weights_dir: Path | None) -> Path:
    """The registry's GroundingDINO: the transformers folder, else the original .pth (with its vocabulary)."""
    try:
        return registry.resolve(WEIGHT_KEY, weights_dir)
    except MissingWeights as e:
        original = registry.spec(ORIGINAL_KEY).path_in(registry.weights_dir(weights_dir))
        if not original.is_file():
            raise MissingWeights(f"{e}, or put {original.name} and {registry.spec(VOCAB_KEY).filename}/vocab.txt "
                                 f"there (`fmtest weights download {ORIGINAL_KEY} {VOCAB_KEY}`)") from None
        try:
            resolve_vocabulary(weights_dir)
        except MissingWeights as missing_vocabulary:
            raise MissingWeights(f"{original.name} is there but not its tokenizer vocabulary: "
                                 f"{missing_vocabulary}") from None
        return original


def resolve_vocabulary(weights_dir: Path | None) -> Path:
    """The bert-base-uncased vocabulary folder original-layout checkpoints are tokenized with."""
    return registry.resolve(VOCAB_KEY, weights_dir)


def require(weights_dir: Path | None, checkpoint: Path | None = None) -> None:
    """Raise MissingWeights unless the checkpoint (and for an original-layout file, its vocabulary) is there."""
    if checkpoint is not None:
        if not Path(checkpoint).is_dir():
            resolve_vocabulary(weights_dir)
    elif registry.injected(WEIGHT_KEY) is None:
        resolve(weights_dir)


@lru_cache(maxsize=2)
def _load_folder(folder: Path, device: str) -> GroundingDino:
    return load_grounding_dino(folder, device)


@lru_cache(maxsize=2)
def _load_original(path: Path, vocab_folder: Path, device: str) -> GroundingDino:
    return load_original_checkpoint(path, vocab_folder, device)
