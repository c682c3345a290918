"""The fidelity table: each published case of the study, what fmtest runs, what the study ran, and why they differ.

Built from data, never written by hand: every pipeline and dataset declares its departures from the
study for the options in effect (`Pipeline.departures`, `Dataset.departures`, records of
`fmtest.data.departures.Departure`), and this module collects them per case of a suite config's
`[study] cases` (with `[study.results]`, the published numbers). docs/FIDELITY.md is its Markdown,
generated from `suites/study.toml`; a test keeps the page current.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fmtest.config.suite import SuiteConfig
from fmtest.data.departures import Departure
from fmtest.pipelines.base import PipelineContext


@dataclass(frozen=True)
class CaseFidelity:
    """One published case: its number, the published source it follows, and every departure from it."""

    case_id: str
    pipeline: str
    dataset: str
    published: Mapping[str, float]  # metric -> the study's number ({} when the config gives none)
    source: str  # the pipeline's `study_source`, or "" for a pipeline that is none of the study's
    departures: tuple[Departure, ...]  # the pipeline's (over every group of the dataset), then the dataset's


def case_fidelity(config: SuiteConfig, case_id: str, weights_dir: Path | None = None) -> CaseFidelity:
    """A case's departures for the config's settings; `weights_dir` decides what runs where a file may be missing
    (the supervised reference's ResNet-50). Loads no model and reads no data."""
    pipeline, dataset = config.split_case_id(case_id, "fidelity")
    pipeline_class = config.pipeline_class(pipeline)
    dataset_class = config.dataset_class(dataset)
    dataset_options = config.datasets.get(dataset, {})
    found: list[Departure] = []
    for group in dataset_class.group_names(dataset_options):
        options = config.pipeline_options(pipeline, dataset, group)
        context = PipelineContext(dataset=dataset, group=group, options=options, weights_dir=weights_dir,
                                  prompt=config.prompt_for(dataset, group, pipeline), suite_dir=config.directory)
        found += [d for d in pipeline_class.departures(context) if d not in found]
    found += dataset_class.departures(dataset_options)
    return CaseFidelity(case_id, pipeline, dataset, dict(config.study_results.get(case_id, {})),
                        pipeline_class.study_source or "", tuple(found))


def study_fidelity(config: SuiteConfig, weights_dir: Path | None = None) -> list[CaseFidelity]:
    """Every published case of the config (`[study] cases`, else those with `[study.results]`), in its order."""
    cases = config.study_cases if config.study_cases is not None else list(config.study_results)
    return [case_fidelity(config, case_id, weights_dir) for case_id in cases]


def fidelity_markdown(cases: Sequence[CaseFidelity]) -> str:
    """The table as Markdown: one row per departure, the case, its published number and source on its first row."""
    lines = ["| case | study | published source | departure | fmtest | study / upstream | why | kind |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case in cases:
        published = ", ".join(f"{metric} {value:.2f}" for metric, value in case.published.items()) or "—"
        head = [f"`{case.case_id}`", published, _cell(case.source or "not one of the study's pipelines")]
        if not case.departures:
            lines.append(_row(head + ["none: runs as published", "", "", "", ""]))
        for index, d in enumerate(case.departures):
            lines.append(_row((head if index == 0 else ["", "", ""]) + [
                f"**{_cell(d.name)}**", _cell(d.ours), _cell(d.upstream), _cell(d.reason), d.kind]))
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


__all__ = ["CaseFidelity", "case_fidelity", "fidelity_markdown", "study_fidelity"]
