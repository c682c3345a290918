"""labels.csv datasets (industrialsat, folder): splits, bit depths, masks, and errors naming file and line."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from fakes import make_industrialsat
from PIL import Image

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


def _test_index(ds, sample_id):
    return ds.test.ids.index(sample_id)


def test_a_mask_with_background_1_is_not_a_full_defect_mask(folder):
    mask_path = folder / "masks" / "void_000_mask.png"
    stored = np.asarray(Image.open(mask_path))
    Image.fromarray(np.where(stored > 0, 255, 1).astype(np.uint8)).save(mask_path)  # background stored as 1
    ds = open_dataset("industrialsat", folder.parent, {})
    sample = ds.test[_test_index(ds, "images/void_000.png")]
    np.testing.assert_array_equal(sample.mask, stored > 0)
    assert 0 < sample.mask.mean() < 0.5


def test_an_empty_mask_on_a_defective_image_is_an_error_naming_it(folder):
    mask_path = folder / "masks" / "void_000_mask.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask_path)
    ds = open_dataset("industrialsat", folder.parent, {})
    with pytest.raises(DataError, match=re.escape(f"{mask_path}: defective (NOK) image images/void_000.png has an "
                                                  "empty mask")):
        ds.test[_test_index(ds, "images/void_000.png")]


def test_empty_nok_masks_exclude_leaves_the_image_out_of_iou_and_counts_it(folder):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / "masks" / "void_000_mask.png")
    ds = open_dataset("industrialsat", folder.parent, {"empty_nok_masks": "exclude"})
    samples = list(ds.test)
    excluded = samples[_test_index(ds, "images/void_000.png")]
    assert excluded.label == "NOK" and excluded.mask is None
    assert all(s.mask is not None for s in samples if s is not excluded)
    assert ds.excluded_from_iou == ["images/void_000.png"]


def test_mask_threshold_is_an_option(folder):
    mask_path = folder / "masks" / "void_000_mask.png"
    stored = np.asarray(Image.open(mask_path)) > 0
    grey = np.where(stored, 100, 0).astype(np.uint8)  # defects drawn in dark grey
    Image.fromarray(grey).save(mask_path)
    ds = open_dataset("industrialsat", folder.parent, {"mask_threshold": 50})
    np.testing.assert_array_equal(ds.test[_test_index(ds, "images/void_000.png")].mask, stored)
    with pytest.raises(ConfigError, match=r"\[datasets.industrialsat\]: option mask_threshold must be an 8-bit level"):
        open_dataset("industrialsat", folder.parent, {"mask_threshold": 255})
    with pytest.raises(ConfigError, match=r"option empty_nok_masks must be one of 'error', 'exclude', got 'skip'"):
        open_dataset("industrialsat", folder.parent, {"empty_nok_masks": "skip"})


@pytest.mark.parametrize("column, value, message", [
    ("image", "../outside.png", "image path '../outside.png' leaves the dataset folder through '..'"),
    ("image", "images/../../outside.png", "image path 'images/../../outside.png' leaves the dataset folder"),
    ("mask", "..\\outside.png", "mask path '..\\\\outside.png' leaves the dataset folder"),
    ("image", "ABSOLUTE", ("is absolute; paths in labels.csv are relative to the dataset folder (set "
                           "allow_absolute_paths = true in [datasets.industrialsat]")),
])
def test_paths_leaving_the_dataset_folder_are_refused(folder, column, value, message):
    outside = folder.parent / "outside.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(outside)
    value = value.replace("ABSOLUTE", str(outside))
    row = "images/void_000.png,NOK,masks/void_000_mask.png,test"
    new = f"{value},NOK,masks/void_000_mask.png,test" if column == "image" else f"images/void_000.png,NOK,{value},test"
    path = rewrite(folder, row, new)
    with pytest.raises(DataError, match=re.escape(f"{path}:10: ") + ".*" + re.escape(message)):
        open_dataset("industrialsat", folder.parent, {})


def test_absolute_paths_only_when_allowed(folder):
    outside = folder.parent / "elsewhere" / "void.png"
    outside.parent.mkdir()
    (folder / "images" / "void_000.png").rename(outside)
    rewrite(folder, "images/void_000.png,NOK", f"{outside},NOK")
    ds = open_dataset("industrialsat", folder.parent, {"allow_absolute_paths": True})
    assert ds.test[_test_index(ds, outside.as_posix())].source == str(outside)


def test_a_labels_file_that_is_not_utf8_is_one_line_naming_file_line_and_byte(folder):
    path = rewrite(folder, "images/good_001.png,OK,,test", "images/good_001.png,OK,,test\nimages/Pr\xfcfling.png,OK,,test")
    path.write_bytes(path.read_text().encode("latin-1"))
    with pytest.raises(DataError) as error:
        open_dataset("industrialsat", folder.parent, {})
    text = str(error.value)
    assert text.startswith(f"{path}:8: labels.csv is not UTF-8 text: byte 0xfc at offset ")
    assert "save it as UTF-8" in text and "\n" not in text
