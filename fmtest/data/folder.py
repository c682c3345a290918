"""Datasets described by a labels.csv: the layout of the private IndustrialSAT data, open to any folder.

```
<folder>/labels.csv        image,label,mask,split[,defect_type]
<folder>/images/...        8- or 16-bit greyscale PNG or TIFF (any image read_image decodes)
<folder>/masks/...         white (above 127 of 255) = defect, same size as the image
```

labels.csv is UTF-8 text. Paths in it are relative to the folder and may not leave it (`..`);
absolute paths need `allow_absolute_paths = true`. `label` is OK or NOK, `split` is train, test or
reference; exactly one row is the reference (defect-free), and training rows must be OK because
pipelines fit on defect-free images only. With `masks = true` (the default) every NOK test row
needs a mask, and a mask that is empty is an error (or, with `empty_nok_masks = "exclude"`, the
image is left out of IoU and counted); `mask_threshold` sets the binarisation level (see
`fmtest.data.io.binarise_mask`); `masks = false` makes the dataset labels-only (classification).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from fmtest.data.base import Dataset
from fmtest.data.io import read_image, read_mask
from fmtest.data.options import check_mask_options, dataset_folder
from fmtest.data.sample import LABELS, NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import DataError

SPLITS = ("train", "test", "reference")


@dataclass(frozen=True)
class Row:
    """One checked line of labels.csv."""

    line: int
    image: Path
    label: str
    mask: Path | None
    split: str
    id: str
    defect_type: str | None = None  # optional column `defect_type`: per-type breakdowns of the case


def read_labels(folder: Path, masks: bool, dataset: str, allow_absolute_paths: bool = False) -> list[Row]:
    """Read and check labels.csv; every problem names the file and its line."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise DataError("labels.csv not found", path)
    with io.StringIO(_utf8_text(path), newline="") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        columns = [c.strip() for c in reader.fieldnames or []]
        required = [c for c in ("image", "label", "mask", "split") if masks or c != "mask"]
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"missing column(s) {', '.join(missing)} (expected image,label,mask,split)", f"{path}:1")
        reader.fieldnames = columns
        rows, seen = [], {}
        for record in reader:
            if None in record:
                raise DataError("more values than the header has columns", f"{path}:{reader.line_num}")
            if not any((v or "").strip() for v in record.values()):
                continue
            row = _check_row(record, reader.line_num, folder, masks, dataset, allow_absolute_paths,
                             f"{path}:{reader.line_num}")
            if row.id in seen:
                raise DataError(f"image {row.id} is listed twice (first on line {seen[row.id]})",
                                f"{path}:{row.line}")
            seen[row.id] = row.line
            rows.append(row)
    references = [r for r in rows if r.split == "reference"]
    if not references:
        raise DataError("no row has split 'reference'; exactly one defect-free reference image is needed", path)
    if len(references) > 1:
        raise DataError(f"a second reference row (the first is on line {references[0].line}); exactly one is allowed",
                        f"{path}:{references[1].line}")
    return rows


