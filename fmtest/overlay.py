"""Thumbnails of an image with its predicted and true defect masks drawn over it, as base64 PNG.

Colours come from the Okabe-Ito palette so that they stay apart for colour-blind readers:
ground truth is a bluish-green outline (the defect underneath stays visible), the prediction a
40 % reddish-purple fill, and pixels left out of scoring a grey hatch. The thumbnails end up
inlined in HTML reports by the hundred, so each is kept to about 20 KB.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from fmtest.errors import DataError

GT_COLOUR = (0, 158, 115)  # Okabe-Ito bluish green
PRED_COLOUR = (204, 121, 167)  # Okabe-Ito reddish purple
IGNORE_COLOUR = (160, 160, 160)
PRED_ALPHA = 0.4
HATCH_PERIOD = 4  # pixels between diagonal hatch lines
MAX_PNG_BYTES = 20_000
_PALETTE_SIZES = (128, 64, 32)  # tried in turn when a full-colour PNG is over budget


def overlay_thumbnail(
    image: np.ndarray,
    pred_mask: np.ndarray | None = None,
    gt_mask: np.ndarray | None = None,
    ignore: np.ndarray | None = None,
    *,
    size: int = 160,
    image_id: str | None = None,
) -> str:
    """Draw the masks over `image` (grey HxW or RGB HxWx3, float in [0, 1]) shrunk to fit `size`.

    Returns the PNG as a base64 string (no `data:` prefix). `image_id` only names the image in
    error messages.
    """
    name = image_id or "thumbnail image"
    rgb = _to_rgb_uint8(image, name)
    height, width = rgb.shape[:2]
    masks = {key: _check_mask(m, key, (height, width), name)
             for key, m in (("pred_mask", pred_mask), ("gt_mask", gt_mask), ("ignore", ignore))}
    if size < 8:
        raise DataError(f"thumbnail size must be at least 8 pixels, got {size}", name)

    scale = min(1.0, size / max(height, width))
    out_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    canvas = np.asarray(Image.fromarray(rgb).resize(out_hw[::-1], Image.Resampling.BOX), dtype=np.float32)
    small = {key: _shrink_mask(m, out_hw) for key, m in masks.items() if m is not None}

    if "ignore" in small:
        yy, xx = np.indices(out_hw)
        hatch = small["ignore"] & ((yy + xx) % HATCH_PERIOD < 2)
        canvas[hatch] = IGNORE_COLOUR
    if "pred_mask" in small:
        fill = small["pred_mask"]
        canvas[fill] = (1 - PRED_ALPHA) * canvas[fill] + PRED_ALPHA * np.asarray(PRED_COLOUR, np.float32)
    if "gt_mask" in small:
        canvas[_outline(small["gt_mask"])] = GT_COLOUR
    return base64.b64encode(_encode_png(np.rint(canvas).astype(np.uint8))).decode("ascii")


def _to_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or image.size == 0:
        raise DataError(f"expected a greyscale HxW or RGB HxWx3 image, got shape {image.shape}", name)
    if not np.issubdtype(image.dtype, np.floating):
        raise DataError(f"expected a float image in [0, 1], got dtype {image.dtype}", name)
    grey_or_rgb = np.nan_to_num(image.astype(np.float32), nan=0.0).clip(0.0, 1.0)
    u8 = np.rint(grey_or_rgb * 255).astype(np.uint8)
    return np.repeat(u8[..., None], 3, axis=2) if u8.ndim == 2 else u8


def _check_mask(mask: np.ndarray | None, key: str, hw: tuple[int, int], name: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"{key} must be a HxW mask, got shape {mask.shape}", name)
    if mask.shape != hw:
        raise DataError(f"{key} is {mask.shape[1]}x{mask.shape[0]} but the image is {hw[1]}x{hw[0]}", name)
    return mask.astype(bool)


def _shrink_mask(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """A thumbnail pixel is marked when any source pixel under it is: small defects must not vanish."""
    if mask.shape == out_hw:
        return mask
    coverage = Image.fromarray(mask.astype(np.float32)).resize(out_hw[::-1], Image.Resampling.BOX)
    return np.asarray(coverage) > 0


def _outline(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (the image border counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _encode_png(rgb: np.ndarray) -> bytes:
    """Full colour when it fits the budget (exact colours), else an adaptive palette: noisy scans compress badly."""
    image = Image.fromarray(rgb)
    data = _png_bytes(image)
    for colours in _PALETTE_SIZES:
        if len(data) <= MAX_PNG_BYTES:
            break
        data = _png_bytes(image.quantize(colours, method=Image.Quantize.MEDIANCUT))
    return data


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
