"""The scoreboard's robustness section: a pipeline x perturbation matrix of outcomes at the gated severity
level, and per case an inline SVG plot of flip rate and metric change against severity."""

from __future__ import annotations

import dataclasses
import math

from fmtest.metrics.specs import format_metric, format_value
from fmtest.report.html_format import cell_text, esc, first_line, number, outcome_word
from fmtest.verdict.results import CaseResult, perturbation_of

ROBUSTNESS_SERIES = (("flip_rate", "flip rate", "s-flip"), ("delta_iou", "\u0394 IoU", "s-iou"),
                     ("delta_f2", "\u0394 F2", "s-f2"))
PLOTS_OPEN_LIMIT = 60  # more robustness cases than this: plot rows start collapsed, keeping the page light
PLOT_W, PLOT_H, PLOT_LEFT, PLOT_RIGHT = 220, 140, 40, 10
FLIP_PANEL, DELTA_PANEL, TICK_Y = (14, 58), (72, 116), 130  # y ranges (top, bottom) of the two panels


def robustness_section(cases: list[CaseResult]) -> str:
    """Which perturbations break which pipeline (a matrix), and how each one degrades with severity (plots)."""
    robust = [c for c in cases if c.task == "robustness"]
    if not robust:
        return ""
    perturbations = list(dict.fromkeys(perturbation_of(c) for c in robust))
    groups: dict[tuple[str, str], dict[str, CaseResult]] = {}
    for case in robust:
        groups.setdefault((case.pipeline, case.dataset), {})[perturbation_of(case)] = case
    head = "".join(f"<th scope='col'>{esc(p)}{_gate_heading(p, robust)}</th>" for p in perturbations)
    rows = []
    for (pipeline, dataset), by_name in groups.items():
        cells = "".join(_robustness_cell(by_name.get(p)) for p in perturbations)
        first = next(iter(by_name.values()))
        rows.append(f"<tr id='{esc(robustness_row_id(first), quote=True)}'><th scope='row' class='row-head'>"
                    f"{esc(pipeline)} <span class='note'>{esc(dataset)}</span></th>{cells}</tr>")
    open_attr = " open" if len(robust) <= PLOTS_OPEN_LIMIT else ""
    plots = "".join(_plot_row(pipeline, dataset, list(by_name.values()), open_attr)
                    for (pipeline, dataset), by_name in groups.items())
    return ("<h2 id='fm-robustness'>Robustness</h2>"
            f"<p class='note'>{_tolerance_note(robust)}</p>"
            "<div class='matrix-wrap'><table class='matrix rob-matrix' id='fm-rob-matrix'><thead><tr>"
            f"<th class='row-head'>pipeline / dataset</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            f"<h3>Metric vs severity</h3>{_plot_legend()}<div id='fm-rob-plots'>{plots}</div>")


def robustness_row_id(case: CaseResult) -> str:
    """The id of a pair's row in the robustness matrix, which the main matrix's cell links to."""
    return f"fm-rob-{case.pipeline}-{case.dataset}"


def _gate_heading(perturbation: str, cases: list[CaseResult]) -> str:
    levels = {number(c.robustness.gate_level) for c in cases if perturbation_of(c) == perturbation and c.robustness}
    levels = {v for v in levels if not math.isnan(v)}
    return f"<span class='gate-level'>gated at severity {levels.pop():g}</span>" if len(levels) == 1 else ""


def _tolerance_note(cases: list[CaseResult]) -> str:
    flips = {c.thresholds.get("max_flip_rate") for c in cases} - {None}
    drops = {c.thresholds.get("max_metric_drop") for c in cases} - {None}
    text = "Each cell: outcome at the gated severity level, the share of verdicts that flip there, and the worst " \
           "metric change."
    if len(flips) == 1 and len(drops) == 1:
        text += f" Tolerances: flip rate &le; {format_value(flips.pop(), 2)}, metric drop &le; {format_value(drops.pop())}."
    return text


def _robustness_cell(case: CaseResult | None) -> str:
    if case is None:
        return "<td class='cell empty' title='not run'>&ndash;</td>"
    outcome = esc(case.outcome, quote=True)
    lines = [f"<span class='badge'>{outcome_word(case.outcome)}</span>"]
    if case.metrics and case.outcome in ("passed", "failed"):  # a skipped case has no figure, only its reason
        limit = number(case.thresholds.get("max_flip_rate"))
        bound = "" if math.isnan(limit) else f" {'&le;' if number(case.metrics.get('flip_rate')) <= limit else '&gt;'} " \
                                              f"{format_value(limit, 2)}"
        lines.append(f"<span class='metric'>flip {format_value(case.metrics.get('flip_rate'))}{bound}</span>")
        drop = _worst_drop(case.metrics)
        if drop:
            lines.append(f"<span class='drop'>{esc(drop[0])} {drop[1]:+.3f}</span>")
    else:
        lines.append(f"<span class='reason'>{esc('skipped: ' if case.outcome == 'skipped' else '')}"
                     f"{esc(first_line(case.message) or case.outcome)}</span>")
    gate = case.robustness.gate_level if case.robustness else None
    title = case.message or f"{perturbation_of(case)}: within tolerance at level {cell_text(gate)}"
    return (f"<td class='cell o-{outcome}' data-case='{esc(case.id, quote=True)}'><a href='#{esc(case.id, quote=True)}'"
            f" title='{esc(title, quote=True)}'>{''.join(lines)}</a></td>")


LADDER_COLUMNS = (("flip_rate", "flip rate"), ("delta_iou", "\u0394 IoU"), ("delta_f2", "\u0394 F2"),
                  ("new_slips", "new slips"), ("new_false_alarms", "new false alarms"),
                  ("slip_rate", "slip rate"), ("false_alarm_rate", "false-alarm rate"))


def ladder_table(case: CaseResult) -> str:
    """A robustness case's ladder, one row per severity: each figure, its tolerance in the heading, and the result
    only where the gate is held (the gated level); a figure beyond its tolerance at another level is marked, not
    judged."""
    rows = _levels(case)
    gate = number(case.robustness.gate_level if case.robustness else None)
    limits = {"flip_rate": (number(case.thresholds.get("max_flip_rate")), True)}
    drop = number(case.thresholds.get("max_metric_drop"))
    limits.update({k: (-drop, False) for k in ("delta_iou", "delta_f2")})
    columns = [(k, text) for k, text in LADDER_COLUMNS if any(not math.isnan(number(r.get(k))) for r in rows)]
    head = "<th scope='col' class='num'>severity</th>"
    for key, text in columns:
        limit, upper = limits.get(key, (math.nan, True))
        bound = "" if math.isnan(limit) else f" <span class='note'>({'&le;' if upper else '&ge;'} {format_value(limit, 2)})</span>"
        head += f"<th scope='col' class='num'>{esc(text)}{bound}</th>"
    body = []
    for row in rows:
        gated = number(row["level"]) == gate
        cells = f"<th scope='row' class='num'>{number(row['level']):g}</th>"
        for key, _ in columns:
            value = number(row.get(key))
            limit, upper = limits.get(key, (math.nan, True))
            beyond = not math.isnan(limit) and not math.isnan(value) and (value > limit if upper else value < limit)
            mark = (" beyond' title='beyond the tolerance" + ("" if gated else "; this level is not gated")) if beyond else ""
            cells += f"<td class='num{mark}'>{esc(format_metric(key, row.get(key)))}</td>"
        result = (f"<span class='badge o-{esc(case.outcome, quote=True)}'>{outcome_word(case.outcome)}</span> gated"
                  if gated else "<span class='note'>not gated</span>")
        body.append(f"<tr{' class=gated' if gated else ''}>{cells}<td>{result}</td></tr>")
    name = esc(case.robustness.perturbation if case.robustness else "")
    return (f"<table class='ladder'><caption>{name}: one row per severity, the gate held at one</caption>"
            f"<thead><tr>{head}<th scope='col'>result</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _worst_drop(metrics: dict) -> tuple[str, float] | None:
    """The metric that fell most (or rose least) at the gate; None when no metric delta applies."""
    deltas = [(label, number(metrics.get(key))) for key, label, _ in ROBUSTNESS_SERIES[1:]]
    deltas = [(label, v) for label, v in deltas if not math.isnan(v)]
    return min(deltas, key=lambda d: d[1]) if deltas else None


def _levels(case: CaseResult) -> list[dict]:
    rows = [dataclasses.asdict(r) for r in case.robustness.levels] if case.robustness else []
    return sorted((r for r in rows if not math.isnan(number(r["level"]))), key=lambda r: number(r["level"]))


def _plot_row(pipeline: str, dataset: str, cases: list[CaseResult], open_attr: str) -> str:
    """One pipeline's plots in a <template>: scoreboard.js puts them in the page when the row is opened."""
    figures = "".join(_plot_figure(c) for c in cases)
    bad = sum(c.outcome in ("failed", "error") for c in cases)
    return (f"<details class='rob-plots'{open_attr} data-pipeline='{esc(pipeline, quote=True)}' "
            f"data-dataset='{esc(dataset, quote=True)}'><summary><b>{esc(pipeline)}</b> on {esc(dataset)}: "
            f"{bad} of {len(cases)} perturbations fail</summary>"
            f"<template><div class='rob-figures'>{figures}</div></template></details>")


def _plot_figure(case: CaseResult) -> str:
    name = perturbation_of(case)
    levels = _levels(case)
    body = _severity_plot(name, levels, number(case.robustness.gate_level if case.robustness else None),
                          number(case.thresholds.get("max_flip_rate")), number(case.thresholds.get("max_metric_drop"))
                          ) if levels else "<p class='note'>no levels recorded</p>"
    return (f"<figure class='rob-figure o-{esc(case.outcome, quote=True)}' data-case='{esc(case.id, quote=True)}'>"
            f"{body}<figcaption><span class='badge'>{outcome_word(case.outcome)}"
            f"</span> <a href='#{esc(case.id, quote=True)}'>{esc(name)}</a></figcaption></figure>")


def _severity_plot(name: str, rows: list[dict], gate: float, max_flip: float, max_drop: float) -> str:
    """Inline SVG: flip rate (top panel) and metric deltas (bottom panel) against severity level, with the
    gated level as a vertical line and each tolerance as a dashed line. NaN points are left out."""
    levels = [number(r["level"]) for r in rows]
    lo, hi = min(0.0, *levels), max(levels)
    hi = hi if hi > lo else lo + 1.0

    def x(level: float) -> float:
        return PLOT_LEFT + (level - lo) / (hi - lo) * (PLOT_W - PLOT_LEFT - PLOT_RIGHT)

    flips = [number(r.get("flip_rate")) for r in rows]
    deltas = [number(r.get(k)) for r in rows for k in ("delta_iou", "delta_f2")]
    flip_top = max([v for v in flips if not math.isnan(v)] + [0 if math.isnan(max_flip) else max_flip, 0.01]) * 1.15
    fell = max([-v for v in deltas if not math.isnan(v)] + [0 if math.isnan(max_drop) else max_drop, 0.01]) * 1.15
    rose = max([v for v in deltas if not math.isnan(v)] + [fell * 0.15])
    panels = {"s-flip": _scale(FLIP_PANEL, 0.0, flip_top), "delta": _scale(DELTA_PANEL, -fell, rose * 1.15)}
    parts = [f"<rect class='panel' x='{PLOT_LEFT}' y='{top}' width='{PLOT_W - PLOT_LEFT - PLOT_RIGHT}' "
             f"height='{bottom - top}'/>" for top, bottom in (FLIP_PANEL, DELTA_PANEL)]
    for panel, tolerance, css in (("s-flip", max_flip, "tol tol-flip"), ("delta", -max_drop, "tol tol-drop")):
        zero = panels[panel](0.0)
        tol_y = None if math.isnan(tolerance) else panels[panel](tolerance)
        # the flip panel's floor sits just above the delta panel's zero line: one "0" label, on the delta
        # panel, where zero means "no change"; the flip panel shows its top value instead
        parts.append(_hline("zero", zero, "0" if panel == "delta" and (tol_y is None or abs(tol_y - zero) >= 9) else ""))
        if tol_y is not None:
            parts.append(_hline(css, tol_y, f"{tolerance:g}"))
        if panel == "s-flip" and (tol_y is None or abs(tol_y - FLIP_PANEL[0]) >= 9):
            parts.append(f"<text class='tick' x='{PLOT_LEFT - 3}' y='{FLIP_PANEL[0] + 3}' text-anchor='end'>"
                         f"{flip_top:.2g}</text>")
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
        points = [(lv, number(r.get(key))) for lv, r in zip(levels, rows, strict=True)]
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
            f"aria-label='{esc(summary, quote=True)}' data-perturbation='{esc(name, quote=True)}'>"
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
    return line + f"<text class='tick {css}' x='{PLOT_LEFT - 3}' y='{y + 3:.1f}' text-anchor='end'>{esc(label)}</text>"


def _marker(css: str, cx: float, cy: float, title: str) -> str:
    """Circle, square or triangle, so the series stay apart without colour."""
    tip = f"<title>{esc(title)}</title>"
    if css == "s-flip":
        return f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='2.8'>{tip}</circle>"
    if css == "s-iou":
        return f"<rect x='{cx - 2.6:.1f}' y='{cy - 2.6:.1f}' width='5.2' height='5.2'>{tip}</rect>"
    return f"<path d='M{cx:.1f},{cy - 3.4:.1f} L{cx + 3.2:.1f},{cy + 2.4:.1f} L{cx - 3.2:.1f},{cy + 2.4:.1f} Z'>{tip}</path>"


def _plot_legend() -> str:
    items = []
    for key, label, css in ROBUSTNESS_SERIES:
        items.append(f"<span><svg class='rob-key' width='22' height='10' aria-hidden='true'><g class='series {css}'>"
                     f"<polyline points='1,5 21,5'/>{_marker(css, 11, 5, label)}</g></svg>{esc(label)}</span>")
    items.append("<span><svg class='rob-key' width='22' height='10' aria-hidden='true'><line class='tol' x1='1' "
                 "x2='21' y1='5' y2='5'/></svg>tolerance</span>")
    items.append("<span><svg class='rob-key' width='10' height='12' aria-hidden='true'><line class='gate' x1='5' "
                 "x2='5' y1='0' y2='12'/></svg>gated level</span>")
    return f"<div class='legend rob-legend'>{''.join(items)}</div>"