def _utf8_text(path: Path) -> str:
    """The file's text; not UTF-8 is one error naming the line and the byte (a BOM, as spreadsheets write, is fine)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"labels.csv is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} ({e.reason}); "
                        "save it as UTF-8 (in a spreadsheet: CSV UTF-8)", f"{path}:{line}") from None


def _inside(folder: Path, value: str, column: str, dataset: str, allow_absolute: bool, where: str) -> Path:
    """The file a labels.csv path names, which must lie in the dataset folder unless absolute paths are allowed."""
    if PurePosixPath(value.replace("\\", "/")).is_absolute() or PureWindowsPath(value).anchor:
        if not allow_absolute:
            raise DataError(f"{column} path {value!r} is absolute; paths in labels.csv are relative to the dataset "
                            f"folder (set allow_absolute_paths = true in [datasets.{dataset}] to allow absolute ones)",
                            where)
        return Path(value)
    if ".." in PurePosixPath(value.replace("\\", "/")).parts:
        raise DataError(f"{column} path {value!r} leaves the dataset folder through '..'; paths in labels.csv must "
                        "stay inside it", where)
    return folder / value


def _check_row(record: Mapping[str, str | None], line: int, folder: Path, masks: bool, dataset: str,
               allow_absolute: bool, where: str) -> Row:
    def value(column: str) -> str:
        return (record.get(column) or "").strip()

    image, label, split, mask = value("image"), value("label").upper(), value("split").lower(), value("mask")
    if not image:
        raise DataError("the image column is empty", where)
    if label not in LABELS:
        raise DataError(f"unknown label {value('label')!r} (expected OK or NOK)", where)
    if split not in SPLITS:
        raise DataError(f"unknown split {value('split')!r} (expected train, test or reference)", where)
    if split != "test" and label != OK:
        raise DataError(f"a {split} image must be OK (defect-free), got {label}", where)
    image_path = _inside(folder, image, "image", dataset, allow_absolute, where)
    if not image_path.is_file():
        raise DataError(f"image file {image_path} not found", where)
    mask_path = None
    if masks and mask:
        mask_path = _inside(folder, mask, "mask", dataset, allow_absolute, where)
        if not mask_path.is_file():
            raise DataError(f"mask file {mask_path} not found", where)
    if masks and label == NOK and mask_path is None:
        raise DataError(f"NOK image {image} has no mask; add one or set masks = false in [datasets.{dataset}]",
                        where)
    return Row(line=line, image=image_path, label=label, mask=mask_path, split=split,
               id=str(PurePosixPath(image.replace("\\", "/"))), defect_type=value("defect_type") or None)


@dataclass(frozen=True)
class IndustrialSATOptions:
    masks: bool = True
    mask_threshold: int | None = None  # 8-bit level a defect pixel is above; None: 127, refusing non-two-level masks
    empty_nok_masks: str = "error"  # or "exclude": leave NOK images with empty masks out of IoU, counted
    allow_absolute_paths: bool = False


@dataclass(frozen=True)
class FolderOptions(IndustrialSATOptions):
    path: str | None = None  # the dataset folder; default <data root>/folder


class FolderDataset(Dataset):
    name = "folder"
    options_type = FolderOptions

    def __init__(self, folder: Path, options: IndustrialSATOptions = IndustrialSATOptions()):
        check_mask_options(self.name, options.mask_threshold, options.empty_nok_masks)
        self.folder = folder
        self.options = options
        self.has_masks = options.masks
        rows = read_labels(folder, options.masks, self.name, options.allow_absolute_paths)
        super().__init__(train=SampleSet([self._ref(r) for r in rows if r.split == "train"]),
                         test=SampleSet([self._ref(r) for r in rows if r.split == "test"]))
        self._reference = next(self._ref(r) for r in rows if r.split == "reference")

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> FolderDataset:
        opts = cls.read_options(options)
        if opts.path is not None:
            folder = Path(opts.path).expanduser()
            if not folder.is_dir():
                raise DataError(f"dataset folder for {cls.name} not found", folder)
        else:
            folder = dataset_folder(root, cls.name, cls.name)
        return cls(folder, opts)

    @property
    def reference(self) -> Sample:
        return self._reference.get()

    @property
    def folders(self) -> tuple[Path, ...]:
        return (self.folder,)

    def _ref(self, row: Row) -> SampleRef:
        options = self.options

        def load() -> Sample:
            image = read_image(row.image)
            mask = None
            if options.masks:
                mask = (read_mask(row.mask, image.shape, options.mask_threshold) if row.mask
                        else np.zeros(image.shape[:2], bool))
                if row.label == OK and mask.any():
                    raise DataError(f"the mask of OK image {row.id} (labels.csv line {row.line}) is not empty",
                                    row.mask)
                if row.label == NOK:
                    mask = self.checked_defect_mask(mask, row.id, row.mask, options.empty_nok_masks)
            return Sample(id=row.id, image=image, label=row.label, mask=mask, source=str(row.image),
                          meta={"split": row.split, "line": row.line,
                                **({"defect_type": row.defect_type} if row.defect_type else {}),
                                **({"mask_file": str(row.mask)} if row.mask else {})})

        return SampleRef(id=row.id, label=row.label, load=load)


class IndustrialSAT(FolderDataset):
    """The study's private SAT images, expected at `<data root>/industrialsat`."""

    name = "industrialsat"
    options_type = IndustrialSATOptions

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> IndustrialSAT:
        return cls(dataset_folder(root, cls.name, cls.name), cls.read_options(options))
