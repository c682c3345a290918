"""Which cases a run holds: every (pipeline, dataset) pair that applies to a task, the candidate-vs-current
pairs of `[compare.<candidate>]`, and the perturbations of the robustness suite."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fmtest.config.settings import Settings
from fmtest.config.suite import SuiteConfig
from fmtest.errors import ConfigError
from fmtest.metrics.specs import MAX_PREFIX, METRICS
from fmtest.pipelines.base import Task


def comparison_id(candidate: str, reference: str, dataset: str) -> str:
    return f"{candidate}-vs-{reference}-{dataset}"


@dataclass(frozen=True)
class Case:
    """A pipeline on a dataset; with `against`, a comparison of that pipeline with another on it."""

    pipeline: str
    dataset: str
    task: Task
    against: str | None = None

    @property
    def id(self) -> str:
        if self.against is not None:
            return comparison_id(self.pipeline, self.against, self.dataset)
        return f"{self.pipeline}-{self.dataset}"


def plan_cases(settings: Settings, task: str) -> list[Case]:
    """Every (pipeline, dataset) pair that applies to a task.

    Segmentation needs masks; a segmentation pipeline on a labels-only dataset is scored as a
    classifier (its mask decides OK/NOK), so it appears under classification there.
    """
    if task == "comparison":
        return _comparison_cases(settings)
    study = settings.config.study_cases  # a preset that names its grid ([study] cases) runs exactly that
    cases = [c for c in _applicable_cases(settings, task) if study is None or c.id in study]
    return cases


def _applicable_cases(settings: Settings, task: str) -> list[Case]:
    cases = []
    for d in settings.datasets:
        for p in settings.pipelines:
            scored_as = case_task(settings.config, p, d)
            if task in (scored_as, "any"):  # any: the robustness suite, every pipeline on every dataset
                cases.append(Case(p, d, scored_as))
    return cases


def case_task(config: SuiteConfig, pipeline: str, dataset: str) -> Task:
    """How a pipeline's case on a dataset is scored: segmentation needs a segmentation pipeline and masks."""
    segments = config.pipeline_task(pipeline) == "segmentation" and dataset_has_masks(config, dataset)
    return "segmentation" if segments else "classification"


def check_case_thresholds(config: SuiteConfig) -> None:
    """Refuse a `[thresholds."<case>"]` key on a metric the case does not record (IoU on a classification
    case): it would be accepted and never judged."""
    for case_id, table in config.case_thresholds.items():
        pipeline, dataset = config.split_case_id(case_id, f'[thresholds."{case_id}"]')
        task = case_task(config, pipeline, dataset)
        for key in table:
            spec = METRICS.get(key.removeprefix(MAX_PREFIX))
            if spec is not None and task not in spec.recorded_by:
                raise ConfigError(f'[thresholds."{case_id}"] {key}: case {case_id} is scored as {task} and records '
                                  f"no {spec.name} (recorded by {' and '.join(spec.recorded_by)} cases)", config.path)


def _comparison_cases(settings: Settings) -> list[Case]:
    """`[compare.<candidate>]` pairs on every dataset of the run where both are scored the same way."""
    scored = {(c.pipeline, c.dataset): c.task for task in ("segmentation", "classification")
              for c in plan_cases(dataclasses.replace(settings, pipelines=_with_compared(settings)), task)}
    cases = []
    for spec in settings.config.compare.values():
        if spec.candidate not in settings.pipelines and spec.against not in settings.pipelines:
            continue  # neither is selected in this run
        for d in settings.datasets:
            task = scored.get((spec.candidate, d))
            if task is not None and task == scored.get((spec.against, d)):
                cases.append(Case(spec.candidate, d, task, against=spec.against))
    return cases


def _with_compared(settings: Settings) -> list[str]:
    names = list(settings.pipelines)
    for spec in settings.config.compare.values():
        names += [n for n in (spec.candidate, spec.against) if n not in names]
    return names


def robustness_perturbations(settings: Settings) -> list[str]:
    """Perturbations the robustness suite runs: `[robustness] perturbations`, default all."""
    from fmtest.imaging.perturb import PERTURBATIONS

    names = settings.config.robustness.get("perturbations") or list(PERTURBATIONS)
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ConfigError(f"unknown perturbation(s) {', '.join(unknown)}; known: {', '.join(PERTURBATIONS)}")
    return list(names)


def dataset_has_masks(config: SuiteConfig, name: str) -> bool:
    return config.dataset_class(name).has_masks and config.datasets.get(name, {}).get("masks", True) is not False


