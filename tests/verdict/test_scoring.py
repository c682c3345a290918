"""verdict.scoring: case figures and breakdowns from per-image rows alone."""

from __future__ import annotations

import pytest

from fmtest.verdict.results import ImageResult
from fmtest.verdict.scoring import breakdown


def _row(i, label, predicted, iou=None, group="carpet", defect_type=None):
    return ImageResult(f"{group}/{i}", "s", label, predicted, iou=iou, group=group, defect_type=defect_type)


def test_groups_and_defect_types_each_get_their_figures():
    images = [_row(0, "OK", "OK"), _row(1, "OK", "NOK"), _row(2, "NOK", "NOK", 0.8, defect_type="hole"),
              _row(3, "NOK", "OK", 0.0, defect_type="cut"),
              _row(4, "OK", "OK", group="grid"), _row(5, "NOK", "NOK", 0.4, group="grid", defect_type="hole")]
    table = breakdown(images, task="segmentation")
    assert set(table) == {"carpet", "grid", "hole", "cut"}
    assert table["carpet"]["iou"] == pytest.approx(0.4) and table["grid"]["iou"] == pytest.approx(0.4)
    assert table["carpet"]["n_images"] == 4 and table["carpet"]["n_defective"] == 2
    # a defect type is scored with every good image, so its F2 still pays for false alarms
    hole = table["hole"]
    assert hole["n_images"] == 5 and hole["n_defective"] == 2 and hole["iou"] == pytest.approx(0.6)
    assert hole["recall"] == 1.0 and hole["f2"] == pytest.approx(5 * (2 / 3) / (4 * (2 / 3) + 1))
    assert table["cut"]["recall"] == 0.0 and table["cut"]["f2"] == 0.0


def test_one_group_and_no_defect_types_give_no_breakdown():
    images = [_row(0, "OK", "OK"), _row(1, "NOK", "NOK", 1.0)]
    assert breakdown(images, task="segmentation") == {}


def test_a_defect_type_named_like_a_group_is_told_apart():
    images = [_row(0, "NOK", "NOK", 1.0, group="crack", defect_type="crack"), _row(1, "OK", "OK", group="void")]
    assert set(breakdown(images, task="segmentation")) == {"crack", "void", "crack (defect type)"}


def test_classification_breakdown_has_no_iou():
    images = [_row(0, "OK", "OK", group="a"), _row(1, "NOK", "NOK", group="b")]
    table = breakdown(images, task="classification")
    assert "iou" not in table["a"] and table["b"]["f2"] == 1.0 and table["b"]["n_defective"] == 1
