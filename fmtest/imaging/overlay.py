"""Pictures of an image with its predicted and true defect masks: small thumbnails (base64 PNG,
inlined in the scoreboard) and the full-size viewer's layers (PNG bytes, one per toggle).

Colours come from the Okabe-Ito palette so that they stay apart for colour-blind readers:
ground truth is a bluish-green outline (the defect underneath stays visible), the prediction a
40 % reddish-purple fill, and pixels left out of scoring a grey hatch. The thumbnails end up
inlined in HTML reports by the hundred, so each is kept to about 20 KB. The viewer's layers are
separate transparent PNGs stacked in the browser, so each can be switched on and off; a mask is
shrunk so that a pixel is marked when any pixel under it is, and a one-pixel void stays visible.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
from pathlib import Path

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
LAYER_MAX_SIDE = 1024  # viewer layers are shrunk to this long side: a 4k scan would be ~10 MB a layer
SCORE_MAP_TOP = 2.0  # score maps are in units of the pixel threshold: the colour scale ends at twice it
SCORE_MAP_COLOURMAP = "magma"


def thumbnail_key(image_sha256: str, pred_mask: np.ndarray | None = None, gt_mask: np.ndarray | None = None,
                  ignore: np.ndarray | None = None, *, size: int = 160) -> str:
    """What `overlay_thumbnail` draws from, as a hex key: the image's content hash, each mask's pixels, the
    size, and this module's source and Pillow's version (a change to the drawing or the PNG encoder is a
    new key). Equal keys give byte-identical thumbnails, so a stored one can stand in for drawing it again."""
    h = hashlib.sha256(f"{_drawing_version()}\n{image_sha256}\n{size}\n".encode())
    for mask in (pred_mask, gt_mask, ignore):
        if mask is None:
            h.update(b"none\n")
        else:
            mask = np.asarray(mask)
            h.update(f"{mask.shape}{mask.dtype.str}\n".encode())
            h.update(np.packbits(mask.astype(bool, copy=False), axis=None).tobytes())
    return h.hexdigest()


@functools.cache
def _drawing_version() -> str:
    import PIL

    return hashlib.sha256(Path(__file__).read_bytes() + PIL.__version__.encode()).hexdigest()


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


def image_layers(
    image: np.ndarray,
    pred_mask: np.ndarray | None = None,
    gt_mask: np.ndarray | None = None,
    ignore: np.ndarray | None = None,
    score_map: np.ndarray | None = None,
    *,
    max_side: int = LAYER_MAX_SIDE,
    image_id: str | None = None,
) -> dict[str, bytes]:
    """The full-size viewer's layers of one image, each a PNG at most `max_side` pixels on its long side.

    `image` (float in [0, 1], grey or RGB) as scanned; `gt` the true defect outlined, pixels left out
    of scoring hatched, transparent elsewhere; `prediction` the predicted mask as a translucent fill;
    `score_map` the pipeline's per-pixel score in units of its pixel threshold (1.0 = the edge of the
    mask), colour-mapped from 0 to SCORE_MAP_TOP, at the image's size or shrunk to its shape as the prediction
    cache keeps it (`score_map_levels`). A layer whose input is None is left out.
    """
    name = image_id or "layer image"
    if max_side < 8:
        raise DataError(f"layer size must be at least 8 pixels, got {max_side}", name)
    grey_or_rgb = _to_uint8(image, name)
    height, width = grey_or_rgb.shape[:2]
    masks = {key: _check_mask(m, key, (height, width), name)
             for key, m in (("pred_mask", pred_mask), ("gt_mask", gt_mask), ("ignore", ignore))}
    out_hw = shrunk_size((height, width), max_side)
    layers = {"image": _png_bytes(_resized(grey_or_rgb, out_hw))}
    small = {key: _shrink_mask(m, out_hw) for key, m in masks.items() if m is not None}
    if "gt_mask" in small or "ignore" in small:
        rgba = np.zeros((*out_hw, 4), np.uint8)
        if "ignore" in small:
            yy, xx = np.indices(out_hw)
            rgba[small["ignore"] & ((yy + xx) % HATCH_PERIOD < 2)] = (*IGNORE_COLOUR, 255)
        if "gt_mask" in small:
            rgba[_outline(small["gt_mask"])] = (*GT_COLOUR, 255)
        layers["gt"] = _png_bytes(Image.fromarray(rgba))
    if "pred_mask" in small:
        rgba = np.zeros((*out_hw, 4), np.uint8)
        rgba[small["pred_mask"]] = (*PRED_COLOUR, round(255 * PRED_ALPHA))
        layers["prediction"] = _png_bytes(Image.fromarray(rgba))
    if score_map is not None:
        layers["score_map"] = _png_bytes(_score_map_image(score_map, (height, width), out_hw, name))
    return layers


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    """HxW (grey) or HxWx3 uint8: a grey scan stays one channel, a third of the PNG."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or image.size == 0:
        raise DataError(f"expected a greyscale HxW or RGB HxWx3 image, got shape {image.shape}", name)
    if not np.issubdtype(image.dtype, np.floating):
        raise DataError(f"expected a float image in [0, 1], got dtype {image.dtype}", name)
    return np.rint(np.nan_to_num(image.astype(np.float32), nan=0.0).clip(0.0, 1.0) * 255).astype(np.uint8)


