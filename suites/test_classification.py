"""Classification: each (pipeline, dataset) pair is held to F2 over OK/NOK verdicts.

Segmentation pipelines appear here on labels-only datasets (their mask decides OK/NOK).
"""

import pytest

from fmtest.plugin import check_case

pytestmark = pytest.mark.fmtest_task("classification")


def test_classification(fm_case):
    check_case(fm_case)
