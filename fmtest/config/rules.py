"""The rules a run judges its cases by: thresholds, bootstrap, risk, baseline and comparison settings.

They come from the suite config when a run starts and are recorded in its results, so `fmtest
merge` judges shards by exactly the rules the run used. Their defaults are the schema's
(`fmtest.config.schema`), read here and nowhere else: a rule missing from an older results file
gets the same default a config without it gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fmtest.config import schema
from fmtest.errors import DataError


@dataclass(frozen=True)
class RiskRules:
    """`[risk]`: the slip rate a test set should be able to prove, and the false-alarm budget recall is read at."""

    target_slip_rate: float
    false_alarm_budget: float

    @classmethod
    def from_table(cls, table: Mapping[str, object] | None, where: object = None) -> RiskRules:
        checked = schema.RISK.check(dict(table or {}), "[risk]", where)
        return cls(target_slip_rate=checked["target_slip_rate"], false_alarm_budget=checked["false_alarm_budget"])


@dataclass(frozen=True)
class RegionRules:
    """`[regions]`: how the region figures are computed (the false-positive-rate limit of AU-PRO)."""

    fpr_limit: float

    @classmethod
    def from_table(cls, table: Mapping[str, object] | None, where: object = None) -> RegionRules:
        checked = schema.REGIONS.check(dict(table or {}), "[regions]", where)
        return cls(fpr_limit=checked["fpr_limit"])


@dataclass(frozen=True)
class CompareRules:
    """`[compare.<candidate>]`: the candidate is scored against `against` on the same images."""

    candidate: str
    against: str
    tolerance: float
    max_new_slips: int

    @classmethod
    def from_table(cls, candidate: str, table: Mapping[str, object], where: object = None) -> CompareRules:
        checked = schema.COMPARE.check(dict(table), f"[compare.{candidate}]", where)
        if "against" not in checked:
            raise DataError(f"[compare.{candidate}]: against is required (the reference pipeline)", where)
        return cls(candidate, checked["against"], checked["tolerance"], checked["max_new_slips"])

    def as_table(self) -> dict[str, object]:
        return {"against": self.against, "tolerance": self.tolerance, "max_new_slips": self.max_new_slips}


@dataclass(frozen=True)
class RunRules:
    """Everything a verdict depends on besides the measured rows."""

    thresholds: Mapping[str, float]
    case_thresholds: Mapping[str, Mapping[str, float]]
    bootstrap_resamples: int
    seed: int
    baseline_tolerance: float
    risk: RiskRules
    compare: Mapping[str, CompareRules] = field(default_factory=dict)
    study_results: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # case id -> published figures
    regions: RegionRules = field(default_factory=lambda: RegionRules.from_table(None))

    def thresholds_for(self, case_id: str) -> dict[str, float]:
        """The defaults, then the case's own overrides."""
        return {**self.thresholds, **self.case_thresholds.get(case_id, {})}

    def as_summary(self) -> dict[str, object]:
        """The rules as the results file records them (`RunResults.config`)."""
        return {"thresholds": dict(self.thresholds),
                "case_thresholds": {k: dict(v) for k, v in self.case_thresholds.items()},
                "bootstrap_resamples": self.bootstrap_resamples, "seed": self.seed,
                "baseline_tolerance": self.baseline_tolerance,
                "risk": {"target_slip_rate": self.risk.target_slip_rate,
                         "false_alarm_budget": self.risk.false_alarm_budget},
                "regions": {"fpr_limit": self.regions.fpr_limit},
                "compare": {name: c.as_table() for name, c in self.compare.items()},
                "study_results": {k: dict(v) for k, v in self.study_results.items()}}

    @classmethod
    def from_summary(cls, summary: Mapping[str, object], where: object = None) -> RunRules:
        """The rules a results file recorded; what an older file lacks takes the schema's default."""
        top = schema.TOP.check({k: summary[k] for k in ("bootstrap_resamples", "seed") if k in summary}, "", where)
        thresholds = schema.THRESHOLDS.check(dict(summary.get("thresholds") or {}), "[thresholds]", where)
        case_thresholds = {case: schema.CASE_THRESHOLDS.check(dict(table), f'[thresholds."{case}"]', where, fill=False)
                           for case, table in dict(summary.get("case_thresholds") or {}).items()}
        baseline = schema.BASELINE.check({"tolerance": summary["baseline_tolerance"]}
                                         if "baseline_tolerance" in summary else {}, "[baseline]", where)
        compare = {name: CompareRules.from_table(name, table, where)
                   for name, table in dict(summary.get("compare") or {}).items()}
        study = {case: {k: float(v) for k, v in dict(figures).items()}
                 for case, figures in dict(summary.get("study_results") or {}).items()}
        return cls(thresholds=thresholds, case_thresholds=case_thresholds,
                   bootstrap_resamples=top["bootstrap_resamples"], seed=top["seed"],
                   baseline_tolerance=baseline["tolerance"],
                   risk=RiskRules.from_table(summary.get("risk") if isinstance(summary.get("risk"), dict) else None,
                                             where),
                   compare=compare, study_results=study,
                   regions=RegionRules.from_table(summary.get("regions") if isinstance(summary.get("regions"), dict)
                                                  else None, where))
