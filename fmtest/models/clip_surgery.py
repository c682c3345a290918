"""CLIP Surgery (Li et al., "CLIP Surgery for Better Explainability with Enhancement in
Open-Vocabulary Tasks"): CS-ViT-B/16 is the OpenAI ViT-B/16 weights run through a changed forward pass.

Why: plain CLIP's patch tokens respond to the opposite of what the text names and carry noise shared
by every class, so its patch-text similarity makes a poor localisation map. The paper fixes both:

- Architecture surgery: from block `-depth` on, a second path runs beside the original one. Each of
  its blocks attends with value-value attention (softmax(v v^T) v: query and key replaced by the
  value projection, same weights) on the original path's normalized tokens, and skips the FFN. The
  original path is left as it was, so the class token (and the image embedding) is plain CLIP's;
  the patch tokens come from the new path. The wrapper shares the CLIP model's parameters (no copy).
- Feature surgery: the part of the patch-text similarity that every class shares is redundant and is
  subtracted. With a class set it is the mean over the classes, each weighted by how strongly the
  whole image (class token) matches it; for a single prompt it is the similarity to the embedding of
  generic texts (the empty string in the paper).

Checked against the xmed-lab reference code (commit d4696d4) on the same random ViT-B/16 weights:
surgery tokens, prompt ensembles, both feature-surgery forms and the SAM points agree. Tokens are
unit-normalized per token (cosine similarity, as the paper defines it).

Texts are encoded as prompt ensembles over the OpenAI ImageNet templates plus five scene templates,
the set the paper uses (`prompt_templates`; read from open_clip on first use, so importing this module
stays cheap). Images are squash-resized to the model's input size (224 for ViT-B/16).

Text2Seg's `predict_CLIPS` (text2seg/text2seg.py), which the study ran, differs from that in two
places this module can reproduce:
- its CLIP input (`clip_input = "text2seg"`, `text2seg_clip_input`) is GroundingDINO's `load_image`
  tensor (shortest side resized to 800, longest at most 1333, bilinear; ImageNet mean/std), resized
  to 224 x 224 as a tensor (bicubic, no antialiasing: torchvision's tensor default when Text2Seg was
  published) and normalised a second time with CLIP's mean/std;
- its tokens are divided by their norm along the token axis (`image_features.norm(dim=1)` on the
  (1, 1 + L, D) output, as CLIP Surgery's demo does too): `token_norm = "across_tokens"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fmtest.util.lazy import lazy_module

if TYPE_CHECKING:
    from fmtest.models.clip import ClipEncoder

torch = lazy_module("torch")
nn = lazy_module("torch.nn")
F = lazy_module("torch.nn.functional")

SURGERY_DEPTH = 6  # blocks with the dual path: the last 6 of ViT-B/16 in the paper
SURGERY_TEMPERATURE = 2.0  # sharpens the class weights of feature surgery (paper's value)
CLIP_INPUTS = ("clip", "text2seg")  # CLIP's own pre-processing, or Text2Seg's (see the module text)
TOKEN_NORMS = ("per_token", "across_tokens")  # unit tokens (cosine), or Text2Seg's norm along the token axis
DETR_SHORTEST, DETR_LONGEST = 800, 1333  # GroundingDINO's load_image: RandomResize([800], max_size=1333)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCENE_TEMPLATES = ("there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
                   "this is the {} in the scene.", "this is one {} in the scene.")


@cache
def prompt_templates() -> tuple[str, ...]:
    """The paper's ensemble: OpenAI's 80 ImageNet templates, then the five scene templates."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES) + SCENE_TEMPLATES


def detr_resized_hw(height: int, width: int, shortest: int = DETR_SHORTEST,
                    longest: int = DETR_LONGEST) -> tuple[int, int]:
    """The (height, width) GroundingDINO's (DETR's) resize gives: the shorter side to `shortest` unless the
    longer would then exceed `longest`; sizes truncated to whole pixels as that code does."""
    short, long = min(height, width), max(height, width)
    if long / short * shortest > longest:
        shortest = int(round(longest * short / long))
    if short == shortest:
        return height, width
    if width < height:
        return int(shortest * height / width), shortest
    return shortest, int(shortest * width / height)


