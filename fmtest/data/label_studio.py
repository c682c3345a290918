"""Label Studio's JSON export (Export -> JSON: a list of tasks with their annotations) as a labelled
dataset (see `fmtest.data.labelled`):

```toml
[datasets.parts]
uses = "label_studio"
annotations = "parts/project-3-at-2026-01-05.json"
images = "parts/images"            # the originals, or Label Studio's media/upload/<project> folder
```

The image of a task is its `data.image` (else the one `data` value naming an image file), found by
file name: `/data/upload/3/1a2b3c4d-part.png` finds `1a2b3c4d-part.png` or `part.png`.

Which annotation is the ground truth: the one marked `ground_truth`, else the task's only annotation
that was not cancelled; a task with several and none marked is refused (mark one as ground truth in
Label Studio), a task with none is not labelled yet and is left out (counted in the dataset's
description). Predictions are never read.

Regions, in percent of `original_width` x `original_height`: polygons (`points`), rectangles (`x`,
`y`, `width`, `height`, `rotation` in degrees about the top-left corner), ellipses (centre `x`, `y`,
`radiusX`, `radiusY`, `rotation`) and brush masks (`rle`: Label Studio's own bit-packed RLE of the
RGBA image, decoded exactly as label-studio-converter's `brush.decode_rle`; a pixel is marked where
its alpha is not 0). Key points have no area and are refused when of a defect class. `choices` and
other image-level results are not read. A result on an image rotated in Label Studio
(`image_rotation` not 0) is refused: its coordinates are the rotated view's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmtest.data.io import IMAGE_SUFFIXES
from fmtest.data.labelled import (
    Annotation,
    Export,
    ExportedImage,
    LabelExportDataset,
    box_polygon,
    ellipse_polygon,
    points_polygon,
    read_json_export,
)
from fmtest.errors import DataError


class BrushRleError(ValueError):
    """A brush RLE that ends early or runs past the values it announces."""


class _Bits:
    """Reads big-endian unsigned numbers of any width from a byte string, bit by bit."""

    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.position = 0

    def read(self, width: int, count: int = 1) -> np.ndarray:
        """`count` numbers of `width` bits each."""
        end = self.position + width * count
        if end > self.bits.size:
            raise BrushRleError(f"the RLE ends after {self.bits.size} bits, inside a value")
        chunk = self.bits[self.position:end].reshape(count, width).astype(np.uint64)
        self.position = end
        return chunk @ (np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64))

    def number(self, width: int) -> int:
        return int(self.read(width)[0])


def brush_rle_length(rle: Sequence[int]) -> int:
    """How many values a brush RLE announces (its first 32 bits)."""
    return _Bits(bytes(rle[:4])).number(32)


def decode_brush_rle(rle: Sequence[int]) -> np.ndarray:
    """Label Studio's brush RLE (thi.ng/rle-pack) to its values, as label-studio-converter decodes it.

    Header: the number of values (32 bits), the word size minus 1 (5 bits), four run-length widths minus 1
    (4 bits each). Then tokens until all values are out: a flag bit, 2 bits choosing a run-length width,
    the run length minus 1 in that width; flag 1: one word repeated for the run, flag 0: the run's words
    one by one. A run past the announced count is cut there, as the converter's slice assignment does.
    """
    bits = _Bits(bytes(rle))
    count = bits.number(32)
    word = bits.number(5) + 1
    widths = [bits.number(4) + 1 for _ in range(4)]
    out = np.zeros(count, np.uint64)
    i = 0
    while i < count:
        repeated = bits.number(1)
        end = i + 1 + bits.number(widths[bits.number(2)])
        if repeated:
            out[i:end] = bits.number(word)
        elif end > count:
            raise BrushRleError(f"a run of single values ends at {end}, past the {count} values announced")
        else:
            out[i:end] = bits.read(word, end - i)
        i = end
    return out


@dataclass(frozen=True)
class BrushMask:
    """A brush region: Label Studio's RLE of the RGBA image `width` x `height`; marked where alpha is not 0."""

    rle: tuple[int, ...]
    width: int
    height: int

    def problem(self, height: int, width: int) -> str | None:
        if (self.width, self.height) != (width, height):
            return f"its brush mask is {self.width}x{self.height} but the image is {width}x{height}"
        if len(self.rle) < 4:
            return "its brush RLE is too short to hold a header"
        count = brush_rle_length(self.rle)
        if count != width * height * 4:
            return (f"its brush RLE holds {count} values but a {width}x{height} RGBA image has "
                    f"{width * height * 4}")
        return None

    def rasterise(self, height: int, width: int) -> np.ndarray:
        return decode_brush_rle(self.rle).reshape(height, width, 4)[:, :, 3] != 0


