"""Which cases a run holds: every (pipeline, dataset) pair that applies to a task, the candidate-vs-current
pairs of `[compare.<candidate>]`, and the perturbations of the robustness suite."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fmtest.config.settings import Settings
from fmtest.config.suite import SuiteConfig
from fmtest.errors import ConfigError
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
        has_masks = dataset_has_masks(settings.config, d)
        for p in settings.pipelines:
            pipeline_task = settings.config.pipeline_task(p)
            if task == "segmentation" and pipeline_task == "segmentation" and has_masks:
                cases.append(Case(p, d, "segmentation"))
            elif task == "classification" and (pipeline_task == "classification" or not has_masks):
                cases.append(Case(p, d, "classification"))
            elif task == "any":  # the robustness suite: every pipeline on every dataset, scored as it can be
                cases.append(Case(p, d, "segmentation" if pipeline_task == "segmentation" and has_masks
                                  else "classification"))
    return cases


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