def text2seg_clip_input(images_rgb: Sequence[np.ndarray], size_hw: tuple[int, int], clip_mean: torch.Tensor,
                        clip_std: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) CLIP input as Text2Seg's predict_CLIPS builds it from 8-bit RGB images.

    GroundingDINO's load_image tensor (bilinear resize of the PIL image, ImageNet mean/std), then a
    bicubic tensor resize without antialiasing and CLIP's normalisation applied on top.
    """
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    batch = []
    for image in images_rgb:
        oh, ow = detr_resized_hw(*image.shape[:2])
        resized = np.asarray(Image.fromarray(image).resize((ow, oh), Image.BILINEAR), dtype=np.float32)
        tensor = (torch.from_numpy(resized).permute(2, 0, 1) / 255.0 - mean) / std
        squashed = F.interpolate(tensor[None], size=size_hw, mode="bicubic", align_corners=False, antialias=False)
        batch.append((squashed[0] - clip_mean.view(3, 1, 1)) / clip_std.view(3, 1, 1))
    return torch.stack(batch)


def dual_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(query-key attention, value-value attention) of batch-first tokens `x`, both through the same
    in/out projections: the first is what `attn` computes, the second the surgery path's attention."""
    b, n, d = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    scale = (d // heads) ** -0.5

    def attend(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        weights = (query @ key.transpose(-2, -1) * scale).softmax(dim=-1)
        return attn.out_proj((weights @ v).transpose(1, 2).reshape(b, n, d))

    return attend(q, k), attend(v, v)


class SurgeryVisionEncoder:
    """An open_clip VisionTransformer run with the surgery architecture; called on a batch, returns all tokens,
    projected. A plain callable around the model's layers (not an nn.Module subclass, so defining it imports
    no torch)."""

    def __init__(self, visual: nn.Module, depth: int = SURGERY_DEPTH):
        blocks = visual.transformer.resblocks
        if not 1 <= depth <= len(blocks):
            raise ValueError(f"surgery depth must be 1..{len(blocks)}, got {depth}")
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise ValueError("CLIP Surgery needs a class-token ViT (OpenAI CLIP layout)")
        if not all(isinstance(getattr(b, "attn", None), nn.MultiheadAttention) for b in blocks):
            raise ValueError("CLIP Surgery needs standard multi-head attention blocks")
        self.visual = visual
        self.depth = depth

    @property
    def grid(self) -> tuple[int, int]:
        return self.visual.grid_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 + gh*gw, D): token 0 is plain CLIP's image embedding, the rest the surgery patch tokens."""
        with torch.no_grad():
            return self._tokens(images)

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        blocks = visual.transformer.resblocks
        x = visual._embeds(images)
        batch_first = visual.transformer.batch_first
        if not batch_first:
            x = x.transpose(0, 1)
        for block in blocks[: len(blocks) - self.depth]:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        original = surgery = x
        for block in blocks[len(blocks) - self.depth:]:
            qk, vv = dual_attention(block.attn, block.ln_1(original))
            original = original + block.ls_1(qk)
            original = original + block.ls_2(block.mlp(block.ln_2(original)))
            surgery = surgery + block.ls_1(vv)  # no FFN on the new path
        tokens = torch.cat([original[:, :1], surgery[:, 1:]], dim=1)
        return visual.ln_post(tokens) @ visual.proj


def feature_surgery(tokens: torch.Tensor, text_features: torch.Tensor,
                    redundant_features: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1 + L, T) similarity of unit tokens (B, 1 + L, D; token 0 the class token) to unit texts
    (T, D) with the redundant features removed.

    With `redundant_features` (D,): tokens @ (texts - redundant). Without: the class-set form, where
    each class's element-wise token*text product is weighted by w = softmax(2 * image-level score) /
    mean (the class token's similarity, so classes evident in the image weigh more) and the mean over
    classes is subtracted. Summed over the feature axis that product is linear, so it is computed on
    the similarities directly, w_t * s_t - mean_t'(w_t' * s_t'), without the (B, L, T, D) tensor.
    """
    if redundant_features is not None:
        return tokens @ (text_features - redundant_features.reshape(1, -1)).T
    similarity = tokens @ text_features.T
    probs = (similarity[:, :1] * SURGERY_TEMPERATURE).softmax(dim=-1)
    weighted = similarity * (probs / probs.mean(dim=-1, keepdim=True))
    return weighted - weighted.mean(dim=-1, keepdim=True)


def similarity_map(grid_similarity: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(B, T, gh, gw) similarities -> (B, T, H, W) maps in [0, 1]: min-max per map, bilinear upsampling."""
    flat = grid_similarity.flatten(2)
    low = flat.min(dim=-1, keepdim=True).values
    span = (flat.max(dim=-1, keepdim=True).values - low).clamp_min(torch.finfo(flat.dtype).tiny)
    normalized = ((flat - low) / span).reshape(grid_similarity.shape)
    return F.interpolate(normalized, size=size_hw, mode="bilinear", align_corners=False)


class ClipSurgery:
    """CS-ViT-B/16 on a loaded ClipEncoder: prompt -> similarity of each patch, redundancy removed."""

    def __init__(self, encoder: ClipEncoder, depth: int = SURGERY_DEPTH,
                 templates: Sequence[str] | None = None):
        self.encoder = encoder
        self.vision = SurgeryVisionEncoder(encoder.model.visual, depth)
        self.templates = prompt_templates() if templates is None else tuple(templates)

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def grid(self) -> tuple[int, int]:
        return self.vision.grid

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """(T, D) prompt-ensemble embeddings (the encoder remembers them for the session)."""
        return self.encoder.encode_text_ensembles(texts, self.templates)

    def clip_input(self, images_rgb: Sequence[np.ndarray], clip_input: str = "clip") -> torch.Tensor:
        """(N, 3, S, S) model input: CLIP's own pre-processing, or Text2Seg's (`CLIP_INPUTS`)."""
        if clip_input == "clip":
            return self.encoder.preprocess(images_rgb)
        if clip_input != "text2seg":
            raise ValueError(f"clip_input must be one of {', '.join(CLIP_INPUTS)}, got {clip_input!r}")
        for image in images_rgb:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"CLIP wants HxWx3 uint8 images, got {image.dtype} {image.shape}")
        batch = text2seg_clip_input(images_rgb, self.encoder.image_size, self.encoder.mean, self.encoder.std)
        return batch.to(self.encoder.device)

    def image_tokens(self, images_rgb: Sequence[np.ndarray], batch_size: int = 8, clip_input: str = "clip",
                     token_norm: str = "per_token") -> torch.Tensor:
        """(B, 1 + L, D) tokens of the surgery encoder, `batch_size` images per forward pass: unit tokens, or
        (`token_norm = "across_tokens"`) divided by each feature's norm over the image's tokens, as Text2Seg."""
        chunks = [self.vision(self.clip_input(images_rgb[i:i + batch_size], clip_input))
                  for i in range(0, len(images_rgb), batch_size)]
        tokens = torch.cat(chunks)
        if token_norm == "across_tokens":
            return tokens / tokens.norm(dim=1, keepdim=True)
        if token_norm != "per_token":
            raise ValueError(f"token_norm must be one of {', '.join(TOKEN_NORMS)}, got {token_norm!r}")
        return F.normalize(tokens, dim=-1)

    def patch_similarity(self, images_rgb: Sequence[np.ndarray], texts: Sequence[str],
                         redundant_texts: Sequence[str] | None = None, batch_size: int = 8,
                         clip_input: str = "clip", token_norm: str = "per_token") -> torch.Tensor:
        """(B, T, gh, gw) surgery similarity of every patch to every text.

        `redundant_texts` given: their mean ensemble embedding is the redundant feature subtracted
        (the paper's single-prompt form; [""] is its choice). None: class-set surgery over `texts`.
        `clip_input` and `token_norm` choose CLIP's or Text2Seg's pre-processing (see the module text).
        """
        tokens = self.image_tokens(images_rgb, batch_size, clip_input, token_norm)
        redundant = None
        if redundant_texts is not None:
            redundant = F.normalize(self.text_features(redundant_texts).mean(dim=0), dim=-1)
        similarity = feature_surgery(tokens, self.text_features(texts), redundant)[:, 1:]
        gh, gw = self.grid
        return similarity.transpose(1, 2).reshape(len(images_rgb), len(texts), gh, gw)
