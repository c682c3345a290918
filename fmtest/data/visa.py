"""VisA (Visual Anomaly) in its published layout, split by its own `split_csv/1cls.csv`.

```
<root>/visa/split_csv/1cls.csv               object,split,label,image,mask
<root>/visa/<category>/Data/Images/{Normal,Anomaly}/*.JPG
<root>/visa/<category>/Data/Masks/Anomaly/*.png
```

The one-class split is the benchmark's own: `train` rows are normal images a pipeline may fit on,
`test` rows normal (OK) and anomalous (NOK) images to score. Paths in the CSV are relative to the
VisA folder and may not leave it. VisA's masks are label maps (each defect its own small integer),
so a pixel is defect when its value is not 0. Every category is fitted and aligned on its own, with
the seeded, stratified subsets `n_good` / `n_defective` of `fmtest.data.categories`. A row that is
malformed, or names a file that does not exist, is one error naming the CSV line.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from fmtest.data.categories import (
    CategoryDataset,
    CategorySplit,
    check_category_options,
)
from fmtest.data.io import check_size, read_pixels
from fmtest.data.sample import NOK, OK
from fmtest.errors import DataError

VISA_CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2",
                   "pcb3", "pcb4", "pipe_fryum")
SPLIT_CSV = PurePosixPath("split_csv/1cls.csv")
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": OK, "anomaly": NOK}


@dataclass(frozen=True)
class VisAOptions:
    categories: tuple[str, ...] = VISA_CATEGORIES
    n_good: int | None = None  # stratified seeded subset of the OK test images scored; None or 0: all
    n_defective: int | None = None  # stratified seeded subset of the anomalous test images scored; None or 0: all
    seed: int = 0
    empty_nok_masks: str = "error"  # or "exclude": leave anomalous images with empty masks out of IoU, counted

    def __post_init__(self) -> None:
        check_category_options("visa", self)


@dataclass(frozen=True)
class SplitRow:
    """One checked line of the split CSV."""

    where: str  # "<csv>:<line>"
    category: str
    split: str  # train or test
    label: str  # normal or anomaly
    image: Path
    mask: Path | None


class VisA(CategoryDataset):
    name = "visa"
    title = "VisA"
    options_type = VisAOptions

    def __init__(self, folder: Path, options: VisAOptions = VisAOptions()):
        self._rows = read_split_csv(folder, options.categories)
        super().__init__(folder, options)

    def category_split(self, category: str) -> CategorySplit:
        refs = {(row.split, row.label): [] for row in self._rows[category]}
        for row in self._rows[category]:
            refs[(row.split, row.label)].append(
                self.sample_ref(category, row.split, row.label, LABELS[row.label], row.image, row.mask))
        train = refs.get(("train", "normal"), [])
        if not train:
            raise DataError(f"VisA category {category!r}: no train rows", self.folder / SPLIT_CSV)
        return CategorySplit(train, refs.get(("test", "normal"), []), refs.get(("test", "anomaly"), []))

    def read_defect_mask(self, path: Path, shape: tuple[int, ...]) -> np.ndarray:
        """A label map: every non-zero pixel is defect, in any channel."""
        pixels = read_pixels(path)
        mask = pixels.any(axis=2) if pixels.ndim == 3 else pixels != 0
        check_size(mask, shape, path)
        return mask


def read_split_csv(folder: Path, categories: tuple[str, ...]) -> dict[str, list[SplitRow]]:
    """The rows of `split_csv/1cls.csv` for `categories`, checked; every problem names the line."""
    path = folder / SPLIT_CSV
    if not path.is_file():
        raise DataError("VisA split file not found (the benchmark's one-class split)", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e.reason} at byte {e.start}", path) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)} (expected {','.join(COLUMNS)})", f"{path}:1")
    rows: dict[str, list[SplitRow]] = {c: [] for c in categories}
    seen: dict[tuple[str, str, str, str], int] = {}
    for record in reader:
        where = f"{path}:{reader.line_num}"
        category = (record["object"] or "").strip()
        if category not in rows:
            continue
        row = _checked_row(folder, record, category, where)
        key = (category, row.split, row.label, row.image.stem)
        if key in seen:
            raise DataError(f"image {row.image.name} of {category} is listed twice (first on line {seen[key]})", where)
        seen[key] = reader.line_num
        rows[category].append(row)
    absent = [c for c in categories if not rows[c]]
    if absent:
        raise DataError(f"no rows for categor{'y' if len(absent) == 1 else 'ies'} {', '.join(absent)}", path)
    return rows


def _checked_row(folder: Path, record: dict[str, str | None], category: str, where: str) -> SplitRow:
    def value(column: str) -> str:
        return (record.get(column) or "").strip()

    split, label = value("split"), value("label")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} (expected train or test)", where)
    if label not in LABELS:
        raise DataError(f"unknown label {label!r} (expected normal or anomaly)", where)
    if split == "train" and label != "normal":
        raise DataError("a train image must be normal: pipelines fit on defect-free images only", where)
    image = _inside(folder, value("image"), "image", where)
    mask = _inside(folder, value("mask"), "mask", where) if value("mask") else None
    if label == "anomaly" and mask is None:
        raise DataError(f"anomalous image {value('image')} has no mask", where)
    return SplitRow(where, category, split, label, image, mask)


def _inside(folder: Path, value: str, column: str, where: str) -> Path:
    """An existing file the CSV names, relative to the VisA folder and inside it."""
    relative = PurePosixPath(value.replace("\\", "/"))
    if not value or relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"{column} path {value!r} must be relative to the VisA folder and stay inside it", where)
    path = folder / relative
    if not path.is_file():
        raise DataError(f"{column} file {path} not found", where)
    return path
