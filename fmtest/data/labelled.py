"""Ground truth from labelling tools: what the COCO, CVAT and Label Studio datasets share.

A format module (`coco.py`, `cvat.py`, `label_studio.py`) reads its export into an `Export`: the
images it lists, each with its annotations in pixel coordinates, and the class names it knows.
`LabelExportDataset` turns that into a dataset:

- An image is NOK when it has at least one annotation of a defect class (`defect_classes`, default
  every class); an image without one is OK. Its mask is the union of its defect annotations, drawn
  at the image's size (polygons, boxes and ellipses with pycocotools, as COCO tools draw them; the
  tools' own run-length masks decoded as the tools write them).
- Images are found in the `images` folder by their path as the export names it, its tail, or its
  file name (exports carry their own prefixes: CVAT's task paths, Label Studio's `/data/upload/<project>/`
  with its 8-hex-digit upload prefix `1a2b3c4d-part.png`, which is tried without the prefix too).
  The sample id is the file's path inside `images`.
- Splits: `annotations` is one export, or a table of one per split (`{train = "...", test = "..."}`,
  training images all defect-free). With one export a seeded `train_fraction` of the OK images
  (default 0.5) is the training split, the rest and every NOK image the test split. The reference is
  the file `reference` names (taken out of both splits), else the first training image.
- Paths are relative to the data root (or absolute).

Every problem is one line naming the export file and the image or annotation: an image that is not in
the folder, or two entries naming one file; a class in `defect_classes` the export does not have; a
defect drawn as a line or points (no area); a polygon wholly outside its image; a run-length mask
whose size is not its image's; an image file whose size is not the one the export declares.
"""

from __future__ import annotations

import os
import re
from abc import abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from fmtest.data.base import Dataset
from fmtest.data.io import IMAGE_SUFFIXES, read_image
from fmtest.data.options import EMPTY_NOK_MASKS, seeded_subset
from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError
from fmtest.util.extensions import unknown_name
from fmtest.util.extras import require_sdks

DEFAULT_TRAIN_FRACTION = 0.5
SPLITS = ("train", "test")
LABEL_STUDIO_UPLOAD = re.compile(r"^[0-9a-f]{8}-(.+)$")  # Label Studio names an upload "<8 hex digits>-<name>"


class Geometry(Protocol):
    """An annotation's area, in pixels of its image's declared size."""

    def problem(self, height: int, width: int) -> str | None:
        """What makes it unusable on a `height` x `width` image (wrong size, wholly outside), or None."""

    def rasterise(self, height: int, width: int) -> np.ndarray:
        """The annotated pixels as bool HxW."""


@dataclass(frozen=True)
class Polygons:
    """One or more polygons, unioned: flat x, y pixel coordinates (pixel i spans [i, i + 1)).
    Boxes, rotated boxes and ellipses are drawn as polygons too."""

    rings: tuple[tuple[float, ...], ...]

    def problem(self, height: int, width: int) -> str | None:
        for ring in self.rings:
            if len(ring) < 6 or len(ring) % 2:
                return f"a polygon needs at least 3 points (x, y pairs), got {len(ring)} numbers"
            if not np.isfinite(ring).all():
                return "a polygon has a coordinate that is not a finite number"
        inside = [self._overlaps(ring, height, width) for ring in self.rings]
        if not any(inside):
            x, y = np.asarray(self.rings[0][0::2]), np.asarray(self.rings[0][1::2])
            return (f"lies wholly outside its {width}x{height} image (x {x.min():g}..{x.max():g}, "
                    f"y {y.min():g}..{y.max():g})")
        return None

    @staticmethod
    def _overlaps(ring: tuple[float, ...], height: int, width: int) -> bool:
        x, y = np.asarray(ring[0::2]), np.asarray(ring[1::2])
        return bool(min(x.max(), width) > max(x.min(), 0) and min(y.max(), height) > max(y.min(), 0))

    def rasterise(self, height: int, width: int) -> np.ndarray:
        from pycocotools import mask as coco_mask

        rles = coco_mask.frPyObjects([list(map(float, ring)) for ring in self.rings], height, width)
        return decode_coco_rle(coco_mask.merge(rles))


def decode_coco_rle(rle: dict) -> np.ndarray:
    """pycocotools' decode as bool HxW, without the DeprecationWarning its numpy 2 array conversion raises
    on every call (pycocotools 2.0.x)."""
    import warnings

    from pycocotools import mask as coco_mask

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy keyword",
                                DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def points_polygon(coordinates: Iterable[float]) -> Polygons:
    """One polygon from its flat x, y pixel coordinates (x1, y1, x2, y2, ...)."""
    return Polygons((tuple(coordinates),))


