"""Candidate vs current: each `[compare.<candidate>] against = "<reference>"` pair, on every dataset
where both are scored, judged on exactly the same images.

A pair fails when a gated metric gets worse by more than the pair's tolerance, or when the candidate
passes defective parts the reference caught (new slips) beyond `max_new_slips` (default 0).
"""

import pytest

from fmtest.plugin import check_case

pytestmark = pytest.mark.fmtest_task("comparison")


def test_comparison(fm_case):
    check_case(fm_case)
