"""One self-contained HTML scoreboard: the pipeline x dataset matrix, overviews of risk, robustness and
data quality, then the details of every case.

No network at view time: CSS, JS and thumbnails are inlined; the image viewer's full-size layers are
files in `<report>_files/` next to the page (fmtest.report.layers). To stay usable at 200 cases and
10,000 images, only the matrix and one summary line per case are in the DOM up front; a case's
details and its per-image table (paginated) are built from embedded JSON when the case is opened.
Every string from the results (model reasoning included) is escaped here or set as text by the JS.

This module writes the page: its skeleton (header, outcome counts, footer) and the pipeline x dataset
matrix. Each other part has its own module: html_risk (risk overview), html_robustness (robustness matrix
and severity plots), html_data_quality (data-quality list), html_fidelity (departures from the study), html_case_details (per-case details and image
tables, image viewer), html_case_charts (worst-first order, confusion matrix, score histogram, breakdown);
html_format holds the escaping and number formatting they all share.
"""

from __future__ import annotations

import json
import os
from importlib import resources

from fmtest.metrics.specs import format_metric, format_value, label
from fmtest.report.fidelity import study_note
from fmtest.report.html_case_details import case_details
from fmtest.report.html_data_quality import data_quality_section
from fmtest.report.html_fidelity import fidelity_section
from fmtest.report.html_format import esc, first_line, metric_interval, outcome_word
from fmtest.report.html_risk import risk_overview
from fmtest.report.html_robustness import robustness_row_id, robustness_section
from fmtest.report.outcomes import css_variables
from fmtest.util.fsutil import atomic_write
from fmtest.util.text import plural
from fmtest.verdict.gates import gate_for, image_counts, main_metric, regressed_metrics
from fmtest.verdict.results import OUTCOME_WORD, CaseResult, RunResults, to_plain

OUTCOME_ORDER = ("failed", "error", "passed", "skipped")  # case details: what needs attention first
CELL_COLOUR_ORDER = ("error", "failed", "passed", "skipped")  # a cell with several cases shows the worst


def write_html(results: RunResults, path: str | os.PathLike, *, history_links: dict[str, str] | None = None) -> None:
    """Write the scoreboard atomically; `history_links` maps case id -> URL of its history plot."""
    atomic_write(path, render_html(results, history_links=history_links))


def render_html(results: RunResults, *, history_links: dict[str, str] | None = None) -> str:
    """The whole page as one string, its parts in reading order: overviews first, then every case."""
    links = history_links or {}
    cases = sorted(results.cases, key=lambda c: _rank(c.outcome))
    css = resources.files("fmtest.report").joinpath("scoreboard.css").read_text(encoding="utf-8")
    js = resources.files("fmtest.report").joinpath("scoreboard.js").read_text(encoding="utf-8")
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>fmtest scoreboard {esc(results.created)}</title><style>{css_variables()}\n{css}</style></head><body>",
        _header(results),
        _interrupted(results),
        _counts(results.cases),
        "<h2>Pipeline &times; dataset</h2>",
        _matrix(results.cases),
        risk_overview(results.cases),
        robustness_section(results.cases),
        data_quality_section(results.cases),
        fidelity_section(results.cases),
        "<h2>Cases</h2><div id='fm-cases'>",
        *(case_details(i, c, links.get(c.id)) for i, c in enumerate(cases)),
        "</div>",
        f"<footer>fmtest {esc(results.fmtest_version)}: thresholds are never tuned on the test images; "
        "intervals are 95 %.</footer>",
        f"<script>{js}</script></body></html>\n",
    ]
    return "\n".join(parts)


def _interrupted(results: RunResults) -> str:
    """A banner that no reader can miss: this run stopped before every planned case finished."""
    if not (results.interrupted or results.unfinished):
        return ""
    names = ", ".join(esc(c) for c in results.unfinished) or "none recorded"
    return (f"<p class='interrupted' role='alert'><strong>Interrupted run:</strong> "
            f"{plural(len(results.unfinished), 'planned case')} did not finish and {'is' if len(results.unfinished) == 1 else 'are'} "
            f"not judged: {names}.</p>")


def _rank(outcome: str) -> int:
    return OUTCOME_ORDER.index(outcome) if outcome in OUTCOME_ORDER else len(OUTCOME_ORDER)


def _header(results: RunResults) -> str:
    meta = [f"<span>run {esc(results.created or 'time unknown')}</span>",
            f"<span>commit <code>{esc(results.git_commit or 'unknown')}</code></span>",
            f"<span>fmtest {esc(results.fmtest_version)}</span>"]
    env = "".join(f"<li>{esc(str(k))} <code>{esc(str(v))}</code></li>" for k, v in results.environment.items())
    config = ""
    if results.config.config_file or results.config.datasets:
        dumped = json.dumps(to_plain(results.config), indent=1, sort_keys=True, default=str)
        config = f"<details><summary>suite config</summary><pre class='config'>{esc(dumped)}</pre></details>"
    return (f"<header><h1>fmtest scoreboard</h1><p class='meta'>{''.join(meta)}</p>"
            f"<ul class='env'>{env}</ul>{config}</header>")