class LabelStudioDataset(LabelExportDataset):
    name = "label_studio"
    format_name = "Label Studio JSON"

    @classmethod
    def read_export(cls, path: Path) -> Export:
        tasks = read_json_export(path, cls.format_name)
        if not isinstance(tasks, list):
            raise DataError("not a Label Studio JSON export: expected a list of tasks (Export -> JSON, not JSON-MIN)",
                            path)
        images, classes, unlabelled = [], [], 0
        for task in tasks:
            where = f"task {task.get('id', '?')}" if isinstance(task, dict) else "a task"
            if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
                raise DataError(f"{where}: expected an object with data and annotations", path)
            annotation = _ground_truth(task, where, path)
            if annotation is None:
                unlabelled += 1
                continue
            regions, size = [], None
            for result in annotation.get("result") or []:
                region = _region(result, where, annotation.get("id", "?"), path)
                if region is None:
                    continue
                result_size = (result.get("original_width"), result.get("original_height"))
                if size is not None and result_size != size:
                    raise DataError(f"{where}: {region.name} is on a {result_size[0]}x{result_size[1]} image, another "
                                    f"result on a {size[0]}x{size[1]} one", path)
                size = result_size
                regions.append(region)
                classes += region.labels
            width, height = size if size is not None else (None, None)
            images.append(ExportedImage(_image_reference(task, where, path), where, width, height, tuple(regions)))
        return Export(path, tuple(images), tuple(dict.fromkeys(classes)), left_out=unlabelled)


def _ground_truth(task: dict, where: str, path: Path) -> dict | None:
    """The annotation taken as ground truth (see the module docstring); None: the task is not labelled."""
    annotations = [a for a in task.get("annotations") or []
                   if isinstance(a, dict) and not a.get("was_cancelled") and not a.get("skipped")]
    marked = [a for a in annotations if a.get("ground_truth")]
    if len(marked) == 1 or len(annotations) == 1:
        return (marked or annotations)[0]
    if not annotations:
        return None
    ids = ", ".join(str(a.get("id", "?")) for a in (marked or annotations))
    raise DataError(f"{where}: {len(marked or annotations)} annotations ({ids}) and none is the one ground truth; "
                    "mark one as ground truth in Label Studio", path)


def _image_reference(task: dict, where: str, path: Path) -> str:
    data = task["data"]
    if isinstance(data.get("image"), str):
        return data["image"]
    images = [v for v in data.values() if isinstance(v, str) and v.split("?")[0].lower().endswith(IMAGE_SUFFIXES)]
    if len(images) != 1:
        raise DataError(f"{where}: cannot tell which data value is the image (no data.image, "
                        f"{len(images)} values naming image files)", path)
    return images[0]


def _region(result: object, task: str, annotation_id: object, path: Path) -> Annotation | None:
    """A labelled region of a result, in pixels; None for results that label no region (choices, text)."""
    if not isinstance(result, dict) or not isinstance(result.get("value"), dict):
        return None
    value, kind = result["value"], str(result.get("type", ""))
    labels = value.get(kind) if kind.endswith("labels") else value.get("labels")
    if not isinstance(labels, list) or not labels:
        return None
    name = f"annotation {annotation_id}, result {result.get('id', '?')!r}"
    where = f"{task}, {name}"
    if result.get("image_rotation"):
        raise DataError(f"{where}: drawn on the image rotated by {result['image_rotation']} degrees in Label Studio; "
                        "its coordinates are the rotated view's: label the unrotated image", path)
    width, height = result.get("original_width"), result.get("original_height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise DataError(f"{where}: original_width and original_height must be positive integers", path)
    shape, geometry = _shape(value, width, height, where, path)
    return Annotation(name, tuple(str(label) for label in labels), shape, geometry)


def _shape(value: dict, width: int, height: int, where: str, path: Path):
    """(kind, geometry in pixels) from a region's value in percent; geometry None for key points."""
    sx, sy = width / 100.0, height / 100.0
    if "rle" in value:
        rle = value["rle"]
        if not (isinstance(rle, list) and all(isinstance(v, int) and 0 <= v <= 255 for v in rle)):
            raise DataError(f"{where}: rle must be a list of bytes (0..255)", path)
        return "brush", BrushMask(tuple(rle), width, height)
    if "points" in value:
        points = value["points"]
        if not (isinstance(points, list) and all(isinstance(p, list) and len(p) == 2 and all(map(_is_number, p))
                                                 for p in points)):
            raise DataError(f"{where}: points must be a list of [x, y] in percent", path)
        return "polygon", points_polygon(c for x, y in points for c in (x * sx, y * sy))
    numbers = {k: value.get(k) for k in ("x", "y", "width", "height", "radiusX", "radiusY", "rotation")}
    bad = [k for k, v in numbers.items() if v is not None and not _is_number(v)]
    if bad or not (_is_number(numbers["x"]) and _is_number(numbers["y"])):
        raise DataError(f"{where}: {', '.join(bad) or 'x, y'} must be numbers", path)
    x, y, rotation = numbers["x"] * sx, numbers["y"] * sy, numbers["rotation"] or 0.0
    if numbers["radiusX"] is not None and numbers["radiusY"] is not None:
        return "ellipse", ellipse_polygon(x, y, numbers["radiusX"] * sx, numbers["radiusY"] * sy, rotation)
    if numbers["width"] is not None and numbers["height"] is not None:
        return "rectangle", box_polygon(x, y, x + numbers["width"] * sx, y + numbers["height"] * sy, rotation,
                                        centre=(x, y))
    return "key point", None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
