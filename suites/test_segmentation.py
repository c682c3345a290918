"""Segmentation: each (pipeline, dataset) pair is held to mean IoU over defective images (and F2).

Thresholds come from suites/fmtest.toml; metrics are recorded as test properties.
"""

import pytest

from fmtest.plugin import check_case

pytestmark = pytest.mark.fmtest_task("segmentation")


def test_segmentation(fm_case):
    check_case(fm_case)
