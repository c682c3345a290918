"""One self-contained HTML scoreboard: the pipeline x dataset matrix, overviews of risk, robustness and
data quality, then the details of every case.

No network at view time: CSS, JS and thumbnails are inlined. To stay usable at 200 cases and
10,000 images, only the matrix and one summary line per case are in the DOM up front; a case's
details and its per-image table (paginated) are built from embedded JSON when the case is opened.
Every string from the results (model reasoning included) is escaped here or set as text by the JS.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path

from fmtest.report.results import CaseResult, ImageResult, RunResults
from fmtest.report.terminal import (OUTCOME_WORD, fmt_number, gate_for, gates, image_counts, main_metric,
                                    perturbation_of, regressed_metrics)

OUTCOME_ORDER = ("failed", "error", "passed", "skipped")  # case details: what needs attention first
CELL_COLOUR_ORDER = ("error", "failed", "passed", "skipped")  # a cell with several cases shows the worst
IMAGE_COLUMNS = ("id", "label", "predicted", "outcome", "score", "iou", "reasoning", "error")
ALWAYS_SHOWN_COLUMNS = ("id", "label", "predicted", "outcome")
IMAGE_OUTCOMES = (("correct", "correct"), ("miss", "all misses"), ("slip", "slip (defect passed as OK)"),
                  ("false alarm", "false alarm (good part flagged)"), ("error", "error"))
EXTRA_TITLES = {"regression": "Regression against the baseline", "risk": "Risk at the operating point",
                "robustness": "Robustness", "data_quality": "Data quality", "usage": "Usage and cost",
                "invalid_answers": "Invalid answers"}
RISK_NOTES = {  # matched as key prefixes, first match wins: most specific first
    "auroc": "threshold-free, not a factory figure",
    "recall_at": "recall at the stated false-alarm budget",
    "defectives_needed": "defective images (with zero slips) needed to show the target slip rate",
    "slip_rate_upper": "95 % upper bound on the slip rate",
    "slip_rate": "share of defective parts passed as OK",
    "false_alarm_rate_at": "false-alarm rate of that operating point",
    "false_alarm_rate": "share of good parts flagged NOK",
}
MAX_EXTRA_ROWS = 500  # a data-quality list of thousands of findings is truncated with a note
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_esc = html.escape


def write_html(results: RunResults, path: str | os.PathLike, *, history_links: dict[str, str] | None = None) -> None:
    """Write the scoreboard atomically; `history_links` maps case id -> URL of its history plot."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = render_html(results, history_links=history_links)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(document)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared (CI artifact, web server)
    os.replace(tmp, path)


def render_html(results: RunResults, *, history_links: dict[str, str] | None = None) -> str:
    links = history_links or {}
    cases = sorted(results.cases, key=lambda c: _rank(c.outcome))
    css = resources.files("fmtest.report").joinpath("scoreboard.css").read_text(encoding="utf-8")
    js = resources.files("fmtest.report").joinpath("scoreboard.js").read_text(encoding="utf-8")
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>fmtest scoreboard {_esc(results.created)}</title><style>{css}</style></head><body>",
        _header(results),
        _counts(results.cases),
        "<h2>Pipeline &times; dataset</h2>",
        _matrix(results.cases),
        _risk_overview(results.cases),
        _robustness_section(results.cases),
        _data_quality_section(results.cases),
        "<h2>Cases</h2><div id='fm-cases'>",
        *(_case_details(i, c, links.get(c.id)) for i, c in enumerate(cases)),
        "</div>",
        f"<footer>fmtest {_esc(results.fmtest_version)}: thresholds are never tuned on the test images; "
        "intervals are 95 %.</footer>",
        f"<script>{js}</script></body></html>\n",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- risk overview


def _risk_overview(cases: list[CaseResult]) -> str:
    """The factory figures of every case side by side; each case's details keep the full risk table."""
    rows = []
    for case in cases:
        risk = case.extra.get("risk")
        if not isinstance(risk, dict) or not risk:
            continue
        rows.append(f"<tr data-case='{_esc(case.id, quote=True)}'><th scope='row'><a href='#{_esc(case.id, quote=True)}'>"
                    f"{_esc(case.id)}</a></th>{_risk_cells(risk)}</tr>")
    if not rows:
        return ""
    head = ("<th>case</th><th class='num'>slip rate [95 % CI]</th><th class='num'>slip rate upper 95 %</th>"
            "<th class='num'>false-alarm rate [95 % CI]</th><th class='num'>defectives: have / needed</th>"
            "<th>verdict</th><th class='num'>recall at false-alarm budget</th>"
            "<th class='num'>AUROC <span class='note'>(threshold-free)</span></th>")
    return ("<h2 id='fm-risk'>Risk at the operating point</h2><div class='table-wrap'><table class='risk' id='fm-risk-table'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            "<p class='note'>A slip is a defective part passed as OK. &ldquo;Needed&rdquo; is how many defective "
            "images, with zero slips, it takes to show the target slip rate with 95 % confidence. AUROC does not "
            "depend on the operating point and is not a factory figure.</p>")


