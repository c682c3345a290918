"""elpv on the real packaged data: label thresholds, seeded subsets, and images matching their files."""

from __future__ import annotations

import numpy as np
import pytest

from fmtest.data import open_dataset
from fmtest.data.elpv import Elpv, ElpvOptions, elpv_labels
from fmtest.data.io import read_image
from fmtest.errors import ConfigError, DataError

# Counts of the elpv-dataset package's labels.csv: probability 0 / 1/3 / 2/3 / 1.
N_CELLS, N_GOOD, N_UNCERTAIN, N_DEFECTIVE = 2624, 1508, 295, 821
N_MONO_GOOD, N_MONO_DEFECTIVE, N_MONO_UNCERTAIN = 588, 369, 117


def everything(**kw) -> Elpv:
    return Elpv(ElpvOptions(n_train=0, n_test_good=0, n_test_defective=0, **kw))


def test_real_label_counts():
    labels = elpv_labels()
    assert len(labels.names) == N_CELLS
    ds = everything()
    assert len(ds.test) == N_GOOD + N_DEFECTIVE
    assert ds.test.n_defective == N_DEFECTIVE
    assert ds.n_left_out == N_UNCERTAIN
    assert f"{N_UNCERTAIN} uncertain cells left out" in ds.describe()


def test_cell_type_filter():
    ds = everything(cell_type="mono")
    assert len(ds.test) - ds.test.n_defective == N_MONO_GOOD
    assert ds.test.n_defective == N_MONO_DEFECTIVE
    assert ds.n_left_out == N_MONO_UNCERTAIN


def test_thresholds_move_the_uncertain_cells():
    ds = everything(ok_max_probability=0.34)
    assert ds.n_left_out == 0 and len(ds.test) - ds.test.n_defective == N_GOOD + N_UNCERTAIN
    strict = everything(nok_min_probability=1.0)
    assert strict.test.n_defective == N_DEFECTIVE - 106  # the 2/3 cells are left out too


def test_default_split_is_seeded_and_disjoint():
    ds = open_dataset("elpv", None, {})
    assert (len(ds.train), len(ds.test), ds.test.n_defective) == (60, 200, 50)
    assert not set(ds.train.ids) & set(ds.test.ids)
    assert set(ds.train.labels) == {"OK"}
    assert ds.test.ids == Elpv().test.ids
    assert ds.test.ids != Elpv(ElpvOptions(seed=1)).test.ids
    assert all(i.startswith("elpv/cell") and i.endswith(".png") for i in ds.test.ids)


def test_all_remaining_good_cells():
    ds = Elpv(ElpvOptions(n_train=100, n_test_good=None, n_test_defective=5))
    assert len(ds.test) - ds.test.n_defective == N_GOOD - 100


def test_sample_matches_its_file_and_label():
    ds = Elpv(ElpvOptions(n_train=1, n_test_good=1, n_test_defective=1))
    assert ds.has_masks is False
    for sample in ds.test:
        assert sample.image.shape == (300, 300) and sample.image.dtype == np.float32
        assert sample.mask is None
        np.testing.assert_array_equal(sample.image, read_image(sample.source))  # names line up with images
        assert (sample.meta["probability"] == 0.0) == (sample.label == "OK")
        assert sample.meta["cell_type"] in ("mono", "poly")


@pytest.mark.parametrize("options,error,match", [
    ({"ok_max_probability": 0.6}, ConfigError, "ok_max_probability < nok_min_probability"),
    ({"cell_type": "thin-film"}, ConfigError, "cell_type must be mono or poly"),
    ({"n_test_defective": 5000}, DataError, "asked for 5000 defective cells but only 821"),
    ({"split": "x"}, ConfigError, "unknown option(s) split"),
])
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match.replace("(", r"\(").replace(")", r"\)")):
        open_dataset("elpv", None, options)
