"""Robustness: does a verdict survive the drift a production line brings?

One case per (pipeline, dataset, perturbation): brightness/contrast drift, gamma, noise, blur,
shift, rotation, compression and an SAT gate (gain/offset) change, each on a severity ladder from
suites/fmtest.toml [robustness]. A case fails when, at the gated severity, more verdicts flip or a
metric drops by more than its tolerance.
"""

import pytest

from fmtest.plugin import check_case
from fmtest.run.plan import robustness_perturbations

pytestmark = pytest.mark.fmtest_task("any", expand=robustness_perturbations)


def test_invariance(fm_case):
    check_case(fm_case)
