"""MVTec AD layout: ids, labels, masks by stem, per-category references, and every error path."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fakes import check_root_and_unknown_option, data_root_fixture, make_mvtec
from PIL import Image

from fmtest.data import open_dataset
from fmtest.data.io import read_mask
from fmtest.errors import ConfigError, DataError

CATS = {"categories": ["carpet", "grid"]}


root = data_root_fixture(make_mvtec, "root")


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
        mask_file = {} if defect == "good" else {
            "mask_file": str(root / "mvtec" / category / "ground_truth" / defect / f"{stem}_mask.png")}
        assert sample.meta == {"category": category, "defect_type": defect, "split": "test", **mask_file}
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


def test_root_and_options(root):
    check_root_and_unknown_option("mvtec", root, CATS, {"category": "grid"})
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


# --------------------------------------------------------------------------- subsets

# Per category: train/good images and defective test images in the published MVTec AD.
PUBLISHED_COUNTS = {"carpet": (280, 89), "grid": (264, 57), "leather": (245, 92), "tile": (230, 84), "wood": (247, 60)}


def touch_mvtec(root, counts):
    """The MVTec layout with empty files: enough to plan subsets, which never decode an image."""
    for category, (n_train, n_defective) in counts.items():
        base = root / "mvtec" / category
        for folder in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n_train):
            (base / "train" / "good" / f"{i:03d}.png").touch()
        (base / "test" / "good" / "000.png").touch()
        for i in range(n_defective):
            (base / "test" / "crack" / f"{i:03d}.png").touch()
            (base / "ground_truth" / "crack" / f"{i:03d}_mask.png").touch()


def by_category(ids):
    counts = {}
    for i in ids:
        counts[i.split("/")[0]] = counts.get(i.split("/")[0], 0) + 1
    return counts


def test_study_subset_reproduces_the_studys_counts_category_by_category(tmp_path):
    touch_mvtec(tmp_path, PUBLISHED_COUNTS)
    ds = open_dataset("mvtec", tmp_path, {"subset": "study"})
    ok = [r.id for r in ds.test.refs if r.label == "OK"]
    nok = [r.id for r in ds.test.refs if r.label == "NOK"]
    # 20 % rounded: 56+53+49+46+49 = 253 of 1266 train/good; 18+11+18+17+12 = 76 of 382 defective
    assert by_category(ok) == {"carpet": 56, "grid": 53, "leather": 49, "tile": 46, "wood": 49}
    assert by_category(nok) == {"carpet": 18, "grid": 11, "leather": 18, "tile": 17, "wood": 12}
    assert (len(ok), len(nok)) == (253, 76)
    assert len(ds.train) == 1266 - 253


def test_study_ok_images_come_from_train_good_and_are_never_fitted_on_or_the_reference(tmp_path):
    make_mvtec(tmp_path, categories=("carpet", "grid"), n_train=10, n_good=2, n_defective=6)
    ds = open_dataset("mvtec", tmp_path, {**CATS, "subset": "study", "seed": 1})
    ok = [r.id for r in ds.test.refs if r.label == "OK"]
    assert by_category(ok) == {"carpet": 2, "grid": 2} and ds.test.n_defective == 2  # round(10/5), round(6/5)
    assert all("/train/good/" in i for i in ok) and not any("/test/good/" in i for i in ds.test.ids)
    assert set(ok).isdisjoint(ds.train.ids) and len(ds.train) == 16
    for group in ds.groups():
        assert set(group.test.ids).isdisjoint(group.train.ids)
        assert group.load_reference().id not in ds.test.ids
        assert group.load_reference().id == group.train.ids[0]
    drawn = next(s for s in ds.test if s.label == "OK")
    assert drawn.meta["split"] == "train" and drawn.mask is not None and not drawn.mask.any()
    assert ds.test.ids != open_dataset("mvtec", tmp_path, {**CATS, "subset": "study", "seed": 2}).test.ids


def test_draws_of_a_category_do_not_depend_on_the_other_categories(tmp_path):
    touch_mvtec(tmp_path, {"carpet": (40, 20), "grid": (30, 10)})
    both = open_dataset("mvtec", tmp_path, {**CATS, "subset": "study", "n_defective": 5})
    alone = open_dataset("mvtec", tmp_path, {"categories": ["carpet"], "subset": "study"})
    carpet = [i for i in both.test.ids if i.startswith("carpet/") and "/train/" in i]
    assert carpet == [i for i in alone.test.ids if "/train/" in i]


def test_n_good_and_n_defective_are_stratified_by_category(tmp_path):
    touch_mvtec(tmp_path, {"carpet": (40, 30), "grid": (30, 10)})
    ds = open_dataset("mvtec", tmp_path, {**CATS, "n_defective": 8, "seed": 3})
    assert by_category(r.id for r in ds.test.refs if r.label == "NOK") == {"carpet": 6, "grid": 2}
    study = open_dataset("mvtec", tmp_path, {**CATS, "subset": "study", "n_good": 7, "n_defective": 3})
    # study pools: OK 8 + 6, NOK 6 + 2 -> 7 OK split 4/3, 3 NOK split 2/1 (largest remainder)
    assert by_category(r.id for r in study.test.refs if r.label == "OK") == {"carpet": 4, "grid": 3}
    assert by_category(r.id for r in study.test.refs if r.label == "NOK") == {"carpet": 2, "grid": 1}
    with pytest.raises(DataError, match="asked for 9 defective images but the chosen categories hold 8"):
        open_dataset("mvtec", tmp_path, {**CATS, "subset": "study", "n_defective": 9})


def test_proportional_shares_use_the_largest_remainder():
    from fmtest.data.categories import proportional_shares

    assert proportional_shares(10, [5, 3, 2]) == [5, 3, 2]
    assert proportional_shares(4, [5, 3, 2]) == [2, 1, 1]  # 2.0, 1.2, 0.8
    assert proportional_shares(3, [1, 1, 1, 1]) == [1, 1, 1, 0]  # ties go to the earlier category
    assert sum(proportional_shares(253, [280, 264, 245, 230, 247])) == 253


def test_unknown_subset(root):
    with pytest.raises(ConfigError, match=r"\[datasets.mvtec\].*subset must be one of all, study, got 'paper'"):
        open_dataset("mvtec", root, {**CATS, "subset": "paper"})


# --------------------------------------------------------------------------- a pinned list of images (subset_file)


def test_subset_file_scores_exactly_the_listed_images(tmp_path):
    touch_mvtec(tmp_path, {"carpet": (6, 3), "grid": (5, 2)})
    listing = tmp_path / "mvtec" / "study_list.txt"
    listing.write_text("# the study's images\ncarpet/train/good/001.png\ncarpet/test/crack/002.png\n\n"
                       "grid/test/good/000.png  # a comment\ngrid/train/good/004\ngrid/test/crack/000.png\n")
    ds = open_dataset("mvtec", tmp_path, {"categories": ["carpet", "grid"], "subset_file": "study_list.txt"})
    assert ds.test.ids == ["carpet/train/good/001", "grid/test/good/000", "grid/train/good/004",
                           "carpet/test/crack/002", "grid/test/crack/000"]
    assert ds.test.labels == ["OK", "OK", "OK", "NOK", "NOK"]
    train = set(ds.train.ids)
    assert "carpet/train/good/001" not in train and "grid/train/good/004" not in train and len(train) == 6 + 5 - 2
    absolute = open_dataset("mvtec", tmp_path, {"categories": ["carpet", "grid"], "subset_file": str(listing)})
    assert absolute.test.ids == ds.test.ids


@pytest.mark.parametrize("lines, message", [
    ("carpet/test/crack/009.png\n", r"study_list.txt:1: 'carpet/test/crack/009.png' is not an image of the dataset"),
    ("carpet/train/good/001.png\ncarpet/train/good/001\n", r"study_list.txt:2: .* listed twice \(first on line 1\)"),
    ("carpet/ground_truth/crack/000_mask.png\n", r"study_list.txt:1: .* is not <category>/train/good/<image>"),
    ("wood/test/crack/000.png\n", r"study_list.txt:1: .* of category 'wood', not one of the chosen carpet"),
    ("# nothing\n", r"study_list.txt: subset_file lists no image"),
])
def test_subset_file_errors_name_the_line(tmp_path, lines, message):
    touch_mvtec(tmp_path, {"carpet": (3, 2)})
    (tmp_path / "mvtec" / "study_list.txt").write_text(lines)
    with pytest.raises(DataError, match=message):
        open_dataset("mvtec", tmp_path, {"categories": ["carpet"], "subset_file": "study_list.txt"})


def test_subset_file_and_the_study_reconstruction_exclude_each_other(tmp_path):
    touch_mvtec(tmp_path, {"carpet": (3, 2)})
    with pytest.raises(ConfigError, match=r"subset_file and subset = 'study' both choose the scored images"):
        open_dataset("mvtec", tmp_path, {"categories": ["carpet"], "subset": "study", "subset_file": "x.txt"})
