"""Two runs compared case by case (`fmtest compare A B`): the baseline gate's comparison (`regression`) of B
against A, under the rules B recorded, and the images whose verdict changed (`comparison.image_changes`).

Nothing is compared here that the baseline gate and the candidate pairs do not compare the same way: this
module only puts their two functions together for two whole runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fmtest.config.rules import RunRules
from fmtest.verdict.comparison import image_changes
from fmtest.verdict.regression import COMPARED, CaseComparison, compare_to_baseline
from fmtest.verdict.results import RunResults


@dataclass
class CaseDiff:
    """One case in both runs: each gated metric's change with its paired interval, and the images B now gets
    wrong that A got right."""

    comparison: CaseComparison
    new_slips: list[str] = field(default_factory=list)  # defective images B passes that A found
    new_false_alarms: list[str] = field(default_factory=list)  # good images B flags that A passed

    @property
    def case_id(self) -> str:
        return self.comparison.case_id

    @property
    def regressed(self) -> bool:
        return self.comparison.regressed


@dataclass
class RunDiff:
    """Run B against run A, judged by B's recorded rules (tolerance, resamples, seed)."""

    cases: list[CaseDiff]
    tolerance: float
    n_resamples: int
    seed: int

    @property
    def regressed(self) -> list[str]:
        """The cases that would fail as a regression against A."""
        return [c.case_id for c in self.cases if c.regressed]


def diff_runs(before: RunResults, after: RunResults) -> RunDiff:
    """`after` (B) against `before` (A), as `--fm-baseline=A` would judge B's cases, plus each case's new slips
    and new false alarms by image id. B's rules decide; results without rules take the schema's defaults."""
    rules = after.config.rules or before.config.rules or RunRules.from_summary({})
    comparisons = compare_to_baseline(after, before, rules.baseline_tolerance, n_resamples=rules.bootstrap_resamples,
                                      seed=rules.seed)
    cases = []
    for case_id, comparison in comparisons.items():
        diff = CaseDiff(comparison)
        now, then = after.case(case_id), before.case(case_id)
        if comparison.status == COMPARED and now is not None and then is not None:
            for change in image_changes(now.images, then.images):
                if change.change == "new_slips":
                    diff.new_slips.append(change.id)
                elif change.change == "new_false_alarms":
                    diff.new_false_alarms.append(change.id)
        cases.append(diff)
    return RunDiff(cases, rules.baseline_tolerance, rules.bootstrap_resamples, rules.seed)
