"""Two whole runs compared (`fmtest compare`): the baseline gate's comparison under B's recorded rules, new slips and
new false alarms by image id, new and vanished cases listed; and its text (`fmtest.report.compare`)."""

from __future__ import annotations

from dataclasses import replace

from fmtest.config.rules import RunRules
from fmtest.report.compare import render_compare
from fmtest.verdict.results import CaseResult, ImageResult, RunConfig, RunResults
from fmtest.verdict.run_diff import diff_runs


def _case(case_id: str, predicted: list[str], f2: float) -> CaseResult:
    labels = ["OK", "OK", "NOK", "NOK"]
    images = [ImageResult(f"img{i}", f"sha{i}", label, guess) for i, (label, guess) in enumerate(zip(labels, predicted,
                                                                                                      strict=True))]
    return CaseResult(id=case_id, pipeline=case_id.split("-")[0], dataset="toy", task="classification",
                      metrics={"f2": f2}, images=images)


def _rules(tolerance: float) -> RunRules:
    return replace(RunRules.from_summary({}), baseline_tolerance=tolerance, bootstrap_resamples=200)


def test_new_slips_false_alarms_and_cases_on_one_side():
    before = RunResults(cases=[_case("a-toy", ["OK", "OK", "NOK", "NOK"], 1.0), _case("gone-toy", ["OK"] * 4, 0.0)])
    after = RunResults(cases=[_case("a-toy", ["NOK", "OK", "OK", "NOK"], 0.55), _case("fresh-toy", ["OK"] * 4, 0.0)],
                       config=RunConfig(rules=_rules(0.02)))
    diff = diff_runs(before, after)
    by_id = {c.case_id: c for c in diff.cases}
    assert by_id["a-toy"].new_slips == ["img2"] and by_id["a-toy"].new_false_alarms == ["img0"]
    assert by_id["a-toy"].comparison.paired and diff.regressed == ["a-toy"]
    assert by_id["fresh-toy"].comparison.status == "new" and by_id["gone-toy"].comparison.status == "vanished"
    text = render_compare(diff, "A.json", "B.json")
    assert "a-toy: 1 new slip (defective, B passes, A found): img2" in text
    assert "a-toy: 1 new false alarm (good, B flags, A passed): img0" in text
    assert any(line.startswith("fresh-toy") and "new case: not in the baseline" in line for line in text.splitlines())
    assert text.rstrip().endswith("REGRESSED: 1 case would fail against A: a-toy")


def test_b_recorded_tolerance_decides_and_results_without_rules_take_the_defaults():
    before = RunResults(cases=[_case("a-toy", ["OK", "OK", "NOK", "NOK"], 1.0)])
    after = RunResults(cases=[_case("a-toy", ["OK", "OK", "OK", "NOK"], 0.55)], config=RunConfig(rules=_rules(0.5)))
    assert diff_runs(before, after).regressed == []  # a drop of 0.45 is within B's tolerance 0.5
    unruled = replace(after, config=RunConfig())
    diff = diff_runs(before, unruled)
    assert diff.tolerance == RunRules.from_summary({}).baseline_tolerance and diff.regressed == ["a-toy"]