def box_polygon(x0: float, y0: float, x1: float, y1: float, rotation: float = 0.0,
                centre: tuple[float, float] | None = None) -> Polygons:
    """A box as a polygon, turned `rotation` degrees clockwise (image y points down) about `centre`
    (default its own centre)."""
    corners = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)
    if rotation:
        cx, cy = centre if centre is not None else ((x0 + x1) / 2, (y0 + y1) / 2)
        corners = _rotated(corners, rotation, cx, cy)
    return Polygons((tuple(corners.ravel()),))


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, rotation: float = 0.0, n: int = 72) -> Polygons:
    """An ellipse as a polygon of `n` points, turned `rotation` degrees clockwise about its centre."""
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    points = np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], axis=1)
    return Polygons((tuple(_rotated(points, rotation, cx, cy).ravel()),))


def _rotated(points: np.ndarray, degrees: float, cx: float, cy: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    dx, dy = points[:, 0] - cx, points[:, 1] - cy
    return np.stack([cx + dx * np.cos(t) - dy * np.sin(t), cy + dx * np.sin(t) + dy * np.cos(t)], axis=1)


@dataclass(frozen=True)
class Annotation:
    """One annotation of an exported image. `geometry` None: it marks no area (a polyline, points, a key point)."""

    name: str  # how messages name it: "annotation 17", "polygon 2", "result 'xYz' of annotation 4"
    labels: tuple[str, ...]  # its class names (a Label Studio region may carry several)
    kind: str  # polygon, box, mask, ellipse, brush, polyline, ...
    geometry: Geometry | None


@dataclass(frozen=True)
class ExportedImage:
    """An image as the export lists it, with its annotations; `width`/`height` as the export declares
    them (None when it declares none, e.g. a Label Studio task without regions)."""

    name: str  # the image reference as exported (file name, task path, URL)
    where: str  # how messages name the entry: "image id 3", "image 'a.png'", "task 12"
    width: int | None
    height: int | None
    annotations: tuple[Annotation, ...]


@dataclass(frozen=True)
class Export:
    """A labelling tool's export, read: its images, the class names it knows, entries left out (unlabelled)."""

    path: Path
    images: tuple[ExportedImage, ...]
    classes: tuple[str, ...]
    left_out: int = 0


@dataclass(frozen=True)
class LabelExportOptions:
    annotations: str | dict[str, str] | None = None  # the export file, or {train = "...", test = "..."}
    images: str | None = None  # the folder holding the images
    defect_classes: tuple[str, ...] = ()  # class names counted as defects; empty: every class
    train_fraction: float | None = None  # one export: share of its OK images trained on (default 0.5)
    seed: int = 0
    reference: str | None = None  # the reference image's file; default the first training image
    empty_nok_masks: str = "error"  # or "exclude": leave NOK images whose defects draw no pixel out of IoU

    def __post_init__(self) -> None:
        """Checks naming no table: `LabelExportDataset.read_options` adds the table, whatever the dataset's name."""
        if self.annotations is None or self.images is None:
            missing = [k for k in ("annotations", "images") if getattr(self, k) is None]
            raise ConfigError(f"option(s) {', '.join(missing)} missing: name the export file (annotations) and "
                              "the folder of its images (images)")
        if isinstance(self.annotations, dict):
            if set(self.annotations) - set(SPLITS) or "test" not in self.annotations:
                raise ConfigError(f"option annotations: a table of one export per split takes train and test "
                                  f"(test required), got {', '.join(sorted(self.annotations))}")
            if self.train_fraction is not None:
                raise ConfigError("option train_fraction splits one export; with one export per split the train "
                                  "export is the training split")
        if self.train_fraction is not None and not 0.0 <= self.train_fraction < 1.0:
            raise ConfigError(f"option train_fraction must lie in [0, 1), got {self.train_fraction}")
        if self.seed < 0:
            raise ConfigError(f"option seed must be >= 0, got {self.seed}")
        if self.empty_nok_masks not in EMPTY_NOK_MASKS:
            raise ConfigError(f"option empty_nok_masks must be one of {', '.join(map(repr, EMPTY_NOK_MASKS))}, "
                              f"got {self.empty_nok_masks!r}")

    def export_files(self) -> dict[str, str]:
        """Split -> export file; "all" for one export split by `train_fraction`."""
        return dict(self.annotations) if isinstance(self.annotations, dict) else {"all": self.annotations}


@dataclass(frozen=True)
class LabelledImage:
    """An exported image found on disk, its defect annotations checked against its declared size."""

    id: str  # its path inside the images folder
    path: Path
    entry: ExportedImage
    export: Path
    split: str  # the export's split: train, test, or "all" (one export)
    defects: tuple[Annotation, ...]
    classes: tuple[str, ...]  # its defect classes


class ImageFolder:
    """The files of the images folder, found by the path an export names: the whole path, its tail, or
    its file name anywhere in the folder (which must then be unique)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.by_path: dict[str, Path] = {}
        self.by_name: dict[str, list[str]] = {}
        for directory, _, files in sorted(os.walk(folder)):
            for name in sorted(files):
                path = Path(directory) / name
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                relative = path.relative_to(folder).as_posix()
                self.by_path[relative] = path
                self.by_name.setdefault(name, []).append(relative)

    def find(self, reference: str, where: str, export: Path) -> str:
        """The id (path inside the folder) of the file an export's image reference names."""
        parts = _reference_parts(reference)
        names = [parts]
        upload = LABEL_STUDIO_UPLOAD.match(parts[-1]) if parts else None
        if upload:
            names.append([*parts[:-1], upload.group(1)])
        for candidate in names:
            for start in range(len(candidate)):
                tail = "/".join(candidate[start:])
                if tail in self.by_path:
                    return tail
        for candidate in names:
            matches = self.by_name.get(candidate[-1], []) if candidate else []
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise DataError(f"{where}: image {reference!r} matches {len(matches)} files in {self.folder}: "
                                f"{', '.join(matches)}; give each image a distinct name or keep the export's folders",
                                export)
        raise DataError(f"{where}: image {reference!r} not found in {self.folder}", export)


def _reference_parts(reference: str) -> list[str]:
    """The path components of an exported image reference, with `\\` read as `/`. A URL (`scheme://`, or
    Label Studio's `/data/...`) gives its unquoted path, or its `?d=` parameter (Label Studio local files);
    a bucket or host name is no folder."""
    path = reference
    if "://" in reference or reference.startswith("/data/"):
        split = urlsplit(reference)
        query = parse_qs(split.query)
        path = unquote(query["d"][0] if "d" in query else split.path)
    return [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", "", ".", "..")]


class LabelExportDataset(Dataset):
    """A dataset read from a labelling tool's export (see the module docstring); subclasses read one format."""

    options_type = LabelExportOptions
    has_masks = True
    format_name: ClassVar[str]  # the tool's export format, for messages

    def __init__(self, root: Path | None, options: LabelExportOptions):
        require_sdks(("pycocotools",), f"dataset {self.name}")
        self.options = options
        self.images_folder = _data_path(root, options.images, "images", self.name)
        if not self.images_folder.is_dir():
            raise DataError(f"images folder of dataset {self.name} not found", self.images_folder)
        folder = ImageFolder(self.images_folder)
        exports = {split: self.read_export(_data_path(root, file, "annotations", self.name))
                   for split, file in options.export_files().items()}
        self.left_out = sum(e.left_out for e in exports.values())
        defect_classes = self._checked_defect_classes(exports)
        images = self._found(folder, exports, defect_classes)
        reference_id = folder.find(options.reference, "option reference", self.images_folder) \
            if options.reference is not None else None
        self._reference = self._reference_ref(reference_id, images) if reference_id is not None else None
        pool = [i for i in images if i.id != reference_id]
        train, test = self._splits(pool)
        super().__init__(train=SampleSet([self._ref(i, "train") for i in train]),
                         test=SampleSet([self._ref(i, "test") for i in test]))

    @classmethod
    @abstractmethod
    def read_export(cls, path: Path) -> Export:
        """Read and check the export file; every problem names the file and the entry."""

    @property
    def folders(self) -> tuple[Path, ...]:
        return (self.images_folder,)

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> LabelExportDataset:
        return cls(root, cls.read_options(options))

    @classmethod
    def read_options(cls, options: Mapping[str, object]) -> LabelExportOptions:
        try:
            return super().read_options(options)
        except ConfigError as e:
            if e.path is not None:
                raise
            raise ConfigError(str(e), f"[datasets.{cls.name}]") from None

    @property
    def reference(self) -> Sample | None:
        return self._reference.get() if self._reference is not None else super().reference

    def describe(self) -> str:
        left_out = f", {self.left_out} unlabelled entries left out" if self.left_out else ""
        return super().describe() + left_out

    def _checked_defect_classes(self, exports: dict[str, Export]) -> frozenset[str] | None:
        """The defect classes asked for, each known to some export; None: every class is a defect."""
        known = sorted({c for e in exports.values() for c in e.classes})
        for name in self.options.defect_classes:
            if name not in known:
                files = ", ".join(str(e.path) for e in exports.values())
                raise ConfigError(f"option defect_classes: {unknown_name(f'class in {files}', name, known)}",
                                  f"[datasets.{self.name}]")
        return frozenset(self.options.defect_classes) if self.options.defect_classes else None

    def _found(self, folder: ImageFolder, exports: dict[str, Export],
               defect_classes: frozenset[str] | None) -> list[LabelledImage]:
        """Every exported image found in the folder, its defect annotations checked; sorted by id."""
        images: dict[str, LabelledImage] = {}
        for split, export in exports.items():
            for entry in export.images:
                image_id = folder.find(entry.name, entry.where, export.path)
                if image_id in images:
                    first = images[image_id]
                    raise DataError(f"{entry.where} and {first.entry.where}"
                                    f"{'' if first.export == export.path else f' of {first.export}'} both name "
                                    f"image {image_id}: an image may be listed once", export.path)
                defects = tuple(a for a in entry.annotations
                                if defect_classes is None or defect_classes.intersection(a.labels))
                for annotation in defects:
                    self._check(annotation, entry, export.path)
                classes = sorted({c for a in defects for c in a.labels
                                  if defect_classes is None or c in defect_classes})
                image = LabelledImage(image_id, folder.by_path[image_id], entry, export.path, split, defects,
                                      tuple(classes))
                if split == "train" and defects:
                    raise DataError(f"{entry.where} is in the train export but has defect "
                                    f"{defects[0].name} ({', '.join(defects[0].labels)}): training images must be "
                                    "defect-free", export.path)
                images[image_id] = image
        return [images[k] for k in sorted(images)]

    def _check(self, annotation: Annotation, entry: ExportedImage, export: Path) -> None:
        where = f"{entry.where}, {annotation.name} ({', '.join(annotation.labels)})"
        if annotation.geometry is None:
            raise DataError(f"{where}: a {annotation.kind} marks no area, so it cannot be part of a defect mask; "
                            "draw the defect as a polygon, box or mask, or leave its class out of defect_classes",
                            export)
        if entry.width is None or entry.height is None:
            raise DataError(f"{where}: the export does not say the image's size", export)
        problem = annotation.geometry.problem(entry.height, entry.width)
        if problem is not None:
            raise DataError(f"{where}: {problem}", export)

    def _splits(self, images: list[LabelledImage]) -> tuple[list[LabelledImage], list[LabelledImage]]:
        if "all" not in self.options.export_files():
            return [i for i in images if i.split == "train"], [i for i in images if i.split == "test"]
        good = [i for i in images if not i.defects]
        fraction = DEFAULT_TRAIN_FRACTION if self.options.train_fraction is None else self.options.train_fraction
        n_train = round(len(good) * fraction)
        chosen = {i.id for i in seeded_subset(good, n_train, np.random.default_rng(self.options.seed),
                                              "OK images", self.images_folder)} if n_train else set()
        return [i for i in good if i.id in chosen], [i for i in images if i.id not in chosen]

    def _reference_ref(self, reference_id: str, images: list[LabelledImage]) -> SampleRef:
        exported = next((i for i in images if i.id == reference_id), None)
        if exported is not None and exported.defects:
            raise DataError(f"option reference names {reference_id}, which {exported.entry.where} marks defective "
                            f"({exported.defects[0].name}); the reference must be defect-free", exported.export)
        path = self.images_folder / reference_id
        return SampleRef(id=reference_id, label=OK, load=lambda: Sample(
            id=reference_id, image=read_image(path), label=OK, source=str(path), meta={"split": "reference"}))

    def _ref(self, image: LabelledImage, split: str) -> SampleRef:
        label = NOK if image.defects else OK
        meta = {"split": split, "annotation_file": str(image.export)}
        if image.defects:
            meta["defect_type"] = "+".join(image.classes)

        def load() -> Sample:
            pixels = read_image(image.path)
            height, width = pixels.shape[:2]
            entry = image.entry
            if entry.width is not None and (entry.width, entry.height) != (width, height):
                raise DataError(f"{entry.where} declares the image {entry.width}x{entry.height} but {image.path} is "
                                f"{width}x{height}: its annotations would land in the wrong place", image.export)
            mask = np.zeros((height, width), bool)
            for annotation in image.defects:
                mask |= annotation.geometry.rasterise(height, width)
            if label == NOK:
                mask = self.checked_defect_mask(mask, image.id, image.export, self.options.empty_nok_masks)
            return Sample(id=image.id, image=pixels, label=label, mask=mask, meta=meta, source=str(image.path))

        return SampleRef(id=image.id, label=label, load=load)


def _data_path(root: Path | None, value: str, option: str, dataset: str) -> Path:
    """A path option: absolute, or relative to the data root."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    if root is None:
        raise ConfigError(f"option {option} = {value!r} is relative to the data root, and none is given: pass "
                          "--fm-data-root, set FMTEST_DATA, or give an absolute path", f"[datasets.{dataset}]")
    return Path(root) / path


def read_json_export(path: Path, format_name: str) -> object:
    """The parsed JSON of an export file; not found, not UTF-8 or not JSON is one line naming it."""
    import json

    if not path.is_file():
        raise DataError(f"{format_name} export not found", path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e.reason} at byte {e.start}", path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not JSON: {e.msg} at line {e.lineno}, column {e.colno}", f"{path}:{e.lineno}") from None