def _risk_cells(risk: dict) -> str:
    needed = _risk_value(risk, "defectives_needed")
    have = risk.get("n_defective")
    target = risk.get("target_slip_rate")
    needed_text = f"{fmt_number(have)} / {_cell_text(needed)}"
    if isinstance(target, int | float):
        needed_text += f" <span class='note'>for slip &lt; {target:.1%}</span>"
    cells = [f"<td class='num'>{_esc(_with_interval(risk, 'slip_rate'))}</td>",
             f"<td class='num'>{_esc(_cell_text(_risk_value(risk, 'slip_rate_upper')))}</td>",
             f"<td class='num'>{_esc(_with_interval(risk, 'false_alarm_rate'))}</td>",
             f"<td class='num'>{needed_text}</td>", f"<td>{_risk_verdict(risk, have, needed)}</td>",
             f"<td class='num'>{_recall_at_budget(risk)}</td>",
             f"<td class='num'>{_esc(_cell_text(_risk_value(risk, 'auroc')))}</td>"]
    return "".join(cells)


def _risk_value(risk: dict, name: str) -> object:
    """`name` itself, or the first key that starts with it: such keys carry their setting
    (slip_rate_upper_95, defectives_needed_for_target, auroc_threshold_free_not_a_factory_figure)."""
    if name in risk:
        return risk.get(name)
    key = next((k for k in risk if k.startswith(name) and not k.endswith(("_ci_low", "_ci_high"))), None)
    return None if key is None else risk[key]


def _with_interval(risk: dict, key: str) -> str:
    value, lo, hi = risk.get(key), risk.get(f"{key}_ci_low"), risk.get(f"{key}_ci_high")
    if lo is None or hi is None or isinstance(value, dict | list):
        return _cell_text(value)
    return f"{fmt_number(value)} [{fmt_number(lo)}, {fmt_number(hi)}]"


def _risk_verdict(risk: dict, have: object, needed: object) -> str:
    """A badge for whether the test set can show the target at all; the full sentence as its tooltip."""
    sentence = risk.get("verdict") if isinstance(risk.get("verdict"), str) else ""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (have, needed))
    if numbers:
        enough = have >= needed
        word = "enough defectives" if enough else "NOT enough defectives"
        return (f"<span class='badge o-{'passed' if enough else 'failed'}' title='{_esc(sentence, quote=True)}'>"
                f"{word}</span>")
    return _esc(sentence or "n/a")


def _recall_at_budget(risk: dict) -> str:
    recall = _risk_value(risk, "recall_at")
    if recall is None:
        return "<span class='note'>n/a (no scores)</span>"
    text = _esc(_cell_text(recall))
    budget, measured = risk.get("false_alarm_budget"), risk.get("false_alarm_rate_at_budget_threshold")
    if isinstance(budget, int | float):
        text += f" <span class='note'>budget {budget:.1%}"
        if isinstance(measured, int | float) and math.isfinite(measured):
            text += f", test false alarms {measured:.1%}"
        text += "</span>"
    return text


# --------------------------------------------------------------------------- robustness

ROBUSTNESS_SERIES = (("flip_rate", "flip rate", "s-flip"), ("delta_iou", "\u0394 IoU", "s-iou"),
                     ("delta_f2", "\u0394 F2", "s-f2"))
PLOTS_OPEN_LIMIT = 60  # more robustness cases than this: plot rows start collapsed, keeping the page light
PLOT_W, PLOT_H, PLOT_LEFT, PLOT_RIGHT = 220, 140, 40, 10
FLIP_PANEL, DELTA_PANEL, TICK_Y = (14, 58), (72, 116), 130  # y ranges (top, bottom) of the two panels


