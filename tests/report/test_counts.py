"""Counts read as whole numbers and nouns in the right number, on every surface a reader looks at."""

from __future__ import annotations

from fmtest.report.junit import junit_xml
from fmtest.verdict.gates import threshold_failures
from fmtest.verdict.results import CaseResult, RunResults, case_properties


def comparison_case() -> CaseResult:
    return CaseResult("toy_empty-vs-toy_threshold-toy", "toy_empty", "toy", "comparison", "failed",
                      metrics={"delta_iou": -1.0, "new_slips": 4.0, "n_images": 10.0, "n_defective": 4.0},
                      thresholds={"delta_iou": -0.05, "max_new_slips": 0.0})


def test_junit_properties_write_counts_and_their_thresholds_as_integers():
    props = case_properties(comparison_case())
    assert props["new_slips"] == 4 and props["n_defective"] == 4 and props["threshold_max_new_slips"] == 0
    xml = junit_xml(RunResults(cases=[comparison_case()]))
    assert 'name="threshold_max_new_slips" value="0"' in xml and 'name="n_defective" value="4"' in xml


def test_a_missed_count_threshold_reads_as_whole_numbers():
    assert "new_slips = 4 is above the maximum 0" in threshold_failures(comparison_case())
