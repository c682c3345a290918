"""Oxford-IIIT-Pet: cats are NOK with the pet as mask, dogs OK, trimap border ignored, seeded subsets."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fakes import check_root_and_unknown_option, data_root_fixture, make_oxford_pets
from PIL import Image

from fmtest.data import open_dataset
from fmtest.data.io import read_pixels
from fmtest.errors import ConfigError, DataError

SUBSET = {"n_good": 3, "n_defective": 2}


root = data_root_fixture(make_oxford_pets, "root")


def trimap_of(root, name):
    return read_pixels(root / "oxford-iiit-pet" / "annotations" / "trimaps" / f"{name}.png")


def test_labels_masks_and_ignore_follow_the_trimap(root):
    ds = open_dataset("oxford_pets", root, SUBSET)
    assert len(ds.test) == 5 and ds.test.n_defective == 2
    for sample in ds.test:
        species, name = sample.id.split("/")
        trimap = trimap_of(root, name)
        assert sample.image.shape == (64, 64, 3)
        np.testing.assert_array_equal(sample.ignore, trimap == 3)
        assert sample.ignore.any()
        if species == "cat":
            assert sample.label == "NOK" and sample.meta["breed"] == "Abyssinian"
            np.testing.assert_array_equal(sample.mask, trimap == 1)
            assert sample.mask.any()
        else:
            assert sample.label == "OK" and sample.meta["species"] == "dog"
            assert not sample.mask.any()


def test_subset_is_seeded_and_train_is_the_other_dogs(root):
    ds = open_dataset("oxford_pets", root, SUBSET)
    again = open_dataset("oxford_pets", root, SUBSET)
    assert ds.test.ids == again.test.ids
    dogs = {f"dog/beagle_{i}" for i in range(1, 7)}
    test_dogs = {i for i in ds.test.ids if i.startswith("dog/")}
    assert set(ds.train.ids) == dogs - test_dogs and len(ds.train) == 3
    assert set(ds.train.labels) == {"OK"}
    seeds = {tuple(open_dataset("oxford_pets", root, {**SUBSET, "seed": s}).test.ids) for s in range(6)}
    assert len(seeds) > 1


def test_zero_means_all(root):
    ds = open_dataset("oxford_pets", root, {"n_good": 0, "n_defective": 0})
    assert len(ds.test) == 10 and ds.test.n_defective == 4 and len(ds.train) == 0


def test_study_defaults_need_enough_images(root):
    with pytest.raises(DataError, match=r"list\.txt: asked for 140 dogs but only 6"):
        open_dataset("oxford_pets", root, {})


def edit_list(root, old, new):
    path = root / "oxford-iiit-pet" / "annotations" / "list.txt"
    path.write_text(path.read_text().replace(old, new))
    return path


def test_bad_species_names_file_and_line(root):
    path = edit_list(root, "beagle_2 11 2 4", "beagle_2 11 3 4")
    with pytest.raises(DataError, match=re.escape(f"{path}:9: SPECIES must be 1 (cat) or 2 (dog), got '3'")):
        open_dataset("oxford_pets", root, SUBSET)


def test_wrong_column_count_names_file_and_line(root):
    path = edit_list(root, "Abyssinian_2 1 1 1", "Abyssinian_2 1 1")
    with pytest.raises(DataError, match=re.escape(f"{path}:5: expected 4 columns")):
        open_dataset("oxford_pets", root, SUBSET)


def test_missing_list_and_missing_image(root):
    image = root / "oxford-iiit-pet" / "images" / "Abyssinian_1.jpg"
    image.unlink()
    with pytest.raises(DataError, match=re.escape(str(image)) + r": file for Abyssinian_1 \(list.txt line 4\)"):
        open_dataset("oxford_pets", root, {"n_good": 0, "n_defective": 0})
    listing = root / "oxford-iiit-pet" / "annotations" / "list.txt"
    listing.unlink()
    with pytest.raises(DataError, match=re.escape(str(listing)) + ": annotation list not found"):
        open_dataset("oxford_pets", root, SUBSET)


def test_bad_trimap_value_and_size(root):
    trimap = root / "oxford-iiit-pet" / "annotations" / "trimaps" / "Abyssinian_1.png"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(trimap)
    ds = open_dataset("oxford_pets", root, {"n_good": 0, "n_defective": 0})
    index = ds.test.ids.index("cat/Abyssinian_1")
    with pytest.raises(DataError, match=re.escape(str(trimap)) + r": trimap values must be 1, 2 or 3, found \[7\]"):
        ds.test[index]
    Image.fromarray(np.full((32, 64), 2, np.uint8)).save(trimap)
    with pytest.raises(DataError, match=re.escape(str(trimap)) + ": mask is 64x32 but its image is 64x64"):
        ds.test[index]


def test_root_and_options(root):
    check_root_and_unknown_option("oxford_pets", root, SUBSET, {"n_cats": 2})
    with pytest.raises(ConfigError, match="n_good must be >= 0"):
        open_dataset("oxford_pets", root, {"n_good": -1})


def test_a_cat_without_pet_pixels_is_an_error_or_excluded_and_counted(root):
    trimap = root / "oxford-iiit-pet" / "annotations" / "trimaps" / "Abyssinian_1.png"
    Image.fromarray(np.full((64, 64), 2, np.uint8)).save(trimap)
    ds = open_dataset("oxford_pets", root, {"n_good": 0, "n_defective": 0})
    index = ds.test.ids.index("cat/Abyssinian_1")
    with pytest.raises(DataError, match=re.escape(f"{trimap}: defective (NOK) image cat/Abyssinian_1 has an empty mask")):
        ds.test[index]
    ds = open_dataset("oxford_pets", root, {"n_good": 0, "n_defective": 0, "empty_nok_masks": "exclude"})
    assert ds.test[index].mask is None and ds.excluded_from_iou == ["cat/Abyssinian_1"]


@pytest.mark.parametrize("border, in_mask", [("pet", True), ("background", False)])
def test_trimap_border_can_count_as_the_cat_or_as_background(root, border, in_mask):
    ds = open_dataset("oxford_pets", root, {**SUBSET, "trimap_border": border})
    for sample in ds.test:
        trimap = trimap_of(root, sample.id.split("/")[1])
        assert sample.ignore is None  # every pixel is scored
        if sample.label == "NOK":
            expected = (trimap == 1) | (trimap == 3) if in_mask else trimap == 1
            np.testing.assert_array_equal(sample.mask, expected)
        else:
            assert not sample.mask.any()
    with pytest.raises(ConfigError, match=r"\[datasets.oxford_pets\].*trimap_border must be one of ignore, pet, "
                                          r"background, got 'fg'"):
        open_dataset("oxford_pets", root, {**SUBSET, "trimap_border": "fg"})
