"""How SAM's ViT image encoder runs: the upstream reference path, or faster variants of it.

The encoder is almost all of SAM's cost (ViT-H: about 6 TFLOP per 1024 px image). Each speed-up is
an option of `EncoderSettings`, and the defaults are the upstream code unchanged:

- `precision = "bf16"`: the encoder runs under bfloat16 autocast (weights stay float32, shared with
  the reference path); its output is cast back to float32 so the prompt encoder and mask decoder
  run exactly as upstream.
- `attention = "sdpa"`: each of segment_anything's `Attention` modules is wrapped by
  `SdpaAttention`, which computes the same attention with `F.scaled_dot_product_attention`, passing
  the decomposed relative-position bias as an additive float mask. The wrapping happens on a
  structural copy of the encoder that shares its parameters: the reference encoder stays intact and
  no weights are duplicated.
- `compile = True`: `torch.compile` of that encoder, with inductor's on-disk cache in
  `compile_cache_dir`, so the compile cost is paid once per machine rather than once per process.
- `batch_size`: images per encoder call.

`precision`, `attention` and `compile` can change the embedding (within rounding), so they form
`embedding_key`, part of the key under which an embedding is cached; the batch size does not.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    Attention,
    ImageEncoderViT,
    get_rel_pos,
)

from fmtest.errors import ConfigError
from fmtest.models.precision import PRECISIONS

ATTENTIONS = ("reference", "sdpa")


@dataclass(frozen=True)
class EncoderSettings:
    """How the image encoder runs; the defaults are segment_anything's own code path in float32."""

    precision: str = "fp32"
    attention: str = "reference"
    compile: bool = False
    batch_size: int = 4
    # TORCHINDUCTOR_CACHE_DIR when `compile`; None: inductor's default. Where, not how: not compared.
    compile_cache_dir: Path | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"SAM encoder precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"SAM encoder attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if self.batch_size < 1:
            raise ConfigError(f"SAM encoder batch size must be >= 1, got {self.batch_size}")

    @property
    def embedding_key(self) -> str:
        """What can change the embedding: images encoded under equal keys may share it."""
        return f"{self.precision}/{self.attention}/{'compiled' if self.compile else 'eager'}"


class SdpaAttention(torch.nn.Module):
    """segment_anything's `Attention` computed by `F.scaled_dot_product_attention`.

    Holds the upstream module (and so its weights); the relative-position bias of
    `add_decomposed_rel_pos` is built as a (B, heads, HW, HW) float mask and added inside SDPA,
    which lets PyTorch pick a fused kernel instead of materialising softmax inputs in float32.
    """

    def __init__(self, attention: Attention):
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attention
        batch, h, w, _ = x.shape
        qkv = a.qkv(x).reshape(batch, h * w, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, HW, head_dim)
        bias = relative_position_bias(q, a.rel_pos_h, a.rel_pos_w, (h, w)) if a.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=a.scale)
        return a.proj(out.transpose(1, 2).reshape(batch, h, w, -1))


def relative_position_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
    """The additive (B, heads, HW, HW) bias that upstream's `add_decomposed_rel_pos` adds to q @ k^T.

    Same decomposition (a height term from the query's row, a width term from its column), built
    from upstream's `get_rel_pos`, in q's dtype.
    """
    h, w = size
    batch, heads, _, dim = q.shape
    r_h = get_rel_pos(h, h, rel_pos_h).to(q.dtype)  # (h, h, dim)
    r_w = get_rel_pos(w, w, rel_pos_w).to(q.dtype)
    r_q = q.reshape(batch, heads, h, w, dim)
    bias_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, r_h)  # (B, heads, h, w, h)
    bias_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, r_w)  # (B, heads, h, w, w)
    bias = bias_h[..., :, None] + bias_w[..., None, :]  # (B, heads, h, w, kh, kw)
    return bias.reshape(batch, heads, h * w, h * w)


def _structural_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree sharing the original's parameters, buffers and hooks (a forward hook
    on the reference encoder also sees the copy's calls); only the tree of submodules is new."""
    clone = copy.copy(module)
    clone._modules = {name: _structural_copy(child) for name, child in module._modules.items()}
    return clone


def with_sdpa_attention(encoder: ImageEncoderViT) -> ImageEncoderViT:
    """A parameter-sharing copy of `encoder` whose every block attends through `SdpaAttention`."""
    fast = _structural_copy(encoder)
    for block in fast.blocks:
        block.attn = SdpaAttention(block.attn)
    return fast


def build_encoder(encoder: ImageEncoderViT, settings: EncoderSettings) -> torch.nn.Module:
    """The module that encodes images under `settings`; the reference encoder itself by default."""
    module = with_sdpa_attention(encoder) if settings.attention == "sdpa" else encoder
    if settings.compile:
        if settings.compile_cache_dir is not None:
            # inductor reads its cache folder from the environment; a folder the user set wins
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(settings.compile_cache_dir))
        module = torch.compile(module, dynamic=False)
    return module