def _resized(pixels: np.ndarray, out_hw: tuple[int, int]) -> Image.Image:
    image = Image.fromarray(pixels)
    return image if pixels.shape[:2] == out_hw else image.resize(out_hw[::-1], Image.Resampling.BOX)


def shrunk_size(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(height, width) scaled down so the long side is at most `max_side` (never up), each side at least 1."""
    scale = min(1.0, max_side / max(hw))
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def score_map_levels(score_map: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """A score map as the viewer's 256 colour levels at `out_hw`: 0 -> 0, SCORE_MAP_TOP and above -> 255 (NaN as
    0). What the scoreboard shows of a map, and all the prediction cache keeps of it."""
    shrunk = np.asarray(_resized(np.nan_to_num(np.asarray(score_map, dtype=np.float32), nan=0.0), out_hw),
                        dtype=np.float32)
    return np.rint(np.clip(shrunk / SCORE_MAP_TOP, 0.0, 1.0) * 255).astype(np.uint8)


def score_map_from_levels(levels: np.ndarray) -> np.ndarray:
    """The score map (in units of the pixel threshold) that `score_map_levels` turns back into the same levels."""
    return np.asarray(levels, dtype=np.float32) * np.float32(SCORE_MAP_TOP / 255)


def _score_map_image(score_map: np.ndarray, hw: tuple[int, int], out_hw: tuple[int, int], name: str) -> Image.Image:
    """A one-byte-per-pixel palette image: 0 -> darkest, SCORE_MAP_TOP and above -> brightest."""
    from matplotlib import colormaps

    score_map = np.asarray(score_map, dtype=np.float32)
    if score_map.ndim != 2 or (score_map.shape != hw and score_map.shape != shrunk_size(hw, max(score_map.shape))):
        raise DataError(f"score_map must be a HxW map at the image's size {hw[1]}x{hw[0]} (or that size shrunk), "
                        f"got shape {score_map.shape}", name)
    palette = np.rint(colormaps[SCORE_MAP_COLOURMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    image = Image.fromarray(score_map_levels(score_map, out_hw))
    image.putpalette(palette.tobytes())
    return image


def _to_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
    u8 = _to_uint8(image, name)
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
    """Full colour when it fits the budget (exact colours), else an adaptive palette: noisy scans compress badly.
    zlib's default level: its strongest (`optimize`) took three times as long for a few percent on noisy
    scans, a second of every run that writes a case's thumbnails."""
    image = Image.fromarray(rgb)
    data = _png_bytes(image)
    for colours in _PALETTE_SIZES:
        if len(data) <= MAX_PNG_BYTES:
            break
        data = _png_bytes(image.quantize(colours, method=Image.Quantize.MEDIANCUT))
    return data


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
