"""COCO instance segmentation JSON (`instances_*.json`, as CVAT, Label Studio, Roboflow and pycocotools
write it) as a labelled dataset (see `fmtest.data.labelled`):

```toml
[datasets.parts]
uses = "coco"
annotations = "parts/annotations/instances_default.json"
images = "parts/images"
defect_classes = ["scratch", "dent"]
```

An annotation's area is its `segmentation`: polygons (`[[x1, y1, x2, y2, ...], ...]`, drawn by
pycocotools), an uncompressed RLE (`{"counts": [...], "size": [h, w]}`, column-major runs starting
with background) or a compressed one (`"counts"` a string); an annotation without a segmentation is
its `bbox` ([x, y, width, height]). A run-length mask whose `size` or run total is not its image's is
refused, naming the annotation id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmtest.data.labelled import (
    Annotation,
    Export,
    ExportedImage,
    LabelExportDataset,
    Polygons,
    box_polygon,
    decode_coco_rle,
    read_json_export,
)
from fmtest.errors import DataError


@dataclass(frozen=True)
class CocoRle:
    """A COCO run-length mask: `counts` a list (uncompressed) or pycocotools' string form, `size` [h, w]."""

    counts: list[int] | str
    size: tuple[int, int]

    def problem(self, height: int, width: int) -> str | None:
        if self.size != (height, width):
            return f"its RLE is {self.size[1]}x{self.size[0]} (size [h, w] = {list(self.size)}) but the image is " \
                   f"{width}x{height}"
        runs = self.counts if isinstance(self.counts, list) else string_runs(self.counts)
        if runs is None or any(r < 0 for r in runs):
            return "its RLE counts are malformed"
        if sum(runs) != height * width:
            return f"its RLE runs cover {sum(runs)} pixels but the {width}x{height} image has {height * width}"
        return None

    def rasterise(self, height: int, width: int) -> np.ndarray:
        from pycocotools import mask as coco_mask

        rle = {"size": [height, width], "counts": self.counts}
        if isinstance(self.counts, list):
            rle = coco_mask.frPyObjects(rle, height, width)
        return decode_coco_rle(rle)


def string_runs(counts: str) -> list[int] | None:
    """The runs of pycocotools' compressed RLE string, or None when it is malformed.

    Each run is a little-endian number in 5-bit groups, one character (48 + group) each, 0x20 marking
    that another group follows and 0x10 in the last group the sign; from the third run on, the number is
    the difference to the run two before. Read here only to check that the runs cover the image:
    pycocotools decodes a short RLE without a word.
    """
    runs: list[int] = []
    i = 0
    while i < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if i >= len(counts):
                return None
            group = ord(counts[i]) - 48
            if not 0 <= group < 64:
                return None
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            i += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift
        runs.append(value + (runs[-2] if len(runs) > 2 else 0))
    return runs


class CocoDataset(LabelExportDataset):
    name = "coco"
    format_name = "COCO"

    @classmethod
    def read_export(cls, path: Path) -> Export:
        data = read_json_export(path, cls.format_name)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
            raise DataError("not a COCO export: expected an object with lists images and annotations "
                            "(and categories)", path)
        categories = {}
        for category in data.get("categories", []):
            if not (isinstance(category, dict) and "id" in category and isinstance(category.get("name"), str)):
                raise DataError(f"category {category!r}: expected an object with id and name", path)
            categories[category["id"]] = category["name"]
        entries: dict[object, dict] = {}
        for image in data["images"]:
            if not (isinstance(image, dict) and "id" in image and isinstance(image.get("file_name"), str)):
                raise DataError(f"image {str(image)[:80]}: expected an object with id and file_name", path)
            if image["id"] in entries:
                raise DataError(f"image id {image['id']} is listed twice", path)
            entries[image["id"]] = image
        annotations: dict[object, list[Annotation]] = {key: [] for key in entries}
        for annotation in data["annotations"]:
            where = f"annotation {annotation.get('id', '?')}" if isinstance(annotation, dict) else "an annotation"
            if not isinstance(annotation, dict) or annotation.get("image_id") not in entries:
                raise DataError(f"{where}: image_id {annotation.get('image_id') if isinstance(annotation, dict) else '?'}"
                                " is not among the images", path)
            if annotation.get("category_id") not in categories:
                raise DataError(f"{where}: category_id {annotation.get('category_id')} is not among the categories",
                                path)
            annotations[annotation["image_id"]].append(Annotation(where, (categories[annotation["category_id"]],),
                                                                  *_geometry(annotation, where, path)))
        images = tuple(ExportedImage(str(image["file_name"]), f"image id {key} ({image['file_name']})",
                                     _size(image, "width", path), _size(image, "height", path),
                                     tuple(annotations[key]))
                       for key, image in entries.items())
        return Export(path, images, tuple(categories.values()))


def _size(image: dict, key: str, path: Path) -> int:
    value = image.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DataError(f"image id {image['id']}: {key} must be a positive integer, got {value!r}", path)
    return value


def _geometry(annotation: dict, where: str, path: Path) -> tuple[str, object]:
    """(kind, geometry) of a COCO annotation: its segmentation, or its bbox when it has none."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list) and segmentation:
        if not all(isinstance(ring, list) and all(_is_number(v) for v in ring) for ring in segmentation):
            raise DataError(f"{where}: segmentation must be a list of polygons [x1, y1, x2, y2, ...]", path)
        return "polygon", Polygons(tuple(tuple(float(v) for v in ring) for ring in segmentation))
    if isinstance(segmentation, dict):
        counts, size = segmentation.get("counts"), segmentation.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)
                and (isinstance(counts, str) or (isinstance(counts, list)
                                                 and all(isinstance(v, int) for v in counts)))):
            raise DataError(f"{where}: an RLE segmentation needs counts (a list of integers or a string) and "
                            "size [height, width]", path)
        return "mask", CocoRle(counts, (size[0], size[1]))
    bbox = annotation.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox):
        x, y, w, h = (float(v) for v in bbox)
        return "box", box_polygon(x, y, x + w, y + h)
    raise DataError(f"{where}: has neither a segmentation nor a bbox [x, y, width, height]", path)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
