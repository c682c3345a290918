"""Reading images and masks from disk.

Every dataset decodes through here, so all of them agree on the conventions: float32 images in
[0, 1] (8-bit divided by 255, 16-bit by 65535 so SAT scans keep their precision), HxW greyscale or
HxWx3 RGB, alpha dropped, masks bool HxW. A file that cannot be decoded raises DataError naming
the file instead of a decoder traceback.

Masks are binarised one way everywhere (`binarise_mask`): defect = above 127 on the 8-bit scale,
the same fraction of full scale for 16-bit and float masks, so JPEG noise and anti-aliased edges
near black and white read as intended and a background stored as 1 is background.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from fmtest.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", *TIFF_SUFFIXES)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, tifffile.TiffFileError,
                  Image.DecompressionBombError)
# PIL modes converted to plain 8-bit RGB or L before use (palette, alpha, other colour spaces).
_TO_RGB = {"P", "PA", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"}
_TO_L = {"LA", "La"}
# A mask pixel is defect above this value on the 8-bit scale; 16-bit and float masks compare at the same
# fraction of full scale. A dataset's `mask_threshold` option replaces it.
MASK_THRESHOLD = 127
# With the default threshold, a mask with more than this share of pixels between 1/4 and 3/4 of full scale
# is not a two-level mask (a photo, a heat map, a colour-coded label map): refused rather than guessed at.
MAX_MID_GREY_SHARE = 0.05
_MASK_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# ITU-R BT.601 luma weights, the ones PIL and OpenCV use for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def read_pixels(path: Path | str) -> np.ndarray:
    """Decoded pixel values as stored (uint8, uint16, float or bool), HxW or HxWxC, alpha dropped.

    Label maps (Oxford trimaps, palette masks) need the stored values, not intensities: a palette
    image gives its palette indices here.
    """
    return _decode(Path(path), palette_to_rgb=False)


def _decode(path: Path, palette_to_rgb: bool) -> np.ndarray:
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            pixels = tifffile.imread(path)
        else:
            pixels = _read_with_pil(path, palette_to_rgb)
    except _DECODE_ERRORS as e:
        raise DataError(f"cannot decode image ({type(e).__name__}: {e})", path) from None
    return _drop_alpha(_squeeze_channels(pixels, path))


def _read_with_pil(path: Path, palette_to_rgb: bool) -> np.ndarray:
    with Image.open(path) as im:
        im.load()  # decode now: a truncated file fails here, inside the caller's except clause
        if im.mode in ("P", "PA") and not palette_to_rgb:
            return np.array(im)  # PA gives (index, alpha); the alpha is dropped later
        if im.mode in _TO_RGB:
            return np.array(im.convert("RGB"))
        if im.mode in _TO_L:
            return np.array(im.convert("L"))
        return np.array(im)


def _squeeze_channels(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[:, :, 0]
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (2, 3, 4)):
        return pixels
    raise DataError(f"unsupported image shape {pixels.shape} (expected HxW, HxWx3 or HxWx4)", path)


def _drop_alpha(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[2] == 2:  # grey + alpha
        return pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return pixels[:, :, :3]
    return pixels


def read_image(path: Path | str) -> np.ndarray:
    """An image as float32 in [0, 1]: HxW greyscale or HxWx3 RGB."""
    path = Path(path)
    return _to_unit_float(_decode(path, palette_to_rgb=True), path)


def _to_unit_float(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype == np.bool_:
        return pixels.astype(np.float32)
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535)
    if np.issubdtype(pixels.dtype, np.floating):
        lo, hi = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        if not (np.isfinite(pixels).all() and lo >= 0.0 and hi <= 1.0):
            raise DataError(f"float image must hold values in [0, 1], found {lo:g}..{hi:g}", path)
        return pixels.astype(np.float32)
    raise DataError(f"unsupported pixel type {pixels.dtype} (expected 8- or 16-bit integer or float)", path)


def read_mask(path: Path | str, shape: Sequence[int], threshold: int | None = None) -> np.ndarray:
    """A defect mask as bool HxW that must match `shape` (an image's shape); see `binarise_mask`.

    A colour mask is read by its brightest channel; a palette mask by its palette indices.
    """
    path = Path(path)
    pixels = read_pixels(path)
    if pixels.ndim == 3:
        pixels = pixels.max(axis=2)
    mask = binarise_mask(pixels, path, threshold)
    check_size(mask, shape, path)
    return mask


def binarise_mask(pixels: np.ndarray, path: Path, threshold: int | None = None) -> np.ndarray:
    """Defect pixels of a stored single-channel mask.

    A pixel is defect when its value is above `threshold` on the 8-bit scale (default MASK_THRESHOLD,
    127); 16-bit masks compare at threshold x 257, float masks (values in [0, 1]) at threshold / 255,
    bool masks are taken as they are. A mask holding exactly the values 0 and 1 is a label mask: 1 is
    defect. With the default threshold, a mask that is not two-level (more than MAX_MID_GREY_SHARE of
    its pixels mid-grey) raises DataError naming the file; an explicit threshold is applied as given.
    """
    if pixels.dtype == np.bool_:
        return pixels
    if np.issubdtype(pixels.dtype, np.floating):
        if not (np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0):
            raise DataError("a float mask must hold values in [0, 1]", path)
        full = 1.0
    elif pixels.dtype in _MASK_FULL_SCALE:
        full = _MASK_FULL_SCALE[pixels.dtype]
    else:
        raise DataError(f"unsupported mask pixel type {pixels.dtype} (expected 8- or 16-bit, float or 1-bit)", path)
    if threshold is None:
        if pixels.max() == 1 and pixels.min() == 0 and np.isin(pixels, (0, 1)).all():
            return pixels == 1
        mid_grey = float(np.mean((pixels > full / 4) & (pixels < 3 * full / 4)))
        if mid_grey > MAX_MID_GREY_SHARE:
            raise DataError(f"mask is not two-level: {mid_grey:.0%} of its pixels are mid-grey (between 1/4 and 3/4 "
                            "of full scale), so defect and background cannot be told apart; a mask is black (or 0) "
                            "background with white (or 1) defects. Check that this file is a mask, or set "
                            "mask_threshold in the dataset's options to threshold it anyway", path)
        threshold = MASK_THRESHOLD
    return pixels > threshold * full / 255.0


def check_size(mask: np.ndarray, shape: Sequence[int], path: Path) -> None:
    """A mask or label map must cover its image pixel for pixel."""
    h, w = shape[:2]
    if mask.shape[:2] != (h, w):
        raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {w}x{h}", path)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 for models that want 8-bit RGB; a greyscale image is replicated into 3 channels."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        rgb = image
    else:
        rgb = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if rgb.ndim == 2:
        return np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        return rgb
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def to_gray(image: np.ndarray) -> np.ndarray:
    """HxW float32: RGB is reduced with BT.601 luma weights, greyscale passes through."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return image @ _LUMA
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def list_images(folder: Path) -> list[Path]:
    """Image files of one folder, sorted by name so ids and subsets are stable across machines."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def links_leaving(folder: Path, roots: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(link, target) of every symbolic link under `folder`, to a file or a folder (never followed), whose
    target lies outside every one of `roots`, in path order."""
    inside = [Path(r).resolve() for r in roots]
    found = []
    pending = [Path(folder)]
    while pending:
        try:
            entries = sorted(os.scandir(pending.pop()), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if not any(target.is_relative_to(root) for root in inside):
                    found.append((path, target))
            elif entry.is_dir():
                pending.append(path)
    return sorted(found)


def refuse_links_leaving(folders: Sequence[Path], root: Path | None) -> None:
    """DataError naming the first symbolic link in `folders` whose target lies outside the data root and outside
    its dataset folder, and how many there are: a dataset reads only files under its root."""
    found = [link for folder in folders for link in links_leaving(folder, [folder, *([root] if root else [])])]
    if not found:
        return
    link, target = found[0]
    more = f" ({len(found) - 1} more such link(s) in the dataset)" if len(found) > 1 else ""
    where = f"the data root {root}" if root else "its dataset folder"
    raise DataError(f"a symbolic link to {target}, outside {where}: refused{more}; set follow_outside_links = true "
                    "(--fm-follow-outside-links) to read files there", link)
