"""VisA (split CSV, label-map masks) and MVTec AD 2 (test_public, validation) in their published layouts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fakes import data_root_fixture, make_mvtec_ad2, make_visa
from PIL import Image

from fmtest.data import known_datasets, open_dataset
from fmtest.errors import ConfigError, DataError

VISA = {"categories": ["candle", "pcb1"]}
AD2 = {"categories": ["can", "vial"]}


def test_both_are_built_in_datasets():
    assert {"visa", "mvtec_ad2"} <= set(known_datasets())


# --------------------------------------------------------------------------- VisA


visa = data_root_fixture(make_visa, "visa")


def test_visa_split_csv_gives_train_and_test_per_category(visa):
    ds = open_dataset("visa", visa, VISA)
    assert ds.train.ids == ["candle/train/normal/0000", "candle/train/normal/0001", "candle/train/normal/0002",
                            "pcb1/train/normal/0000", "pcb1/train/normal/0001", "pcb1/train/normal/0002"]
    assert ds.test.ids == ["candle/test/normal/0003", "candle/test/normal/0004", "pcb1/test/normal/0003",
                           "pcb1/test/normal/0004", "candle/test/anomaly/000", "candle/test/anomaly/001",
                           "pcb1/test/anomaly/000", "pcb1/test/anomaly/001"]
    assert ds.test.labels == ["OK"] * 4 + ["NOK"] * 4
    groups = ds.groups()
    assert [g.name for g in groups] == ["candle", "pcb1"]
    assert groups[1].load_reference().id == "pcb1/train/normal/0000" and len(groups[1].test) == 4


def test_visa_masks_are_label_maps_every_non_zero_value_is_defect(visa):
    ds = open_dataset("visa", visa, VISA)
    sample = ds.test[ds.test.ids.index("candle/test/anomaly/001")]  # its defect is stored as the value 2
    stored = np.asarray(Image.open(visa / "visa" / "candle" / "Data" / "Masks" / "Anomaly" / "001.png"))
    assert set(np.unique(stored)) == {0, 2}
    np.testing.assert_array_equal(sample.mask, stored != 0)
    assert sample.meta == {"category": "candle", "defect_type": "anomaly", "split": "test",
                           "mask_file": str(visa / "visa" / "candle" / "Data" / "Masks" / "Anomaly" / "001.png")}
    good = ds.test[0]
    assert good.label == "OK" and good.mask.shape == (48, 48) and not good.mask.any()


def test_visa_subsets_are_seeded_and_stratified(visa):
    ds = open_dataset("visa", visa, {**VISA, "n_defective": 2, "n_good": 2, "seed": 1})
    assert sorted(i.split("/")[0] for i in ds.test.ids) == ["candle", "candle", "pcb1", "pcb1"]
    assert ds.test.n_defective == 2


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace("object,split,label,image,mask", "object,split,label,image"), r"1cls\.csv:1: missing column"),
    (lambda t: t.replace("candle,test,anomaly", "candle,test,broken", 1), r"1cls\.csv:7: unknown label 'broken'"),
    (lambda t: t.replace("candle,train,normal,candle/Data/Images/Normal/0000.JPG", "candle,train,anomaly,"
                         "candle/Data/Images/Normal/0000.JPG", 1), r"1cls\.csv:2: a train image must be normal"),
    (lambda t: t.replace("Normal/0001.JPG", "Normal/9999.JPG", 1), r"1cls\.csv:3: image file .*9999\.JPG not found"),
    (lambda t: t.replace("candle/Data/Images/Normal/0001.JPG", "../0001.JPG", 1),
     r"1cls\.csv:3: image path '\.\./0001\.JPG' must be relative to the VisA folder"),
    (lambda t: t.replace("candle/Data/Masks/Anomaly/000.png", "", 1), r"1cls\.csv:7: anomalous image .* has no mask"),
    (lambda t: "\n".join(line for line in t.splitlines() if not line.startswith("pcb1")) + "\n",
     r"1cls\.csv: no rows for category pcb1"),
])
def test_visa_bad_split_csv_names_the_line(visa, edit, match):
    csv_path = visa / "visa" / "split_csv" / "1cls.csv"
    csv_path.write_text(edit(csv_path.read_text()))
    with pytest.raises(DataError, match=match):
        open_dataset("visa", visa, VISA)


def test_visa_without_its_split_file_or_data_root(visa, tmp_path):
    (visa / "visa" / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DataError, match=r"split_csv/1cls\.csv: VisA split file not found"):
        open_dataset("visa", visa, VISA)
    with pytest.raises(ConfigError, match="needs a data root"):
        open_dataset("visa", None, VISA)
    with pytest.raises(ConfigError, match=r"\[datasets\.visa\]: unknown option\(s\) mask_threshold"):
        open_dataset("visa", visa, {"mask_threshold": 10})


# --------------------------------------------------------------------------- MVTec AD 2


ad2 = data_root_fixture(make_mvtec_ad2, "ad2")


def test_mvtec_ad2_scores_test_public_and_fits_on_train_and_validation(ad2):
    private = ad2 / "mvtec_ad2" / "can" / "test_private"
    private.mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(private / "000_regular.png")
    ds = open_dataset("mvtec_ad2", ad2, AD2)
    can = ds.groups()[0]
    assert can.train.ids == ["can/train/good/000_regular", "can/train/good/001_regular", "can/train/good/002_regular",
                             "can/validation/good/000_regular", "can/validation/good/001_regular"]
    assert can.test.ids == ["can/test_public/good/000_regular", "can/test_public/good/001_regular",
                            "can/test_public/bad/000_regular", "can/test_public/bad/001_regular"]
    assert not any("test_private" in i for i in ds.test.ids + ds.train.ids)
    assert can.load_reference().id == "can/train/good/000_regular"
    assert len(ds.test) == 8 and ds.test.n_defective == 4


def test_mvtec_ad2_masks_are_matched_by_stem(ad2):
    ds = open_dataset("mvtec_ad2", ad2, AD2)
    sample = ds.test[ds.test.ids.index("vial/test_public/bad/001_regular")]
    stored = np.asarray(Image.open(ad2 / "mvtec_ad2" / "vial" / "test_public" / "ground_truth" / "bad" /
                                   "001_regular_mask.png")) > 127
    assert stored.any()
    np.testing.assert_array_equal(sample.mask, stored)


def test_mvtec_ad2_missing_mask_and_category_are_named(ad2):
    mask = ad2 / "mvtec_ad2" / "can" / "test_public" / "ground_truth" / "bad" / "000_regular_mask.png"
    mask.unlink()
    with pytest.raises(DataError, match=re.escape(str(mask)) + ": mask of defective image .*000_regular.png not found"):
        open_dataset("mvtec_ad2", ad2, AD2)
    with pytest.raises(DataError, match=r"mvtec_ad2/fabric: MVTec AD 2 category 'fabric': folder not found"):
        open_dataset("mvtec_ad2", ad2, {"categories": ["fabric"]})
