"""Small dataset trees on disk, in the real layouts, for tests that need files to read.

Each builder writes real PNG/JPEG/TIFF files under `root` and returns the dataset folder
(`root/mvtec`, `root/mvtec_ad2`, `root/visa`, `root/oxford-iiit-pet`, `root/industrialsat`), so `open_dataset(name, root)` finds it.
Contents are seeded, so two calls write identical files.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from fmtest.data import open_dataset
from fmtest.data.satsim import DEFECT_TYPES, Nuisance, render_part
from fmtest.errors import ConfigError, DataError

TESTS = Path(__file__).resolve().parent  # where the test helpers live (on sys.path for every test)
REPO = TESTS.parent
SUITES = REPO / "suites"
FILES = TESTS / "files"  # recorded files the tests read (upstream key layouts, an older results file)
MVTEC_DEFECTS = ("hole", "thread")
GREYSCALE_CATEGORIES = ("grid",)


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _texture(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """A smooth random texture in [0.2, 0.8]: blockwise noise upsampled, like a fabric at low resolution."""
    coarse = rng.uniform(0.2, 0.8, (size // 8 + 1, size // 8 + 1, channels))
    fine = np.kron(coarse, np.ones((8, 8, 1)))[:size, :size]
    return np.clip(fine + rng.normal(0, 0.03, fine.shape), 0, 1)


def _save_uint8(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.squeeze(image) * 255).astype(np.uint8)).save(path)


def _save_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _box_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    h, w = rng.integers(size // 8, size // 4, 2)
    y, x = rng.integers(2, size - max(h, w) - 2, 2)
    mask[y : y + h, x : x + w] = True
    return mask


def make_mvtec(root: Path, categories=("carpet", "grid"), n_train: int = 3, n_good: int = 2, n_defective: int = 2,
               size: int = 64) -> Path:
    """MVTec AD layout; grid is greyscale, other categories RGB; defects alternate hole/thread, a dark box."""
    folder = Path(root) / "mvtec"
    for category in categories:
        channels = 1 if category in GREYSCALE_CATEGORIES else 3
        for split_dir, count in (("train/good", n_train), ("test/good", n_good)):
            for i in range(count):
                image = _texture(_rng(category, split_dir, i), size, channels)
                _save_uint8(folder / category / split_dir / f"{i:03d}.png", image)
        for i in range(n_defective):
            defect = MVTEC_DEFECTS[i % len(MVTEC_DEFECTS)]
            rng = _rng(category, defect, i)
            image, mask = _texture(rng, size, channels), _box_mask(rng, size)
            image[mask] = 0.02
            _save_uint8(folder / category / "test" / defect / f"{i:03d}.png", image)
            _save_mask(folder / category / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return folder


def make_mvtec_ad2(root: Path, categories=("can", "vial"), n_train: int = 3, n_validation: int = 2, n_good: int = 2,
                   n_defective: int = 2, size: int = 48) -> Path:
    """MVTec AD 2 layout: train/good, validation/good, test_public/{good,bad}, test_public/ground_truth/bad/*_mask.png."""
    folder = Path(root) / "mvtec_ad2"
    for category in categories:
        base = folder / category
        for split_dir, count in (("train/good", n_train), ("validation/good", n_validation),
                                 ("test_public/good", n_good)):
            for i in range(count):
                _save_uint8(base / split_dir / f"{i:03d}_regular.png", _texture(_rng(category, split_dir, i), size, 3))
        for i in range(n_defective):
            rng = _rng(category, "bad", i)
            image, mask = _texture(rng, size, 3), _box_mask(rng, size)
            image[mask] = 0.02
            _save_uint8(base / "test_public" / "bad" / f"{i:03d}_regular.png", image)
            _save_mask(base / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png", mask)
    return folder


def make_visa(root: Path, categories=("candle", "pcb1"), n_train: int = 3, n_good: int = 2, n_defective: int = 2,
              size: int = 48) -> Path:
    """VisA layout: JPEG images under <category>/Data/Images/{Normal,Anomaly}, label-map masks (defect i + 1)
    under <category>/Data/Masks/Anomaly, and split_csv/1cls.csv listing them (object,split,label,image,mask)."""
    folder = Path(root) / "visa"
    lines = ["object,split,label,image,mask"]
    for category in categories:
        images = folder / category / "Data" / "Images"
        for split, i in [("train", i) for i in range(n_train)] + [("test", n_train + i) for i in range(n_good)]:
            path = images / "Normal" / f"{i:04d}.JPG"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = np.round(_texture(_rng(category, "normal", i), size, 3) * 255).astype(np.uint8)
            Image.fromarray(image).save(path, quality=95)
            lines.append(f"{category},{split},normal,{path.relative_to(folder).as_posix()},")
        for i in range(n_defective):
            rng = _rng(category, "anomaly", i)
            image, mask = _texture(rng, size, 3), _box_mask(rng, size)
            image[mask] = 0.02
            path = images / "Anomaly" / f"{i:03d}.JPG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path, quality=95)
            mask_path = folder / category / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * (i + 1)).save(mask_path)  # VisA: one small integer per defect
            lines.append(f"{category},test,anomaly,{path.relative_to(folder).as_posix()},"
                         f"{mask_path.relative_to(folder).as_posix()}")
    (folder / "split_csv").mkdir(parents=True, exist_ok=True)
    (folder / "split_csv" / "1cls.csv").write_text("\n".join(lines) + "\n")
    return folder


def make_oxford_pets(root: Path, n_cats: int = 4, n_dogs: int = 6, size: int = 64) -> Path:
    """Oxford-IIIT-Pet layout: JPEG images with an elliptic 'pet', trimaps (1 pet, 2 background, 3 border)."""
    folder = Path(root) / "oxford-iiit-pet"
    lines = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog"]
    pets = [(f"Abyssinian_{i + 1}", 1, 1, 1) for i in range(n_cats)]
    pets += [(f"beagle_{i + 1}", 11, 2, 4) for i in range(n_dogs)]
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    for name, class_id, species, breed_id in pets:
        rng = _rng("pet", name)
        cy, cx = rng.uniform(0.4, 0.6, 2) * size
        ry, rx = rng.uniform(0.18, 0.3, 2) * size
        dist = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
        trimap = np.full((size, size), 2, np.uint8)
        trimap[dist < 1.1] = 3
        trimap[dist < 0.9] = 1
        image = _texture(rng, size, 3) * 0.5
        image[dist < 1.0] = (0.7, 0.45, 0.2) if species == 1 else (0.55, 0.55, 0.6)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / "images" / f"{name}.jpg", quality=95)
        (folder / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
        Image.fromarray(trimap).save(folder / "annotations" / "trimaps" / f"{name}.png")
        lines.append(f"{name} {class_id} {species} {breed_id}")
    (folder / "annotations" / "list.txt").write_text("\n".join(lines) + "\n")
    return folder


def make_industrialsat(root: Path, n_good: int = 4, n_defective: int = 3, size: int = 64, bit_depth: int = 16,
                       fmt: str = "png", n_train: int = 3) -> Path:
    """industrialsat layout with satsim renders: one reference, `n_train` train rows, then the test rows.

    `bit_depth` 8 or 16, `fmt` "png" or "tif". OK test rows have an empty mask column.
    """
    if bit_depth not in (8, 16) or fmt not in ("png", "tif", "tiff"):
        raise ValueError(f"bit_depth must be 8 or 16 and fmt png or tif, got {bit_depth}, {fmt!r}")
    folder = Path(root) / "industrialsat"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rows = ["image,label,mask,split"]
    plan = [("reference", "ref_000", None)]
    plan += [("train", f"train_{i:03d}", None) for i in range(n_train)]
    plan += [("test", f"good_{i:03d}", None) for i in range(n_good)]
    plan += [("test", f"{DEFECT_TYPES[i % 3]}_{i:03d}", DEFECT_TYPES[i % 3]) for i in range(n_defective)]
    for index, (split, stem, defect) in enumerate(plan):
        nuisance = Nuisance(shift=0, rotation=0) if split == "reference" else Nuisance()
        part = render_part((7, index), defect, size, nuisance)
        image_name = f"images/{stem}.{fmt}"
        _save_scaled(folder / image_name, part.image, bit_depth)
        mask_name = ""
        if defect is not None:
            mask_name = f"masks/{stem}_mask.png"
            _save_mask(folder / mask_name, part.mask)
        rows.append(f"{image_name},{'NOK' if defect else 'OK'},{mask_name},{split}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def data_root_fixture(make: Callable[[Path], Path], name: str):
    """A pytest fixture `name`: the data root (the test's tmp_path) with `make`'s dataset tree built under it."""
    @pytest.fixture(name=name)
    def data_root(tmp_path: Path) -> Path:
        make(tmp_path)
        return tmp_path

    return data_root


def check_root_and_unknown_option(name: str, root: Path, options: dict, unknown: dict) -> None:
    """What every dataset on disk refuses, each with its own message: no data root, a root without the
    dataset's folder, and an option it does not know (`unknown`: one such option)."""
    with pytest.raises(ConfigError, match="needs a data root"):
        open_dataset(name, None, options)
    with pytest.raises(DataError, match=f"dataset folder for {name} not found"):
        open_dataset(name, root / "elsewhere", options)
    with pytest.raises(ConfigError, match=rf"unknown option\(s\) {next(iter(unknown))}"):
        open_dataset(name, root, unknown)


@contextmanager
def unwritable_folder(path: Path, read_only: bool) -> Iterator[Path]:
    """`path` as a folder nothing can be written into: a read-only folder, or else a file where the folder
    should be. The read-only folder is made writable again on leaving, so that pytest can remove it."""
    if read_only:
        path.mkdir()
        path.chmod(0o555)
    else:
        path.write_text("a file where the folder should be")
    try:
        yield path
    finally:
        if path.is_dir():
            path.chmod(0o755)


def _save_scaled(path: Path, image: np.ndarray, bit_depth: int) -> None:
    top = 65535 if bit_depth == 16 else 255
    pixels = np.round(image * top).astype(np.uint16 if bit_depth == 16 else np.uint8)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)
