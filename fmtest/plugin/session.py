"""One process's evaluation session: what the run measures (`fmtest.run.evaluator`) handed to the verdict layer,
each case finished once by `finish_case`, pairs compared and robustness ladders judged from finished cases.

This is the only place where measuring and judging meet; both the pytest hooks and their tests go through it,
and `fmtest merge` finishes merged evidence with the same verdict functions.
"""

from __future__ import annotations

from fmtest.config.settings import Settings
from fmtest.data.shards import stratified_subset
from fmtest.errors import ConfigError
from fmtest.report.layers import LayerStore
from fmtest.report.results_file import read_json
from fmtest.run.evaluator import Evaluator
from fmtest.run.plan import Case
from fmtest.verdict.finish import finish_case, finish_comparison
from fmtest.verdict.results import CaseResult, RunResults, ShardSides
from fmtest.verdict.robustness import invariance_row, robustness_result


class Session:
    """The settings, the evaluator, the baseline, and every case finished so far in this process."""

    def __init__(self, settings: Settings, *, progress: bool = True):
        self.settings = settings
        self.evaluator = Evaluator(settings, progress=progress)
        self.baseline: RunResults | None = read_json(settings.baseline) if settings.baseline else None
        self._finished: dict[str, CaseResult] = {}

    @property
    def rules(self):
        return self.settings.config.rules

    def case(self, case: Case) -> CaseResult:
        """A (pipeline, dataset) case, measured and finished once per process."""
        if case.id not in self._finished:
            layers = LayerStore(self.settings.report, case.id) if self.settings.report else None
            self._finished[case.id] = finish_case(self.evaluator.evidence(case, layers), self.rules, self.baseline)
        return self._finished[case.id]

    def compare(self, case: Case) -> CaseResult:
        """A `[compare.<candidate>]` pair on one dataset, from its two finished cases. A shard's pair carries both
        cases, so `fmtest merge` compares the merged cases, never a shard's share."""
        candidate = self.case(Case(case.pipeline, case.dataset, case.task))
        reference = self.case(Case(case.against, case.dataset, case.task))
        result = finish_comparison(candidate, reference, self.rules.compare[case.pipeline], self.rules)
        if self.settings.shard is not None:
            result.shard_sides = ShardSides(candidate, reference)
        return result

    def invariance(self, case: Case, perturbation: str) -> CaseResult:
        """How the case's verdicts and metrics move under one perturbation, level by level: each level an
        ordinary evaluation of perturbed copies, compared image by image with the finished clean case. With
        `[robustness] n_images`, a stratified subset of the test images (both labels, the set's share)."""
        from fmtest.imaging.perturb import ladders

        opts = self.settings.config.robustness
        base = self.case(case)
        ladder = [float(x) for x in ladders(opts.get("ladders"))[perturbation]]
        gate = int(opts.get("gate_level", len(ladder) // 2))
        if not 0 <= gate < len(ladder):
            raise ConfigError(f"robustness.gate_level {gate} is outside the {perturbation} ladder {ladder}")
        test = self.evaluator.dataset(case.dataset).test
        chosen = {r.id for r in (stratified_subset(test, int(opts["n_images"])) if opts.get("n_images") else test.refs)}
        clean = [i for i in base.images if i.id in chosen]
        perturbed = [self.evaluator.perturbed_evidence(case, perturbation, level, chosen).images for level in ladder]
        rows = [invariance_row(perturbation, level, clean, images) for level, images in zip(ladder, perturbed)]
        thresholds = self.rules.thresholds_for(case.id)
        floor = opts.get("min_clean_recall", thresholds.get("recall", thresholds.get("f2", 0.0)))
        return robustness_result(base, perturbation, rows, gate, perturbed=perturbed,
                                 max_flip_rate=float(opts["max_flip_rate"]),
                                 max_metric_drop=float(opts["max_metric_drop"]), min_clean_recall=float(floor),
                                 max_clean_false_alarm_rate=float(opts["max_clean_false_alarm_rate"]))

    def close(self) -> None:
        self.evaluator.close()


__all__ = ["Session"]
