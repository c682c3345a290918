"""The fidelity table: each published case of the study, what fmtest runs, what the study ran, and why they differ.

Built from data, never written by hand: every pipeline and dataset declares its departures from the
study for the options in effect (`Pipeline.departures`, `Dataset.departures`, records of
`fmtest.data.departures.Departure`), and this module collects them per case of a suite config's
`[study] cases` (with `[study.results]`, the published numbers). docs/FIDELITY.md is its Markdown,
generated from `suites/study.toml`; a test keeps the page current.

A run records each case's departures in its results (`CaseResult.departures`), and every scoreboard (terminal,
HTML, Markdown) shows them in a word or two beside the published number through `study_note`, so nobody compares a
reconstruction with the paper unknowingly; where a departure makes the number incomparable (another model than the
study's), the published number is not printed beside the case at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fmtest.config.suite import SuiteConfig
from fmtest.data.departures import Departure
from fmtest.metrics.specs import format_metric
from fmtest.verdict.results import CaseResult


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
    return CaseFidelity(case_id, pipeline, dataset, dict(config.study_results.get(case_id, {})),
                        config.pipeline_class(pipeline).study_source or "",
                        config.case_departures(pipeline, dataset, weights_dir))


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


FIDELITY_DOC = "docs/FIDELITY.md"  # the study preset's table; `fmtest config --fidelity` prints any config's


def incomparable(case: CaseResult) -> list[Departure]:
    """The departures that make the study's number no yardstick for this case (another model than the study's)."""
    return [d for d in case.departures if not d.comparable]


def study_note(case: CaseResult, metric: str | None) -> str:
    """What a case's row says about the study, in a few words: the published number of `metric` and the names of the
    departures ("study 0.82; departs: input, MLP"), "as published" when there are none; when the model is not the
    study's, the departure that says so instead of the number. Empty for a case the study did not publish and that
    runs the study's model (or none)."""
    other_model = "; ".join(f"{d.name} {d.ours}" for d in incomparable(case))
    names = [d.name for d in case.departures if d.comparable]
    if not case.study:
        return other_model
    if other_model:
        head = f"not comparable with the study ({other_model})"
    elif metric in case.study:
        head = f"study {format_metric(metric, case.study[metric], 2)}"
    else:
        head = "study " + ", ".join(f"{k} {format_metric(k, v, 2)}" for k, v in case.study.items())
    if names:
        return f"{head}; departs: {', '.join(names)}"
    return head if other_model else f"{head}, as published"


__all__ = ["FIDELITY_DOC", "CaseFidelity", "case_fidelity", "fidelity_markdown", "incomparable", "study_fidelity", "study_note"]
