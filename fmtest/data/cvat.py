"""CVAT for images 1.1 XML (`annotations.xml` of a task, job or project export) as a labelled dataset
(see `fmtest.data.labelled`):

```toml
[datasets.parts]
uses = "cvat"
annotations = "parts/annotations.xml"
images = "parts/images"
```

Areas: `<box>` (xtl, ytl, xbr, ybr, optional rotation in degrees about its centre), `<polygon>`
(points "x1,y1;x2,y2;..."), `<ellipse>` (cx, cy, rx, ry, rotation) and `<mask>` (CVAT's own RLE:
`rle` "n1, n2, ..." alternating runs of background and mask, row by row over the box `left`, `top`,
`width`, `height`, starting with background). A `<polyline>`, `<points>`, `<skeleton>` or `<cuboid>`
of a defect class has no area and is refused. Image-level `<tag>`s are not read: an image's label
comes from its shapes. The classes are the labels of `<meta>` and those the shapes use. A CVAT for
video export (`<track>`) is refused: export the task as CVAT for images 1.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from fmtest.data.labelled import (
    Annotation,
    Export,
    ExportedImage,
    LabelExportDataset,
    Polygons,
    box_polygon,
    ellipse_polygon,
    points_polygon,
)
from fmtest.errors import DataError

AREA_SHAPES = ("box", "polygon", "ellipse", "mask")
LINE_SHAPES = ("polyline", "points", "skeleton", "cuboid")  # no area: refused when of a defect class


@dataclass(frozen=True)
class CvatMask:
    """CVAT's mask: runs alternating background and mask, row-major over the box at (left, top), from background."""

    runs: tuple[int, ...]
    left: int
    top: int
    width: int
    height: int

    def problem(self, height: int, width: int) -> str | None:
        if self.width < 1 or self.height < 1 or self.left < 0 or self.top < 0 \
                or self.left + self.width > width or self.top + self.height > height:
            return (f"its box (left {self.left}, top {self.top}, {self.width}x{self.height}) does not fit in the "
                    f"{width}x{height} image")
        if any(r < 0 for r in self.runs) or sum(self.runs) != self.width * self.height:
            return (f"its RLE runs cover {sum(self.runs)} pixels but its {self.width}x{self.height} box has "
                    f"{self.width * self.height}")
        return None

    def rasterise(self, height: int, width: int) -> np.ndarray:
        values = np.repeat(np.arange(len(self.runs)) % 2 == 1, self.runs)
        mask = np.zeros((height, width), bool)
        mask[self.top:self.top + self.height, self.left:self.left + self.width] = values.reshape(self.height,
                                                                                               self.width)
        return mask


class CvatDataset(LabelExportDataset):
    name = "cvat"
    format_name = "CVAT for images 1.1"

    @classmethod
    def read_export(cls, path: Path) -> Export:
        if not path.is_file():
            raise DataError(f"{cls.format_name} export not found", path)
        try:
            root = ElementTree.parse(path).getroot()
        except ElementTree.ParseError as e:
            raise DataError(f"not XML: {e}", f"{path}:{e.position[0]}") from None
        if root.tag != "annotations":
            raise DataError(f"not a CVAT export: the root element is <{root.tag}>, not <annotations>", path)
        if root.find("track") is not None:
            raise DataError("a CVAT for video export (<track> elements); export the task as CVAT for images 1.1",
                            path)
        classes = [name.text.strip() for name in root.iterfind("meta//labels/label/name") if name.text]
        images = []
        for element in root.iterfind("image"):
            name = element.get("name")
            if not name:
                raise DataError(f"<image id=\"{element.get('id', '?')}\"> has no name", path)
            where = f"image {name!r}"
            width, height = (_integer(element, key, where, path) for key in ("width", "height"))
            annotations = []
            for index, shape in enumerate(s for s in element if s.tag in AREA_SHAPES + LINE_SHAPES):
                label = shape.get("label")
                if not label:
                    raise DataError(f"{where}: <{shape.tag}> #{index + 1} has no label", path)
                classes.append(label)
                shape_where = f"{shape.tag} #{index + 1}"
                annotations.append(Annotation(shape_where, (label,), shape.tag,
                                              _geometry(shape, f"{where}, {shape_where}", path)))
            images.append(ExportedImage(name, where, width, height, tuple(annotations)))
        return Export(path, tuple(images), tuple(dict.fromkeys(classes)))


def _geometry(shape: ElementTree.Element, where: str, path: Path) -> Polygons | CvatMask | None:
    """The area a shape covers, in pixels; None for shapes without one (polylines, points)."""
    if shape.tag in LINE_SHAPES:
        return None
    if shape.tag == "polygon":
        try:
            points = [float(v) for pair in (shape.get("points") or "").split(";") for v in pair.split(",")]
        except ValueError:
            raise DataError(f"{where}: points must be \"x1,y1;x2,y2;...\", got {shape.get('points')!r}",
                            path) from None
        return points_polygon(points)
    if shape.tag == "mask":
        try:
            runs = tuple(int(v) for v in (shape.get("rle") or "").split(","))
        except ValueError:
            raise DataError(f"{where}: rle must be integers separated by \", \"", path) from None
        left, top, width, height = (_integer(shape, key, where, path, minimum=0)
                                    for key in ("left", "top", "width", "height"))
        return CvatMask(runs, left, top, width, height)
    rotation = _number(shape, "rotation", where, path, default=0.0)
    if shape.tag == "box":
        x0, y0, x1, y1 = (_number(shape, key, where, path) for key in ("xtl", "ytl", "xbr", "ybr"))
        return box_polygon(x0, y0, x1, y1, rotation)
    cx, cy, rx, ry = (_number(shape, key, where, path) for key in ("cx", "cy", "rx", "ry"))
    return ellipse_polygon(cx, cy, rx, ry, rotation)


def _number(element: ElementTree.Element, key: str, where: str, path: Path, default: float | None = None) -> float:
    value = element.get(key)
    if value is None and default is not None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key} must be a number, got {value!r}", path) from None
    if not np.isfinite(number):
        raise DataError(f"{where}: {key} must be a finite number, got {value!r}", path)
    return number


def _integer(element: ElementTree.Element, key: str, where: str, path: Path, minimum: int = 1) -> int:
    value = element.get(key)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise DataError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}", path)
    return number
