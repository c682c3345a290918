"""The two images of a request: the test image aligned to the reference, and both as they go on the wire."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image

from fmtest.imaging.align import estimate_alignment, warp_to_reference
from fmtest.pipelines.vlm.settings import VLMSettings


@dataclass(frozen=True)
class EncodedImage:
    """An image as it goes on the wire (PNG) and the hash of its pixels (keys the request store)."""

    png: bytes
    sha256: str


def encode_png(image: np.ndarray) -> EncodedImage:
    """8-bit PNG of a float [0, 1] image; greyscale stays one channel (a third of the upload)."""
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    digest = hashlib.sha256(str(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()
    return EncodedImage(buffer.getvalue(), digest)


def aligned_to_reference(image: np.ndarray, reference: np.ndarray, settings: VLMSettings) -> tuple[np.ndarray, str]:
    """`image` registered to `reference`, or `image` as it is and a note saying why (it goes into the reasoning)."""
    if not settings.align:
        return image, ""
    alignment = estimate_alignment(image, reference, allow_scale=settings.allow_scale,
                                   min_quality=settings.min_alignment_quality)
    if not alignment.ok:
        return image, (f"[not aligned to the reference: quality {alignment.quality:.2f} < "
                       f"{settings.min_alignment_quality:.2f}; sent unaligned] ")
    return warp_to_reference(image, alignment, reference.shape[:2],
                             replicate_border=settings.border_fill == "replicate"), ""