def _counts(cases: list[CaseResult]) -> str:
    """Outcome totals, doubling as filters for the case list below."""
    boxes = []
    for outcome in OUTCOME_ORDER:
        n = sum(c.outcome == outcome for c in cases)
        boxes.append(f"<label class='o-{outcome}'><input type='checkbox' checked data-outcome='{outcome}'> "
                     f"<span class='badge'>{OUTCOME_WORD[outcome]}</span> {n}</label>")
    return (f"<div class='counts' role='group' aria-label='show cases'>{plural(len(cases), 'case')}: {''.join(boxes)}"
            "</div>")


def _matrix(cases: list[CaseResult]) -> str:
    pipelines = list(dict.fromkeys(c.pipeline for c in cases))
    datasets = list(dict.fromkeys(c.dataset for c in cases))
    by_pair: dict[tuple[str, str], list[CaseResult]] = {}
    for case in cases:  # robustness cases share their base case's pipeline and dataset
        by_pair.setdefault((case.pipeline, case.dataset), []).append(case)
    head = "".join(f"<th scope='col'>{esc(d)}</th>" for d in datasets)
    rows = []
    for pipeline in pipelines:
        cells = "".join(_matrix_cell(by_pair.get((pipeline, d), []), f"{pipeline}-{d}") for d in datasets)
        rows.append(f"<tr><th scope='row' class='row-head'>{esc(pipeline)}</th>{cells}</tr>")
    return (f"<div class='matrix-wrap'><table class='matrix' id='fm-matrix'><thead><tr><th class='row-head'>"
            f"pipeline</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _matrix_cell(cases: list[CaseResult], base_id: str) -> str:
    """The base case in full; robustness cases as one summary linking to their row in the robustness
    matrix (nine perturbations would crowd the cell); any other case of the pair as a linked badge."""
    if not cases:
        return "<td class='cell empty' title='not run'>&ndash;</td>"
    robust = [c for c in cases if c.task == "robustness"]
    others = [c for c in cases if c.task != "robustness"]
    main = next((c for c in others if c.id == base_id), others[0] if others else None)
    links = [_cell_link(main)] if main else []
    for other in (c for c in others if c is not main):
        label = other.id.removeprefix(base_id + "-") or other.id
        links.append(f"<a class='sub o-{esc(other.outcome, quote=True)}' href='#{esc(other.id, quote=True)}' "
                     f"title='{esc(other.message or other.id, quote=True)}'><span class='badge'>"
                     f"{outcome_word(other.outcome)}</span> {esc(label)}</a>")
    if robust:
        worst = _worst(c.outcome for c in robust)
        bad = sum(c.outcome in ("failed", "error") for c in robust)
        links.append(f"<a class='sub o-{esc(worst, quote=True)}' href='#{esc(robustness_row_id(robust[0]), quote=True)}'"
                     f"><span class='badge'>{outcome_word(worst)}</span> robustness "
                     f"{bad}/{len(robust)} failed</a>")
    worst = _worst(c.outcome for c in cases)
    data_case = esc((main or robust[0]).id, quote=True)
    return f"<td class='cell o-{esc(worst, quote=True)}' data-case='{data_case}'>{''.join(links)}</td>"


def _worst(outcomes) -> str:
    return min(outcomes, key=lambda o: CELL_COLOUR_ORDER.index(o) if o in CELL_COLOUR_ORDER else len(CELL_COLOUR_ORDER))


def _cell_link(case: CaseResult) -> str:
    lines = [f"<span class='badge'>{outcome_word(case.outcome)}</span>"]
    name = main_metric(case)
    if case.outcome == "skipped" or (case.outcome == "error" and not case.metrics):
        lines.append(f"<span class='reason'>{esc(first_line(case.message) or case.outcome)}</span>")
    elif name is not None:
        lines.append(f"<span class='metric'>{esc(label(name))} {format_value(case.metrics.get(name))}</span>")
        interval = metric_interval(case, name)
        if interval:
            lines.append(f"<span class='ci'>{interval}</span>")
        gate = gate_for(case, name)
        if gate:
            lines.append(f"<span class='thr'>{'max' if gate.upper else 'threshold'} {format_metric(name, gate.limit, 2)}"
                         "</span>")
        n_images, n_defective = image_counts(case)
        if n_images is not None:
            lines.append(f"<span class='n'>n={n_images}" + (f" ({n_defective} NOK)" if n_defective is not None else "")
                         + "</span>")
    if regressed_metrics(case):
        lines.append(f"<span class='regressed'>&#9660; regressed: {esc(', '.join(regressed_metrics(case)))}</span>")
    note = study_note(case, name)
    if note:
        lines.append(f"<span class='study-note'>{esc(note)}</span>")
    title = esc(case.message or "", quote=True)  # the link's own outcome: its badge is its case's colour, not the cell's
    return (f"<a class='o-{esc(case.outcome, quote=True)}' href='#{esc(case.id, quote=True)}' title='{title}'>"
            f"{''.join(lines)}</a>")
