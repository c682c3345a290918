"""MVTec AD layout: ids, labels, masks by stem, per-category references, and every error path."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from fakes import make_mvtec
from fmtest.data import open_dataset
from fmtest.data.io import read_mask
from fmtest.errors import ConfigError, DataError

CATS = {"categories": ["carpet", "grid"]}


@pytest.fixture
def root(tmp_path):
    make_mvtec(tmp_path)
    return tmp_path


def test_layout_ids_labels_and_counts(root):
    ds = open_dataset("mvtec", root, CATS)
    assert len(ds.train) == 6 and len(ds.test) == 8 and ds.test.n_defective == 4
    assert "carpet/test/good/000" in ds.test.ids
    assert "grid/test/hole/000" in ds.test.ids and "grid/test/thread/001" in ds.test.ids
    assert ds.train.ids[:3] == ["carpet/train/good/000", "carpet/train/good/001", "carpet/train/good/002"]
    for ref in ds.test.refs:
        assert ref.label == ("OK" if "/good/" in ref.id else "NOK")


def test_colour_and_greyscale_categories(root):
    ds = open_dataset("mvtec", root, CATS)
    by_id = {s.id: s for s in ds.test}
    assert by_id["carpet/test/good/000"].image.shape == (64, 64, 3)
    assert by_id["grid/test/good/000"].image.shape == (64, 64)


def test_masks_are_matched_by_stem(root):
    ds = open_dataset("mvtec", root, CATS)
    for sample in ds.test:
        category, _, defect, stem = sample.id.split("/")
        assert sample.meta == {"category": category, "defect_type": defect, "split": "test"}
        if defect == "good":
            assert sample.mask.shape == (64, 64) and not sample.mask.any()
        else:
            expected = read_mask(root / "mvtec" / category / "ground_truth" / defect / f"{stem}_mask.png", (64, 64))
            np.testing.assert_array_equal(sample.mask, expected)
            assert sample.mask.any()
            assert sample.image[sample.mask].mean() < 0.05  # the fake paints its defect dark


def test_references_are_per_category(root):
    ds = open_dataset("mvtec", root, {"categories": ["grid", "carpet"]})
    assert ds.reference.id == "grid/train/good/000"
    carpet = next(s for s in ds.test if s.id.startswith("carpet/"))
    assert ds.reference_for(carpet).id == "carpet/train/good/000"
    assert ds.reference_for(carpet).image.ndim == 3


def test_seeded_subset(root):
    sub = open_dataset("mvtec", root, {**CATS, "n_good": 2, "n_defective": 3, "seed": 4})
    assert len(sub.test) == 5 and sub.test.n_defective == 3
    assert sub.test.ids == open_dataset("mvtec", root, {**CATS, "n_good": 2, "n_defective": 3, "seed": 4}).test.ids
    seeds = {tuple(open_dataset("mvtec", root, {**CATS, "n_good": 2, "seed": s}).test.ids) for s in range(6)}
    assert len(seeds) > 1


def test_missing_category_names_its_folder(root):
    with pytest.raises(DataError, match=re.escape(str(root / "mvtec" / "leather")) + ": .*'leather'.*not found"):
        open_dataset("mvtec", root, {})


def test_missing_mask_names_the_expected_path(root):
    expected = root / "mvtec" / "grid" / "ground_truth" / "hole" / "000_mask.png"
    expected.unlink()
    with pytest.raises(DataError, match=re.escape(str(expected)) + r": mask of defective image .*000\.png not found"):
        open_dataset("mvtec", root, CATS)


def test_mask_of_the_wrong_size(root):
    mask = root / "mvtec" / "carpet" / "ground_truth" / "hole" / "000_mask.png"
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(mask)
    ds = open_dataset("mvtec", root, CATS)
    index = ds.test.ids.index("carpet/test/hole/000")
    with pytest.raises(DataError, match=re.escape(str(mask)) + ": mask is 20x10 but its image is 64x64"):
        ds.test[index]


def test_corrupt_image_is_named_when_loaded(root):
    image = root / "mvtec" / "carpet" / "test" / "good" / "001.png"
    image.write_bytes(b"\x89PNG broken")
    ds = open_dataset("mvtec", root, CATS)
    with pytest.raises(DataError, match=re.escape(str(image)) + ": cannot decode"):
        ds.test[ds.test.ids.index("carpet/test/good/001")]


def test_missing_train_folder(root):
    folder = root / "mvtec" / "grid" / "train" / "good"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    with pytest.raises(DataError, match=re.escape(str(folder)) + ": .*not found"):
        open_dataset("mvtec", root, CATS)


def test_root_and_options(tmp_path, root):
    with pytest.raises(ConfigError, match="needs a data root"):
        open_dataset("mvtec", None, CATS)
    with pytest.raises(DataError, match="dataset folder for mvtec not found"):
        open_dataset("mvtec", tmp_path / "elsewhere", CATS)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) category"):
        open_dataset("mvtec", root, {"category": "grid"})
    with pytest.raises(ConfigError, match="must name at least one"):
        open_dataset("mvtec", root, {"categories": []})


def test_an_empty_ground_truth_mask_is_an_error_or_excluded_and_counted(root):
    mask_path = root / "mvtec" / "grid" / "ground_truth" / "hole" / "000_mask.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask_path)
    ds = open_dataset("mvtec", root, CATS)
    index = ds.test.ids.index("grid/test/hole/000")
    with pytest.raises(DataError, match=re.escape(f"{mask_path}: defective (NOK) image grid/test/hole/000 has an "
                                                  "empty mask")):
        ds.test[index]
    ds = open_dataset("mvtec", root, {**CATS, "empty_nok_masks": "exclude"})
    assert ds.test[index].mask is None and ds.excluded_from_iou == ["grid/test/hole/000"]


def test_anti_aliased_ground_truth_thresholds_at_127(root):
    mask_path = root / "mvtec" / "carpet" / "ground_truth" / "hole" / "000_mask.png"
    stored = np.asarray(Image.open(mask_path)) > 0
    soft = np.where(stored, 250, 2).astype(np.uint8)
    soft[np.roll(stored, 1, axis=0) & ~stored] = 100  # a grey anti-aliased rim outside the defect
    Image.fromarray(soft).save(mask_path)
    ds = open_dataset("mvtec", root, CATS)
    np.testing.assert_array_equal(ds.test[ds.test.ids.index("carpet/test/hole/000")].mask, stored)
