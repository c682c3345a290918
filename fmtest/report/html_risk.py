"""The scoreboard's risk overview: each case's factory figures (slip and false-alarm rates, whether the test
set holds enough defectives) side by side; each case's details keep its full risk table."""

from __future__ import annotations

import dataclasses
import math

from fmtest.report.html_format import cell_text, esc
from fmtest.verdict.results import CaseResult
from fmtest.metrics.specs import format_value

# (heading, is a number): the table's columns after the case, also each value's label when a narrow window
# shows a case's row as a card
RISK_COLUMNS = (("slip rate [95 % CI]", True), ("slip rate, 95 % upper bound", True),
                ("false-alarm rate [95 % CI]", True), ("defectives: have / needed", True), ("verdict", False),
                ("recall at false-alarm budget", True), ("AUROC (threshold-free)", True))


def risk_overview(cases: list[CaseResult]) -> str:
    """The factory figures of every case side by side; each case's details keep the full risk table."""
    rows = []
    for case in cases:
        if case.risk is None:
            continue
        risk = dataclasses.asdict(case.risk)
        rows.append(f"<tr data-case='{esc(case.id, quote=True)}'><th scope='row'><a href='#{esc(case.id, quote=True)}'>"
                    f"{esc(case.id)}</a></th>{_risk_cells(risk)}</tr>")
    if not rows:
        return ""
    head = "<th>case</th>" + "".join(f"<th{' class=num' if numeric else ''}>{esc(heading)}</th>"
                                     for heading, numeric in RISK_COLUMNS)
    return ("<h2 id='fm-risk'>Risk at the operating point</h2><div class='table-wrap'><table class='risk' id='fm-risk-table'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            "<p class='note'>A slip is a defective part passed as OK. &ldquo;Needed&rdquo; is how many defective "
            "images, with zero slips, it takes to show the target slip rate with 95 % confidence. AUROC does not "
            "depend on the operating point and is not a factory figure.</p>")


def _risk_cells(risk: dict) -> str:
    needed = _risk_value(risk, "defectives_needed")
    have = risk.get("n_defective")
    target = risk.get("target_slip_rate")
    needed_text = f"{format_value(have)} / {cell_text(needed)}"
    if isinstance(target, int | float):
        needed_text += f" <span class='note'>for slip &lt; {target:.1%}</span>"
    cells = [esc(_with_interval(risk, "slip_rate")), esc(cell_text(_risk_value(risk, "slip_rate_upper"))),
             esc(_with_interval(risk, "false_alarm_rate")), needed_text, _risk_verdict(risk, have, needed),
             _recall_at_budget(risk), esc(cell_text(_risk_value(risk, "auroc")))]
    return "".join(f"<td{' class=num' if numeric else ''} data-label='{esc(heading, quote=True)}'>{cell}</td>"
                   for (heading, numeric), cell in zip(RISK_COLUMNS, cells, strict=True))


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
        return cell_text(value)
    return f"{format_value(value)} [{format_value(lo)}, {format_value(hi)}]"


def _risk_verdict(risk: dict, have: object, needed: object) -> str:
    """A badge for whether the test set can show the target at all; the full sentence as its tooltip."""
    sentence = risk.get("verdict") if isinstance(risk.get("verdict"), str) else ""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (have, needed))
    if numbers:
        enough = have >= needed
        word = "enough defectives" if enough else "NOT enough defectives"
        return (f"<span class='badge o-{'passed' if enough else 'failed'}' title='{esc(sentence, quote=True)}'>"
                f"{word}</span>")
    return esc(sentence or "n/a")


def _recall_at_budget(risk: dict) -> str:
    recall = _risk_value(risk, "recall_at")
    if recall is None:
        return "<span class='note'>n/a (no scores)</span>"
    text = esc(cell_text(recall))
    budget, measured = risk.get("false_alarm_budget"), risk.get("false_alarm_rate_at_budget_threshold")
    if isinstance(budget, int | float):
        text += f" <span class='note'>budget {budget:.1%}"
        if isinstance(measured, int | float) and math.isfinite(measured):
            text += f", test false alarms {measured:.1%}"
        text += "</span>"
    return text
