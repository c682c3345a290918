"""The scoreboard's fidelity section: for each case that departs from the study, every departure with what fmtest
does, what the study or its upstream code does, and why; each case's row and details link here."""

from __future__ import annotations

from fmtest.report.fidelity import FIDELITY_DOC
from fmtest.report.html_format import esc
from fmtest.verdict.results import CaseResult


def fidelity_id(case: CaseResult) -> str:
    """The anchor of a case's rows in the fidelity section."""
    return f"fm-fidelity-{case.id}"


def fidelity_section(cases: list[CaseResult]) -> str:
    """Every departure of every case that has one (study cases first, in run order), or "" when none has."""
    shown = [c for c in cases if c.departures and c.task != "robustness"]
    shown.sort(key=lambda c: not c.study)
    if not shown:
        return ""
    rows = []
    for case in shown:
        for index, d in enumerate(case.departures):
            head = (f"<th scope='row' rowspan='{len(case.departures)}' id='{esc(fidelity_id(case), quote=True)}'>"
                    f"<a href='#{esc(case.id, quote=True)}'>{esc(case.id)}</a></th>") if index == 0 else ""
            comparable = "" if d.comparable else " <span class='flag'>not the study's model</span>"
            rows.append(f"<tr>{head}<td><b>{esc(d.name)}</b>{comparable}</td><td>{esc(d.ours)}</td>"
                        f"<td>{esc(d.upstream)}</td><td>{esc(d.reason)}</td><td>{esc(d.kind)}</td></tr>")
    return ("<h2 id='fm-fidelity'>Fidelity to the study</h2><p class='note'>How each case departs from the study's run "
            "of it, for the settings of this run (the study preset's table: "
            f"<code>{esc(FIDELITY_DOC)}</code>). <b>differs</b>: the paper or its code says what it did, and fmtest "
            "does otherwise; <b>unstated</b>: neither says, so fmtest's setting is a choice.</p>"
            "<div class='table-wrap'><table class='fidelity'><thead><tr><th>case</th><th>departure</th><th>fmtest</th>"
            f"<th>study / upstream</th><th>why</th><th>kind</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


__all__ = ["fidelity_id", "fidelity_section"]
