"""labels.csv datasets (industrialsat, folder): splits, bit depths, masks, and errors naming file and line."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from fakes import make_industrialsat
from fmtest.data import open_dataset
from fmtest.data.io import read_mask
from fmtest.errors import ConfigError, DataError


@pytest.fixture
def folder(tmp_path):
    return make_industrialsat(tmp_path)


def rewrite(folder, old, new):
    path = folder / "labels.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def raises_at(path, line, message):
    return pytest.raises(DataError, match=re.escape(f"{path}:{line}: {message}"))


def test_splits_labels_and_masks(folder):
    ds = open_dataset("industrialsat", folder.parent, {})
    assert ds.has_masks
    assert ds.reference.id == "images/ref_000.png" and ds.reference.label == "OK"
    assert ds.train.ids == [f"images/train_{i:03d}.png" for i in range(3)]
    assert len(ds.test) == 7 and ds.test.n_defective == 3
    for sample in ds.test:
        assert sample.image.shape == (64, 64) and sample.meta["split"] == "test"
        if sample.label == "NOK":
            stem = sample.id.removeprefix("images/").removesuffix(".png")
            np.testing.assert_array_equal(sample.mask, read_mask(folder / "masks" / f"{stem}_mask.png", (64, 64)))
            assert sample.mask.any()
        else:
            assert not sample.mask.any()


@pytest.mark.parametrize("bit_depth,fmt", [(16, "png"), (8, "png"), (16, "tif"), (8, "tif")])
def test_bit_depths_and_formats_keep_values(tmp_path, bit_depth, fmt):
    folder = make_industrialsat(tmp_path, n_good=1, n_defective=1, n_train=1, bit_depth=bit_depth, fmt=fmt)
    sample = open_dataset("industrialsat", tmp_path, {}).test[0]
    top = 65535 if bit_depth == 16 else 255
    path = folder / sample.id
    stored = tifffile.imread(path) if fmt == "tif" else np.array(Image.open(path))
    assert stored.dtype == (np.uint16 if bit_depth == 16 else np.uint8)
    np.testing.assert_allclose(sample.image, stored / top, atol=1e-7)
    assert (len(np.unique(sample.image)) > 256) == (bit_depth == 16)


def test_folder_dataset_by_path_or_root(tmp_path, folder):
    by_path = open_dataset("folder", None, {"path": str(folder)})
    assert by_path.name == "folder" and len(by_path.test) == 7
    folder.rename(tmp_path / "folder")
    assert len(open_dataset("folder", tmp_path, {}).test) == 7
    with pytest.raises(DataError, match="dataset folder for folder not found"):
        open_dataset("folder", None, {"path": str(tmp_path / "missing")})


def test_labels_only(folder):
    rewrite(folder, "masks/void_000_mask.png", "")
    message = "NOK image images/void_000.png has no mask; add one or set masks = false"
    with raises_at(folder / "labels.csv", 10, message):
        open_dataset("industrialsat", folder.parent, {})
    ds = open_dataset("industrialsat", folder.parent, {"masks": False})
    assert ds.has_masks is False
    assert all(s.mask is None for s in ds.test)
    assert ds.test.n_defective == 3


@pytest.mark.parametrize("old,new,line,message", [
    ("images/good_000.png,OK", "images/good_000.png,BAD", 6, "unknown label 'BAD' (expected OK or NOK)"),
    ("images/good_000.png,OK,,test", "images/good_000.png,OK,,val", 6, "unknown split 'val'"),
    ("images/good_000.png", "images/gone.png", 6, "image file"),
    ("masks/crack_001_mask.png", "masks/gone.png", 11, "mask file"),
    ("images/train_000.png,OK", "images/train_000.png,NOK", 3, "a train image must be OK"),
    ("images/train_001.png,OK,,train", "images/train_001.png,OK,,reference", 4,
     "a second reference row (the first is on line 2)"),
    ("images/good_001.png,", "images/good_000.png,", 7, "image images/good_000.png is listed twice (first on line 6)"),
    ("images/good_001.png,OK,,test", "images/good_001.png,OK,,test,extra", 7, "more values than the header"),
])
def test_row_errors_name_file_and_line(folder, old, new, line, message):
    path = rewrite(folder, old, new)
    with raises_at(path, line, message):
        open_dataset("industrialsat", folder.parent, {})


def test_missing_column_and_missing_reference(folder):
    path = rewrite(folder, "image,label,mask,split", "image,label,split_")
    with raises_at(path, 1, "missing column(s) mask, split"):
        open_dataset("industrialsat", folder.parent, {})
    rewrite(folder, "image,label,split_", "image,label,mask,split")
    rewrite(folder, "images/ref_000.png,OK,,reference", "images/ref_000.png,OK,,train")
    with pytest.raises(DataError, match=re.escape(f"{path}: no row has split 'reference'")):
        open_dataset("industrialsat", folder.parent, {})


def test_mask_column_is_optional_when_labels_only(folder):
    path = folder / "labels.csv"
    lines = [",".join(c for i, c in enumerate(line.split(",")) if i != 2) for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    assert open_dataset("industrialsat", folder.parent, {"masks": False}).test.n_defective == 3


def test_missing_labels_file(folder):
    (folder / "labels.csv").unlink()
    with pytest.raises(DataError, match=re.escape(str(folder / "labels.csv")) + ": labels.csv not found"):
        open_dataset("industrialsat", folder.parent, {})


def test_ok_image_with_a_non_empty_mask(folder):
    rewrite(folder, "images/good_000.png,OK,,test", "images/good_000.png,OK,masks/void_000_mask.png,test")
    ds = open_dataset("industrialsat", folder.parent, {})
    with pytest.raises(DataError, match=r"void_000_mask\.png: the mask of OK image images/good_000\.png"):
        ds.test[0]


def test_tolerant_spelling_and_blank_lines(folder):
    path = rewrite(folder, "images/good_000.png,OK,,test", "images/good_000.png, ok ,, Test\n,,,")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # BOM, as spreadsheets write it
    ds = open_dataset("industrialsat", folder.parent, {})
    assert len(ds.test) == 7 and ds.test.labels[0] == "OK"


def test_root_and_options(folder):
    with pytest.raises(ConfigError, match="needs a data root"):
        open_dataset("industrialsat", None, {})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) path"):
        open_dataset("industrialsat", folder.parent, {"path": str(folder)})
    with pytest.raises(ConfigError, match="option masks must be true or false"):
        open_dataset("folder", None, {"path": str(folder), "masks": "no"})
