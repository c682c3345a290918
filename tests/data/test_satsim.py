"""satsim: deterministic, lazily rendered SAT-like parts with exact defect masks and real nuisances."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fmtest.data import open_dataset
from fmtest.data.satsim import (
    DEFECT_TYPES,
    NOMINAL,
    Nuisance,
    SatSim,
    SatSimOptions,
    render_part,
)
from fmtest.errors import ConfigError

SIZE = 96
QUIET = Nuisance(shift=0, rotation=0, brightness=0, contrast=0, noise=0, blur=0, tolerance=0)


def small(**kw) -> SatSim:
    return SatSim(SatSimOptions(size=SIZE, **{"n_train": 3, "n_test_good": 4, "n_test_defective": 6, **kw}))


def test_same_key_same_image_and_mask():
    a, b = render_part((5, 1, 1, 3), "void", SIZE), render_part((5, 1, 1, 3), "void", SIZE)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.image.dtype == np.float32 and a.image.shape == (SIZE, SIZE)
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0


def test_different_keys_differ():
    assert not np.array_equal(render_part((0, 1), None, SIZE).image, render_part((1, 1), None, SIZE).image)


@pytest.mark.parametrize("defect", DEFECT_TYPES)
@pytest.mark.parametrize("key", [(0, 1, 2, 0), (3, 1, 2, 7), (11,)])
@pytest.mark.parametrize("nuisance", [Nuisance(), QUIET, Nuisance(shift=4, rotation=3, blur=2)],
                         ids=["default", "quiet", "strong"])
def test_defect_changes_pixels_only_inside_its_mask(defect, key, nuisance):
    clean = render_part(key, None, SIZE, nuisance)
    part = render_part(key, defect, SIZE, nuisance)
    changed = part.image != clean.image
    assert part.mask.any()
    assert not (changed & ~part.mask).any()
    assert changed[part.mask].mean() > 0.9  # the mask is not padded with untouched pixels
    assert not clean.mask.any()


def test_defect_types_look_as_described():
    key = (2, 1, 0, 4)
    clean = render_part(key, None, SIZE, QUIET).image
    void = render_part(key, "void", SIZE, QUIET)
    crack = render_part(key, "crack", SIZE, QUIET)
    delamination = render_part(key, "delamination", SIZE, QUIET)
    assert (void.image - clean)[void.mask].mean() > 0.05  # voids reflect strongly: brighter
    assert (crack.image - clean)[crack.mask].mean() < -0.05  # cracks scatter: darker
    assert delamination.mask.sum() > 4 * void.mask.sum()  # large region
    assert crack.mask.sum() < 0.5 * delamination.mask.sum()  # thin line


def test_nuisance_draws_scale_with_strength():
    weak = render_part((9,), None, SIZE, Nuisance(shift=1.0, rotation=0.5))
    strong = render_part((9,), None, SIZE, Nuisance(shift=3.0, rotation=1.5))
    np.testing.assert_allclose(np.array(strong.meta["shift_px"]), 3 * np.array(weak.meta["shift_px"]))
    assert strong.meta["rotation_deg"] == pytest.approx(3 * weak.meta["rotation_deg"])
    assert render_part((9,), None, SIZE, QUIET).meta["shift_px"] == (0.0, 0.0)


def test_nuisances_make_good_parts_differ_from_the_reference_beyond_noise():
    """What defeats a reference difference: without nuisances two good parts are close."""
    reference = render_part((0, 2), None, SIZE, QUIET).image
    quiet = np.mean([np.abs(render_part((0, 1, 0, i), None, SIZE, QUIET).image - reference).mean()
                     for i in range(3)])
    noisy = np.mean([np.abs(render_part((0, 1, 0, i), None, SIZE).image - reference).mean() for i in range(3)])
    assert noisy > 2 * quiet


def test_splits_ids_labels_and_meta():
    ds = small()
    assert ds.train.ids == ["train/good/000", "train/good/001", "train/good/002"]
    assert set(ds.train.labels) == {"OK"}
    assert len(ds.test) == 10 and ds.test.n_defective == 6
    assert ds.test.ids[:4] == [f"test/good/{i:03d}" for i in range(4)]
    assert ds.test.ids[4:] == ["test/void/000", "test/crack/000", "test/delamination/000",
                               "test/void/001", "test/crack/001", "test/delamination/001"]
    for sample in ds.test:
        kind = sample.id.split("/")[1]
        assert sample.meta["defect_type"] == kind
        assert sample.label == ("OK" if kind == "good" else "NOK")
        assert sample.mask is not None and sample.mask.any() == (kind != "good")
    assert all(not s.mask.any() for s in ds.train)


def test_reference_is_a_registered_nominal_part():
    reference = small().reference
    assert reference.id == "reference/good/000" and reference.label == "OK"
    assert reference.meta["shift_px"] == (0.0, 0.0) and reference.meta["rotation_deg"] == 0.0
    assert reference.meta["gain"] == 1.0 and reference.meta["blur_sigma"] == 0.0
    assert NOMINAL.noise == Nuisance().noise


def test_samples_depend_only_on_their_own_key():
    """Lazy and stable: a sample is the same whatever else the dataset holds."""
    big, little = small(n_test_defective=9, n_train=5), small(n_test_defective=3, n_train=1)
    pick = {s.id: s for s in big.test}
    for sample in little.test:
        np.testing.assert_array_equal(sample.image, pick[sample.id].image)
    np.testing.assert_array_equal(big.train[0].image, little.train[0].image)
    assert big.test[1].sha256 == big.test[1].sha256
    assert small(seed=1).test[0].sha256 != big.test[0].sha256


def test_defect_types_option_restricts_kinds():
    ds = small(defect_types=("crack",), n_test_defective=2)
    assert ds.test.ids[-2:] == ["test/crack/000", "test/crack/001"]


def test_from_config_and_defaults():
    ds = open_dataset("satsim", None, {"size": 64, "n_train": 1, "noise": 0.0})
    assert ds.options.noise == 0.0 and ds.options.size == 64
    default = open_dataset("satsim", None, {})
    assert (len(default.train), len(default.test), default.test.n_defective) == (40, 90, 30)
    assert default.test[0].image.shape == (256, 256)


@pytest.mark.parametrize("options,match", [
    ({"sizes": 64}, "unknown option(s) sizes"),
    ({"n_train": -1}, "n_train must be >= 0"),
    ({"blur": -0.5}, "blur must be >= 0"),
    ({"size": 32}, "size must be >= 64"),
    ({"defect_types": ["void", "scratch"]}, "defect_types must name some of"),
    ({"defect_types": []}, "defect_types must name some of"),
])
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        open_dataset("satsim", None, options)


def test_unknown_defect_type_in_renderer():
    with pytest.raises(ValueError, match="scratch"):
        render_part(0, "scratch", SIZE)
