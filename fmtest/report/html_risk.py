"""The scoreboard's risk overview: each case's factory figures (slip and false-alarm rates, whether the test
set holds enough defectives) side by side; each case's details keep its full risk table."""

from __future__ import annotations

import dataclasses
import math

from fmtest.metrics.specs import format_value
from fmtest.report.html_format import cell_text, esc
from fmtest.verdict.results import CaseResult

# (heading, is a number): the table's columns after the case, also each value's label when a narrow window
# shows a case's row as a card
RISK_COLUMNS = (("slip rate [95 % CI]", True), ("slip rate, 95 % upper bound", True),
                ("false-alarm rate [95 % CI]", True), ("defectives: have / needed", True), ("verdict", False),
                ("recall at a training-set threshold for the false-alarm budget", True),
                ("AUROC (threshold-free)", True))


def risk_overview(cases: list[CaseResult]) -> str:
    """The factory figures of every case side by side; each case's details keep the full risk table."""
    rows = []
    for case in cases:
        if case.risk is None:
            continue
        risk = dataclasses.asdict(case.risk)
        rows.append(f"<tr data-case='{esc(case.id, quote=True)}'><th scope='row'><a href='#{esc(case.id, quote=True)}'>"
                    f"{esc(case.id)}</a></th>{_risk_cells(case, risk)}</tr>")
    if not rows:
        return ""
    head = "<th>case</th>" + "".join(f"<th{' class=num' if numeric else ''}>{esc(heading)}</th>"
                                     for heading, numeric in RISK_COLUMNS)
    return ("<h2 id='fm-risk'>Risk at the operating point</h2><div class='table-wrap'><table class='risk' id='fm-risk-table'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            "<p class='note'>A slip is a defective part passed as OK. &ldquo;Needed&rdquo; is how many defective "
            "images, with zero slips, it takes to show the target slip rate with 95 % confidence. The recall column "
            "moves the operating point to the score threshold that flags at most the false-alarm budget of the good "
            "<em>training</em> images (never the test images), and says how many good <em>test</em> parts that "
            "threshold really flagged: a budget it missed is said so. AUROC does not depend on the operating point "
            "and is not a factory figure.</p>")


def _risk_cells(case: CaseResult, risk: dict) -> str:
    needed = _risk_value(risk, "defectives_needed")
    have = risk.get("n_defective")
    target = risk.get("target_slip_rate")
    needed_text = f"{format_value(have)} / {cell_text(needed)}"
    if isinstance(target, int | float):
        needed_text += f" <span class='note'>for slip &lt; {target:.1%}</span>"
    cells = [esc(_with_interval(risk, "slip_rate")), esc(cell_text(_risk_value(risk, "slip_rate_upper"))),
             esc(_with_interval(risk, "false_alarm_rate")), needed_text, _risk_verdict(risk, have, needed),
             recall_at_budget(risk, case.train_scores), esc(cell_text(_risk_value(risk, "auroc")))]
    return "".join(f"<td{' class=num' if numeric else ''} data-label='{esc(heading, quote=True)}'><span>{cell}</span></td>"
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
    """Whether the test set can show the target at all, as a flag (not an outcome colour: no case passes or fails
    by it); the full sentence as its tooltip."""
    sentence = risk.get("verdict") if isinstance(risk.get("verdict"), str) else ""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (have, needed))
    if numbers:
        word = "enough defectives" if have >= needed else "<b>NOT</b> enough defectives"
        return f"<span class='flag' title='{esc(sentence, quote=True)}'>{word}</span>"
    return esc(sentence or "n/a")


def recall_at_budget(risk: dict, train_scores: list[float] | None) -> str:
    """The recall at the score threshold set on good training images for the false-alarm budget, with where that
    threshold comes from and the false-alarm rate it really gave on the good test images; a missed budget is said
    plainly."""
    recall = _risk_value(risk, "recall_at")
    if recall is None:
        return "<span class='note'>n/a (no scores on good training images)</span>"
    text = esc(cell_text(recall))
    budget, measured = risk.get("false_alarm_budget"), risk.get("false_alarm_rate_at_budget_threshold")
    if not isinstance(budget, int | float):
        return text
    origin = f"{len(train_scores)} good training images" if train_scores else "good training images"
    text += f" <span class='note'>threshold from {origin} for a {budget:.1%} budget"
    if isinstance(measured, int | float) and math.isfinite(measured):
        text += f"; on good test parts it flagged {measured:.1%}"
        if measured > budget:
            text += "</span> <span class='flag missed'>budget missed</span>"
            return text
    return text + "</span>"