def _robustness_section(cases: list[CaseResult]) -> str:
    """Which perturbations break which pipeline (a matrix), and how each one degrades with severity (plots)."""
    robust = [c for c in cases if c.task == "robustness"]
    if not robust:
        return ""
    perturbations = list(dict.fromkeys(perturbation_of(c) for c in robust))
    groups: dict[tuple[str, str], dict[str, CaseResult]] = {}
    for case in robust:
        groups.setdefault((case.pipeline, case.dataset), {})[perturbation_of(case)] = case
    head = "".join(f"<th scope='col'>{_esc(p)}{_gate_heading(p, robust)}</th>" for p in perturbations)
    rows = []
    for (pipeline, dataset), by_name in groups.items():
        cells = "".join(_robustness_cell(by_name.get(p)) for p in perturbations)
        first = next(iter(by_name.values()))
        rows.append(f"<tr id='{_esc(_robustness_row_id(first), quote=True)}'><th scope='row' class='row-head'>"
                    f"{_esc(pipeline)} <span class='note'>{_esc(dataset)}</span></th>{cells}</tr>")
    open_attr = " open" if len(robust) <= PLOTS_OPEN_LIMIT else ""
    plots = "".join(_plot_row(pipeline, dataset, list(by_name.values()), open_attr)
                    for (pipeline, dataset), by_name in groups.items())
    return ("<h2 id='fm-robustness'>Robustness</h2>"
            f"<p class='note'>{_tolerance_note(robust)}</p>"
            "<div class='matrix-wrap'><table class='matrix rob-matrix' id='fm-rob-matrix'><thead><tr>"
            f"<th class='row-head'>pipeline / dataset</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            f"<h3>Metric vs severity</h3>{_plot_legend()}<div id='fm-rob-plots'>{plots}</div>")


def _robustness_row_id(case: CaseResult) -> str:
    return f"fm-rob-{case.pipeline}-{case.dataset}"


def _gate_heading(perturbation: str, cases: list[CaseResult]) -> str:
    levels = {_number(c.extra.get("gate_level")) for c in cases if perturbation_of(c) == perturbation}
    levels = {v for v in levels if not math.isnan(v)}
    return f"<span class='gate-level'>gate level {levels.pop():g}</span>" if len(levels) == 1 else ""


def _tolerance_note(cases: list[CaseResult]) -> str:
    flips = {c.thresholds.get("max_flip_rate") for c in cases} - {None}
    drops = {c.thresholds.get("max_metric_drop") for c in cases} - {None}
    text = "Each cell: outcome at the gated severity level, the share of verdicts that flip there, and the worst " \
           "metric change."
    if len(flips) == 1 and len(drops) == 1:
        text += f" Tolerances: flip rate &le; {fmt_number(flips.pop(), 2)}, metric drop &le; {fmt_number(drops.pop())}."
    return text


def _robustness_cell(case: CaseResult | None) -> str:
    if case is None:
        return "<td class='cell empty' title='not run'>&ndash;</td>"
    outcome = _esc(case.outcome, quote=True)
    lines = [f"<span class='badge'>{_esc(OUTCOME_WORD.get(case.outcome, case.outcome.upper()))}</span>"]
    if case.metrics:
        lines.append(f"<span class='metric'>flip {fmt_number(case.metrics.get('flip_rate'))}</span>")
        drop = _worst_drop(case.metrics)
        if drop:
            lines.append(f"<span class='drop'>{_esc(drop[0])} {drop[1]:+.3f}</span>")
    else:
        lines.append(f"<span class='reason'>{_esc(_first_line(case.message) or case.outcome)}</span>")
    title = case.message or f"{perturbation_of(case)}: within tolerance at level {_cell_text(case.extra.get('gate_level'))}"
    return (f"<td class='cell o-{outcome}' data-case='{_esc(case.id, quote=True)}'><a href='#{_esc(case.id, quote=True)}'"
            f" title='{_esc(title, quote=True)}'>{''.join(lines)}</a></td>")


def _worst_drop(metrics: dict) -> tuple[str, float] | None:
    """The metric that fell most (or rose least) at the gate; None when no metric delta applies."""
    deltas = [(label, _number(metrics.get(key))) for key, label, _ in ROBUSTNESS_SERIES[1:]]
    deltas = [(label, v) for label, v in deltas if not math.isnan(v)]
    return min(deltas, key=lambda d: d[1]) if deltas else None


def _number(value: object) -> float:
    """A stored figure as float; null (how JSON keeps NaN) and non-numbers read as NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _levels(case: CaseResult) -> list[dict]:
    rows = case.extra.get("robustness")
    rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    return sorted((r for r in rows if not math.isnan(_number(r.get("level")))), key=lambda r: _number(r["level"]))


def _plot_row(pipeline: str, dataset: str, cases: list[CaseResult], open_attr: str) -> str:
    """One pipeline's plots in a <template>: scoreboard.js puts them in the page when the row is opened."""
    figures = "".join(_plot_figure(c) for c in cases)
    bad = sum(c.outcome in ("failed", "error") for c in cases)
    return (f"<details class='rob-plots'{open_attr} data-pipeline='{_esc(pipeline, quote=True)}' "
            f"data-dataset='{_esc(dataset, quote=True)}'><summary><b>{_esc(pipeline)}</b> on {_esc(dataset)}: "
            f"{bad} of {len(cases)} perturbations fail</summary>"
            f"<template><div class='rob-figures'>{figures}</div></template></details>")


def _plot_figure(case: CaseResult) -> str:
    name = perturbation_of(case)
    levels = _levels(case)
    body = _severity_plot(name, levels, _number(case.extra.get("gate_level")),
                          _number(case.thresholds.get("max_flip_rate")), _number(case.thresholds.get("max_metric_drop"))
                          ) if levels else "<p class='note'>no levels recorded</p>"
    return (f"<figure class='rob-figure o-{_esc(case.outcome, quote=True)}' data-case='{_esc(case.id, quote=True)}'>"
            f"{body}<figcaption><span class='badge'>{_esc(OUTCOME_WORD.get(case.outcome, case.outcome.upper()))}"
            f"</span> <a href='#{_esc(case.id, quote=True)}'>{_esc(name)}</a></figcaption></figure>")


def _severity_plot(name: str, rows: list[dict], gate: float, max_flip: float, max_drop: float) -> str:
    """Inline SVG: flip rate (top panel) and metric deltas (bottom panel) against severity level, with the
    gated level as a vertical line and each tolerance as a dashed line. NaN points are left out."""
    levels = [_number(r["level"]) for r in rows]
    lo, hi = min(0.0, *levels), max(levels)
    hi = hi if hi > lo else lo + 1.0

    def x(level: float) -> float:
        return PLOT_LEFT + (level - lo) / (hi - lo) * (PLOT_W - PLOT_LEFT - PLOT_RIGHT)

    flips = [_number(r.get("flip_rate")) for r in rows]
    deltas = [_number(r.get(k)) for r in rows for k in ("delta_iou", "delta_f2")]
    flip_top = max([v for v in flips if not math.isnan(v)] + [0 if math.isnan(max_flip) else max_flip, 0.01]) * 1.15
    fell = max([-v for v in deltas if not math.isnan(v)] + [0 if math.isnan(max_drop) else max_drop, 0.01]) * 1.15
    rose = max([v for v in deltas if not math.isnan(v)] + [fell * 0.15])
    panels = {"s-flip": _scale(FLIP_PANEL, 0.0, flip_top), "delta": _scale(DELTA_PANEL, -fell, rose * 1.15)}
    parts = [f"<rect class='panel' x='{PLOT_LEFT}' y='{top}' width='{PLOT_W - PLOT_LEFT - PLOT_RIGHT}' "
             f"height='{bottom - top}'/>" for top, bottom in (FLIP_PANEL, DELTA_PANEL)]
    for panel, tolerance, css in (("s-flip", max_flip, "tol tol-flip"), ("delta", -max_drop, "tol tol-drop")):
        zero = panels[panel](0.0)
        tol_y = None if math.isnan(tolerance) else panels[panel](tolerance)
        parts.append(_hline("zero", zero, "0" if tol_y is None or abs(tol_y - zero) >= 9 else ""))
        if tol_y is not None:
            parts.append(_hline(css, tol_y, f"{tolerance:g}"))
    parts.append(f"<text class='panel-label' x='{PLOT_LEFT + 3}' y='{FLIP_PANEL[0] - 3}'>flip rate</text>"
                 f"<text class='panel-label' x='{PLOT_LEFT + 3}' y='{DELTA_PANEL[0] - 3}'>\u0394 metric</text>")
    for level in levels:
        parts.append(f"<text class='tick' x='{x(level):.1f}' y='{TICK_Y}' text-anchor='middle'>{level:g}</text>")
    if not math.isnan(gate):
        parts.append(f"<line class='gate' data-level='{gate:g}' x1='{x(gate):.1f}' x2='{x(gate):.1f}' "
                     f"y1='{FLIP_PANEL[0]}' y2='{DELTA_PANEL[1]}'><title>gated level {gate:g}</title></line>"
                     f"<text class='gate-label' x='{x(gate):.1f}' y='{FLIP_PANEL[0] - 3}' "
                     "text-anchor='middle'>gate</text>")
    described = []
    for key, label, css in ROBUSTNESS_SERIES:
        y = panels["s-flip" if css == "s-flip" else "delta"]
        points = [(lv, _number(r.get(key))) for lv, r in zip(levels, rows, strict=True)]
        points = [(lv, v) for lv, v in points if not math.isnan(v)]
        if not points:
            continue
        described.append(f"{label} " + ", ".join(f"{v:.3f}" for _, v in points))
        xy = " ".join(f"{x(lv):.1f},{y(v):.1f}" for lv, v in points)
        marks = "".join(_marker(css, x(lv), y(v), f"{name} level {lv:g}: {label} {v:.3f}") for lv, v in points)
        parts.append(f"<g class='series {css}' data-key='{key}'><polyline points='{xy}'/>{marks}</g>")
    summary = (f"{name}, levels {', '.join(f'{lv:g}' for lv in levels)}: {'; '.join(described)}"
               + ("" if math.isnan(gate) else f"; gated level {gate:g}"))
    return (f"<svg class='rob-plot' viewBox='0 0 {PLOT_W} {PLOT_H}' width='{PLOT_W}' height='{PLOT_H}' role='img' "
            f"aria-label='{_esc(summary, quote=True)}' data-perturbation='{_esc(name, quote=True)}'>"
            f"{''.join(parts)}</svg>")


def _scale(panel: tuple[int, int], low: float, high: float):
    top, bottom = panel
    return lambda v: bottom - (v - low) / (high - low) * (bottom - top)


def _hline(css: str, y: float, label: str) -> str:
    """A horizontal line across the plot, labelled in the left margin unless `label` is empty (it would
    overprint a neighbouring label)."""
    line = f"<line class='{css}' x1='{PLOT_LEFT}' x2='{PLOT_W - PLOT_RIGHT}' y1='{y:.1f}' y2='{y:.1f}'/>"
    if not label:
        return line
    return line + f"<text class='tick {css}' x='{PLOT_LEFT - 3}' y='{y + 3:.1f}' text-anchor='end'>{_esc(label)}</text>"


def _marker(css: str, cx: float, cy: float, title: str) -> str:
    """Circle, square or triangle, so the series stay apart without colour."""
    tip = f"<title>{_esc(title)}</title>"
    if css == "s-flip":
        return f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='2.8'>{tip}</circle>"
    if css == "s-iou":
        return f"<rect x='{cx - 2.6:.1f}' y='{cy - 2.6:.1f}' width='5.2' height='5.2'>{tip}</rect>"
    return f"<path d='M{cx:.1f},{cy - 3.4:.1f} L{cx + 3.2:.1f},{cy + 2.4:.1f} L{cx - 3.2:.1f},{cy + 2.4:.1f} Z'>{tip}</path>"


def _plot_legend() -> str:
    items = []
    for key, label, css in ROBUSTNESS_SERIES:
        items.append(f"<span><svg class='rob-key' width='22' height='10' aria-hidden='true'><g class='series {css}'>"
                     f"<polyline points='1,5 21,5'/>{_marker(css, 11, 5, label)}</g></svg>{_esc(label)}</span>")
    items.append("<span><svg class='rob-key' width='22' height='10' aria-hidden='true'><line class='tol' x1='1' "
                 "x2='21' y1='5' y2='5'/></svg>tolerance</span>")
    items.append("<span><svg class='rob-key' width='10' height='12' aria-hidden='true'><line class='gate' x1='5' "
                 "x2='5' y1='0' y2='12'/></svg>gated level</span>")
    return f"<div class='legend rob-legend'>{''.join(items)}</div>"


# --------------------------------------------------------------------------- data quality


def _data_quality_section(cases: list[CaseResult]) -> str:
    """Findings per dataset, once each: every case of a dataset carries the same guardrail findings."""
    by_dataset: dict[str, dict[tuple, dict]] = {}
    for case in cases:
        findings = case.extra.get("data_quality")
        if not isinstance(findings, list):
            continue
        seen = by_dataset.setdefault(case.dataset, {})
        for f in findings:
            if isinstance(f, dict):
                seen.setdefault((str(f.get("kind")), str(f.get("image_id")), str(f.get("detail"))), f)
    blocks = []
    for dataset, unique in by_dataset.items():
        if not unique:
            continue
        findings = list(unique.values())
        kinds = ", ".join(f"{n} {k}" for k, n in Counter(str(f.get("kind")) for f in findings).items())
        rows = "".join(f"<tr><td>{_esc(str(f.get('kind')))}</td><td><code>{_esc(str(f.get('image_id') or '(dataset)'))}"
                       f"</code></td><td>{_esc(str(f.get('detail', '')))}</td></tr>" for f in findings[:MAX_EXTRA_ROWS])
        more = len(findings) - MAX_EXTRA_ROWS
        note = f"<p class='note'>&hellip; and {more} more not shown.</p>" if more > 0 else ""
        blocks.append(f"<details class='dq' data-dataset='{_esc(dataset, quote=True)}'{' open' if len(findings) <= 20 else ''}>"
                      f"<summary><b>{_esc(dataset)}</b>: {len(findings)} finding{'s' if len(findings) != 1 else ''} "
                      f"({_esc(kinds)})</summary><table class='extra dq'><thead><tr><th>kind</th><th>image id</th>"
                      f"<th>detail</th></tr></thead><tbody>{rows}</tbody></table>{note}</details>")
    if not blocks:
        return ""
    return f"<h2 id='fm-data-quality'>Data quality</h2>{''.join(blocks)}"


def _rank(outcome: str) -> int:
    return OUTCOME_ORDER.index(outcome) if outcome in OUTCOME_ORDER else len(OUTCOME_ORDER)


def _header(results: RunResults) -> str:
    meta = [f"<span>run {_esc(results.created or 'time unknown')}</span>",
            f"<span>commit <code>{_esc(results.git_commit or 'unknown')}</code></span>",
            f"<span>fmtest {_esc(results.fmtest_version)}</span>"]
    env = "".join(f"<li>{_esc(str(k))} <code>{_esc(str(v))}</code></li>" for k, v in results.environment.items())
    config = ""
    if results.config:
        dumped = json.dumps(results.config, indent=1, sort_keys=True, default=str)
        config = f"<details><summary>suite config</summary><pre class='config'>{_esc(dumped)}</pre></details>"
    return (f"<header><h1>fmtest scoreboard</h1><p class='meta'>{''.join(meta)}</p>"
            f"<ul class='env'>{env}</ul>{config}</header>")


def _counts(cases: list[CaseResult]) -> str:
    """Outcome totals, doubling as filters for the case list below."""
    boxes = []
    for outcome in OUTCOME_ORDER:
        n = sum(c.outcome == outcome for c in cases)
        boxes.append(f"<label class='o-{outcome}'><input type='checkbox' checked data-outcome='{outcome}'> "
                     f"<span class='badge'>{OUTCOME_WORD[outcome]}</span> {n}</label>")
    return f"<div class='counts' role='group' aria-label='show cases'>{len(cases)} cases: {''.join(boxes)}</div>"


def _matrix(cases: list[CaseResult]) -> str:
    pipelines = list(dict.fromkeys(c.pipeline for c in cases))
    datasets = list(dict.fromkeys(c.dataset for c in cases))
    by_pair: dict[tuple[str, str], list[CaseResult]] = {}
    for case in cases:  # robustness cases share their base case's pipeline and dataset
        by_pair.setdefault((case.pipeline, case.dataset), []).append(case)
    head = "".join(f"<th scope='col'>{_esc(d)}</th>" for d in datasets)
    rows = []
    for pipeline in pipelines:
        cells = "".join(_matrix_cell(by_pair.get((pipeline, d), []), f"{pipeline}-{d}") for d in datasets)
        rows.append(f"<tr><th scope='row' class='row-head'>{_esc(pipeline)}</th>{cells}</tr>")
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
        links.append(f"<a class='sub o-{_esc(other.outcome, quote=True)}' href='#{_esc(other.id, quote=True)}' "
                     f"title='{_esc(other.message or other.id, quote=True)}'><span class='badge'>"
                     f"{_esc(OUTCOME_WORD.get(other.outcome, other.outcome.upper()))}</span> {_esc(label)}</a>")
    if robust:
        worst = _worst(c.outcome for c in robust)
        bad = sum(c.outcome in ("failed", "error") for c in robust)
        links.append(f"<a class='sub o-{_esc(worst, quote=True)}' href='#{_esc(_robustness_row_id(robust[0]), quote=True)}'"
                     f"><span class='badge'>{_esc(OUTCOME_WORD.get(worst, worst.upper()))}</span> robustness "
                     f"{bad}/{len(robust)} failed</a>")
    worst = _worst(c.outcome for c in cases)
    data_case = _esc((main or robust[0]).id, quote=True)
    return f"<td class='cell o-{_esc(worst, quote=True)}' data-case='{data_case}'>{''.join(links)}</td>"


def _worst(outcomes) -> str:
    return min(outcomes, key=lambda o: CELL_COLOUR_ORDER.index(o) if o in CELL_COLOUR_ORDER else len(CELL_COLOUR_ORDER))


def _cell_link(case: CaseResult) -> str:
    lines = [f"<span class='badge'>{_esc(OUTCOME_WORD.get(case.outcome, case.outcome.upper()))}</span>"]
    name = main_metric(case)
    if case.outcome == "skipped" or (case.outcome == "error" and not case.metrics):
        lines.append(f"<span class='reason'>{_esc(_first_line(case.message) or case.outcome)}</span>")
    elif name is not None:
        lines.append(f"<span class='metric'>{_esc(name)} {fmt_number(case.metrics.get(name))}</span>")
        interval = _interval(case, name)
        if interval:
            lines.append(f"<span class='ci'>{interval}</span>")
        gate = gate_for(case, name)
        if gate:
            lines.append(f"<span class='thr'>{'max' if gate.upper else 'threshold'} {fmt_number(gate.limit, 2)}</span>")
        n_images, n_defective = image_counts(case)
        if n_images is not None:
            lines.append(f"<span class='n'>n={n_images}" + (f" ({n_defective} NOK)" if n_defective is not None else "")
                         + "</span>")
    if regressed_metrics(case):
        lines.append(f"<span class='regressed'>&#9660; regressed: {_esc(', '.join(regressed_metrics(case)))}</span>")
    title = _esc(case.message or "", quote=True)
    return f"<a href='#{_esc(case.id, quote=True)}' title='{title}'>{''.join(lines)}</a>"


def _interval(case: CaseResult, name: str) -> str:
    lo, hi = case.metrics.get(f"{name}_ci_low"), case.metrics.get(f"{name}_ci_high")
    return "" if lo is None or hi is None else f"[{fmt_number(lo)}, {fmt_number(hi)}]"


def _first_line(text: str | None, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def _case_details(index: int, case: CaseResult, history_link: str | None) -> str:
    """A collapsed summary line; the body is filled from the JSON script next to it when opened."""
    name = main_metric(case)
    headline = ""
    if name is not None and name in case.metrics:
        headline = f"{_esc(name)} {fmt_number(case.metrics[name])} {_interval(case, name)}"
        gate = gate_for(case, name)
        if gate:
            headline += f" / {'max' if gate.upper else 'threshold'} {fmt_number(gate.limit, 2)}"
    history = f" <a href='{_esc(history_link, quote=True)}'>history</a>" if history_link else ""
    payload = {"detail_html": _detail_html(case, history_link), **_image_rows(case.images)}
    outcome = _esc(case.outcome, quote=True)
    return (f"<details class='case o-{outcome}' id='{_esc(case.id, quote=True)}' data-index='{index}' "
            f"data-outcome='{outcome}'><summary><span class='badge'>"
            f"{_esc(OUTCOME_WORD.get(case.outcome, case.outcome.upper()))}</span>"
            f"<span class='case-id'>{_esc(case.id)}</span><span class='headline'>{headline}</span>"
            f"<span class='summary-msg'>{_esc(_first_line(case.message))}</span>{history}</summary>"
            f"<div class='case-body'></div></details>"
            f"<script type='application/json' id='fm-case-data-{index}'>{_json_for_script(payload)}</script>")


def _json_for_script(payload: object) -> str:
    """JSON that cannot end its <script> element early, whatever the strings in it contain."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _detail_html(case: CaseResult, history_link: str | None) -> str:
    parts = [f"<p class='note'>{_esc(case.task)} &middot; pipeline <b>{_esc(case.pipeline)}</b> &middot; dataset "
             f"<b>{_esc(case.dataset)}</b>"
             + (f" &middot; <a href='{_esc(history_link, quote=True)}'>metric history</a>" if history_link else "")
             + "</p>"]
    if case.message:
        parts.append(f"<pre class='message'>{_esc(case.message)}</pre>")
    if case.metrics or case.thresholds:
        parts.append("<h3>Metrics</h3>" + _metrics_table(case))
    parts.append(_provenance(case))
    for key in [*EXTRA_TITLES, *(k for k in case.extra if k not in EXTRA_TITLES)]:
        if key in case.extra and not (key == "invalid_answers" and case.extra[key] == 0):  # only LVLMs have any
            title = EXTRA_TITLES.get(key, key.replace("_", " ").capitalize())
            parts.append(f"<h3>{_esc(title)}</h3>{_extra_section(key, case.extra[key])}")
    if case.thumbnails:
        parts.append("<h3>Worst images</h3>" + _thumbnails(case))
    if case.images:
        parts.append(f"<h3>Images ({len(case.images)})</h3>" + _image_table_shell(case.images))
    return "".join(parts)


def _metrics_table(case: CaseResult) -> str:
    """One row per metric: value, its interval, its threshold and whether it meets it; then bare settings."""
    case_gates = gates(case)
    names = [n for n in dict.fromkeys([*(g.metric for g in case_gates if g.metric), *case.metrics])
             if not n.endswith(("_ci_low", "_ci_high"))]
    rows = []
    for name in names:
        value, gate = case.metrics.get(name), gate_for(case, name)
        limit = verdict = ""
        if gate:
            limit = f"{'&le;' if gate.upper else '&ge;'} {fmt_number(gate.limit, 2)}"
            miss = "above" if gate.upper else "below"
            verdict = (f"<span class='badge o-{'passed' if gate.met(value) else 'failed'}'>"
                       f"{'meets' if gate.met(value) else miss}</span>")
        rows.append(f"<tr><th scope='row'>{_esc(name)}</th><td class='num'>{_esc(fmt_number(value))}</td>"
                    f"<td class='num'>{_interval(case, name)}</td><td class='num'>{limit}</td><td>{verdict}</td></tr>")
    for gate in (g for g in case_gates if g.metric is None):
        rows.append(f"<tr><th scope='row'>{_esc(gate.name)}</th><td></td><td></td>"
                    f"<td class='num'>{fmt_number(gate.limit)}</td><td class='note'>setting</td></tr>")
    return ("<table class='metrics'><thead><tr><th>metric</th><th class='num'>value</th><th class='num'>95 % CI</th>"
            f"<th class='num'>threshold</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _provenance(case: CaseResult) -> str:
    items = [("model", case.model_sha256), ("config", case.config_fingerprint),
             ("dataset", case.dataset_fingerprint),
             ("duration", None if case.duration_s is None else f"{case.duration_s:.1f} s")]
    shown = [f"{label} <code>{_esc(str(value))}</code>" for label, value in items if value is not None]
    return f"<p class='note'>{' &middot; '.join(shown)}</p>" if shown else ""


def _extra_section(key: str, value: object) -> str:
    """Known sections get their own touch (regression badges, risk notes); anything else renders generically."""
    if key == "regression" and isinstance(value, dict):
        rows = [{"metric": metric, **row} for metric, row in value.items() if isinstance(row, dict)]
        return _records_table(rows)
    if key == "risk" and isinstance(value, dict):
        return _mapping_table(value, notes=True)
    if key == "invalid_answers" and isinstance(value, int | float):
        return (f"<p class='warn'>{fmt_number(value)} model answer(s) could not be parsed; "
                "each is counted as NOK.</p>")
    return _generic(value)


def _generic(value: object) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _records_table(value)
    if isinstance(value, dict):
        return _mapping_table(value)
    return f"<p>{_esc(_cell_text(value))}</p>"


def _records_table(records: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in records for k in r))
    body = []
    for record in records[:MAX_EXTRA_ROWS]:
        cells = "".join(_record_cell(col, record.get(col)) for col in columns)
        body.append(f"<tr>{cells}</tr>")
    more = len(records) - MAX_EXTRA_ROWS
    note = f"<p class='note'>&hellip; and {more} more not shown.</p>" if more > 0 else ""
    head = "".join(f"<th>{_esc(str(c).replace('_', ' '))}</th>" for c in columns)
    return f"<table class='extra'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def _record_cell(column: str, value: object) -> str:
    if column == "outcome" and isinstance(value, str):
        css = value if value in OUTCOME_WORD else "skipped"
        return f"<td><span class='badge o-{_esc(css)}'>{_esc(OUTCOME_WORD.get(value, value.upper()))}</span></td>"
    if column == "regressed" and isinstance(value, bool):
        return (f"<td><span class='badge o-{'failed' if value else 'passed'}'>"
                f"{'REGRESSED' if value else 'ok'}</span></td>")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f"<td{' class=num' if numeric else ''}>{_esc(_cell_text(value))}</td>"


def _mapping_table(mapping: dict, *, notes: bool = False) -> str:
    """Key/value rows; `x_ci_low`/`x_ci_high` keys are folded into x's row as its interval."""
    rows = []
    for key, value in mapping.items():
        key = str(key)
        bounds = (mapping.get(f"{key}_ci_low"), mapping.get(f"{key}_ci_high"))
        if key.endswith(("_ci_low", "_ci_high")) and key.rsplit("_ci_", 1)[0] in mapping:
            continue
        if all(isinstance(b, int | float) for b in bounds):
            value = {"value": value, "ci_low": bounds[0], "ci_high": bounds[1]}
        note = next((text for prefix, text in RISK_NOTES.items() if key.startswith(prefix)), "") if notes else ""
        if isinstance(value, dict) and isinstance(value.get("note") or value.get("label"), str):
            note = value.get("note") or value.get("label")
        numeric = isinstance(value, int | float | dict | list) and not isinstance(value, bool)
        rows.append(f"<tr><th scope='row'>{_esc(str(key).replace('_', ' '))}</th>"
                    f"<td{' class=num' if numeric else ''}>{_esc(_cell_text(value))}</td>"
                    + (f"<td class='note'>{_esc(note)}</td>" if notes else "") + "</tr>")
    return f"<table class='extra'><tbody>{''.join(rows)}</tbody></table>"


def _cell_text(value: object) -> str:
    """Numbers, intervals ({value, ci_low, ci_high} or [lo, hi]) and small nested dicts as short text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or isinstance(value, int | float):
        return fmt_number(value)
    if isinstance(value, list | tuple):
        if len(value) == 2 and all(isinstance(v, int | float) for v in value):
            return f"[{fmt_number(value[0])}, {fmt_number(value[1])}]"
        return ", ".join(_cell_text(v) for v in value)
    if isinstance(value, dict):
        point = next((value[k] for k in ("value", "estimate", "rate") if k in value), None)
        lo = next((value[k] for k in ("ci_low", "low", "lower") if k in value), None)
        hi = next((value[k] for k in ("ci_high", "high", "upper") if k in value), None)
        if point is not None and lo is not None and hi is not None:
            return f"{fmt_number(point)} [{fmt_number(lo)}, {fmt_number(hi)}]"
        return "; ".join(f"{k}: {_cell_text(v)}" for k, v in value.items() if k not in ("note", "label"))
    return str(value)


def _thumbnails(case: CaseResult) -> str:
    figures = []
    for thumb in case.thumbnails:
        data = "".join(thumb.png_base64.split())
        if not _BASE64.fullmatch(data):
            figures.append(f"<figure><figcaption>{_esc(thumb.id)}: thumbnail unreadable</figcaption></figure>")
            continue
        caption = thumb.caption or thumb.id
        figures.append(f"<figure data-image-id='{_esc(thumb.id, quote=True)}' title='show in the table'>"
                       f"<img src='data:image/png;base64,{data}' alt='{_esc(caption, quote=True)}'>"
                       f"<figcaption>{_esc(caption)}</figcaption></figure>")
    legend = ("<div class='legend'><span><i class='gt'></i>ground truth</span><span><i class='pred'></i>prediction"
              "</span><span><i class='ign'></i>not scored</span></div>")
    return f"{legend}<div class='thumbs'>{''.join(figures)}</div>"


def _image_columns(images: list[ImageResult]) -> list[str]:
    """Optional columns only when some image has a value: no empty IoU column for a classifier."""
    return [c for c in IMAGE_COLUMNS
            if c in ALWAYS_SHOWN_COLUMNS or any(getattr(img, c) is not None for img in images)]


def _image_rows(images: list[ImageResult]) -> dict:
    columns = _image_columns(images)
    rows = [[image_outcome(img) if c == "outcome" else getattr(img, c) for c in columns] for img in images]
    return {"columns": columns, "rows": rows}


def image_outcome(image: ImageResult) -> str:
    """What kind of right or wrong an image is: slip (defect passed as OK) is the costly one."""
    if image.error is not None:
        return "error"
    if image.label == image.predicted:
        return "correct"
    return "slip" if image.label == "NOK" else "false alarm"


def _image_table_shell(images: list[ImageResult]) -> str:
    """Controls and an empty table; scoreboard.js fills one page of rows at a time."""
    columns = _image_columns(images)
    options = "".join(f"<option value='{_esc(v, quote=True)}'>{_esc(label)}</option>" for v, label in IMAGE_OUTCOMES)
    head = "".join(f"<th data-key='{c}' class='{c}{' num' if c in ('score', 'iou') else ''}'>"
                   f"<button type='button'>{c}</button></th>" for c in columns)
    return ("<div class='images'><div class='image-controls'>"
            "<label>show <select class='outcome-filter'><option value=''>all</option>"
            f"{options}</select></label>"
            "<input type='search' placeholder='filter: id, label, reasoning...' aria-label='filter images'>"
            "</div><div class='pager'><button type='button' class='prev'>&larr; previous</button>"
            "<span class='page-status'></span><button type='button' class='next'>next &rarr;</button></div>"
            f"<table class='images'><thead><tr>{head}</tr></thead><tbody></tbody></table></div>")
