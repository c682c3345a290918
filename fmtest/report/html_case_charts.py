"""A case's verdicts at a glance, computed from its per-image rows alone: the order images are shown in
(worst first), a confusion matrix, a histogram of scores of good vs defective parts with the operating
threshold, and the per-group breakdown the evaluation records."""

from __future__ import annotations

import math

from fmtest.metrics.specs import format_value, label
from fmtest.report.html_format import esc, number
from fmtest.util.text import plural
from fmtest.verdict.gates import gate_for
from fmtest.verdict.results import CaseResult, ImageResult

N_BINS = 20
HIST_W, HIST_H, HIST_LEFT, HIST_RIGHT, HIST_TOP, HIST_BOTTOM = 420, 170, 34, 10, 22, 136
OUTCOME_RANK = {"slip": 0, "false alarm": 1, "error": 2, "correct": 3}


def image_outcome(image: ImageResult) -> str:
    """What kind of right or wrong an image is: slip (defect passed as OK) is the costly one."""
    if image.error is not None:
        return "error"
    if image.label == image.predicted:
        return "correct"
    return "slip" if image.label == "NOK" else "false alarm"


def worst_first(images: list[ImageResult]) -> list[ImageResult]:
    """Slips, then false alarms, then errors, then correct images by lowest IoU (no IoU last).

    Within slips the most confident (lowest score) first, within false alarms the highest score first.
    """
    def key(image: ImageResult) -> tuple:
        outcome = image_outcome(image)
        score = number(image.score)
        confident = (score if outcome == "slip" else -score if outcome == "false alarm" else 0.0)
        iou = number(image.iou)
        return (OUTCOME_RANK[outcome], math.inf if math.isnan(confident) else confident,
                math.inf if math.isnan(iou) else iou, image.id)
    return sorted(images, key=key)


def confusion_matrix(images: list[ImageResult]) -> str:
    """True label x verdict, each cell a filter of the image table (data-outcome) and its share of the row.

    An unusable answer counts as a NOK verdict here, as in every metric; it is also listed as an error."""
    counts = {(t, p): sum(i.label == t and i.predicted == p for i in images) for t in ("OK", "NOK") for p in ("OK", "NOK")}
    names = {("OK", "OK"): "passed", ("OK", "NOK"): "false alarm", ("NOK", "OK"): "slip", ("NOK", "NOK"): "found"}
    rows = []
    for truth, heading in (("OK", "good part (OK)"), ("NOK", "defective part (NOK)")):
        total = counts[truth, "OK"] + counts[truth, "NOK"]
        cells = []
        for verdict in ("OK", "NOK"):
            n = counts[truth, verdict]
            word = names[truth, verdict]
            share = f"{n / total:.1%}" if total else "n/a"
            bad = " bad" if truth != verdict and n else ""
            cells.append(f"<td class='num cm-cell{bad}' data-outcome='{word}' title='show these images in the table'>"
                         f"<b>{n}</b> {esc(word)}"
                         f"<span class='note'>{share}</span></td>")
        rows.append(f"<tr><th scope='row'>{heading}</th>{''.join(cells)}</tr>")
    errors = sum(i.error is not None for i in images)
    note = (f"<p class='note'>{plural(errors, 'answer')} could not be used; each counts as NOK.</p>" if errors else "")
    return ("<table class='confusion'><thead><tr><th></th><th scope='col'>verdict OK</th><th scope='col'>verdict NOK"
            f"</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{note}")


def operating_threshold(case: CaseResult) -> tuple[float, float, str] | None:
    """(low, high, wording) of where the verdict changes on the score axis: when every NOK verdict scores
    above every OK verdict, the verdict switches somewhere in the gap between them, drawn as a band. None when
    the verdict is not one cut on this score (masks decide, or groups were fitted with thresholds of their own).
    """
    scored = [(number(i.score), i.predicted) for i in case.images if i.error is None and not math.isnan(number(i.score))]
    passed = [s for s, p in scored if p == "OK"]
    flagged = [s for s, p in scored if p == "NOK"]
    if passed and flagged and max(passed) < min(flagged):
        return max(passed), min(flagged), "verdict switches here"
    return None


def score_histogram(case: CaseResult) -> str:
    """Inline SVG: counts of good and defective parts per score bin, side by side, with the threshold."""
    good = [number(i.score) for i in case.images if i.label == "OK"]
    bad = [number(i.score) for i in case.images if i.label == "NOK"]
    good, bad = [s for s in good if not math.isnan(s)], [s for s in bad if not math.isnan(s)]
    if not good and not bad:
        return "<p class='note'>This pipeline gives no scores, only verdicts.</p>"
    threshold = operating_threshold(case)
    values = good + bad + ([threshold[0], threshold[1]] if threshold else [])
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0
    width = (hi - lo) / N_BINS
    plot_w, plot_h = HIST_W - HIST_LEFT - HIST_RIGHT, HIST_BOTTOM - HIST_TOP

    def bins(scores: list[float]) -> list[int]:
        counts = [0] * N_BINS
        for s in scores:
            counts[min(N_BINS - 1, int((s - lo) / width))] += 1
        return counts

    good_bins, bad_bins = bins(good), bins(bad)
    top = max(good_bins + bad_bins)

    def x(value: float) -> float:
        return HIST_LEFT + (value - lo) / (hi - lo) * plot_w

    parts = [f"<rect class='panel' x='{HIST_LEFT}' y='{HIST_TOP}' width='{plot_w}' height='{plot_h}'/>"]
    bar_w = plot_w / N_BINS / 2
    for k in range(N_BINS):
        for offset, css, word, counts in ((0, "h-ok", "good (OK)", good_bins), (1, "h-nok", "defective (NOK)", bad_bins)):
            n = counts[k]
            if not n:
                continue
            height = n / top * plot_h
            span = f"{format_value(lo + k * width)} to {format_value(lo + (k + 1) * width)}"
            parts.append(f"<rect class='bar {css}' x='{HIST_LEFT + (2 * k + offset) * bar_w:.1f}' "
                         f"y='{HIST_BOTTOM - height:.1f}' width='{bar_w:.1f}' height='{height:.1f}'>"
                         f"<title>{word}, score {span}: {n} image{'s' if n != 1 else ''}</title></rect>")
    if threshold:
        low, high, wording = threshold
        if high > low:
            parts.append(f"<rect class='switch' x='{x(low):.1f}' y='{HIST_TOP}' width='{x(high) - x(low):.1f}' "
                         f"height='{plot_h}'><title>{esc(wording)}: between {format_value(low)} and "
                         f"{format_value(high)}</title></rect>")
        middle = x((low + high) / 2)
        parts.append(f"<line class='threshold' x1='{middle:.1f}' x2='{middle:.1f}' y1='{HIST_TOP - 4}' "
                     f"y2='{HIST_BOTTOM}'/><text class='threshold-label' x='{middle:.1f}' y='{HIST_TOP - 7}' "
                     f"text-anchor='middle'>{esc(wording)}</text>")
    parts.append(f"<text class='tick' x='{HIST_LEFT - 4}' y='{HIST_TOP + 4}' text-anchor='end'>{top}</text>"
                 f"<text class='tick' x='{HIST_LEFT - 4}' y='{HIST_BOTTOM}' text-anchor='end'>0</text>"
                 f"<text class='tick' x='{HIST_LEFT}' y='{HIST_BOTTOM + 13}'>{format_value(lo)}</text>"
                 f"<text class='tick' x='{HIST_W - HIST_RIGHT}' y='{HIST_BOTTOM + 13}' text-anchor='end'>"
                 f"{format_value(hi)}</text>"
                 f"<text class='axis-label' x='{HIST_LEFT + plot_w / 2:.1f}' y='{HIST_BOTTOM + 26}' "
                 "text-anchor='middle'>score (higher = more defective)</text>")
    summary = (f"score histogram: {len(good)} good and {len(bad)} defective parts, scores {format_value(lo)} to "
               f"{format_value(hi)}" + (f"; {threshold[2]} at {format_value(threshold[0])}" if threshold else ""))
    legend = (f"<div class='legend'><span><i class='h-ok'></i>good (OK), n={len(good)}</span>"
              f"<span><i class='h-nok'></i>defective (NOK), n={len(bad)}</span></div>")
    note = "" if threshold else ("<p class='note'>No operating threshold: the verdict is not one cut on this score "
                                 "(masks decide, or each group has its own threshold).</p>")
    return (f"{legend}<svg class='histogram' viewBox='0 0 {HIST_W} {HIST_H}' width='{HIST_W}' height='{HIST_H}' "
            f"role='img' aria-label='{esc(summary, quote=True)}'>{''.join(parts)}</svg>{note}")


def breakdown_table(case: CaseResult) -> str:
    """One row per group or defect type (`CaseResult.breakdown`); a figure below the case's threshold is marked."""
    breakdown = case.breakdown
    if not isinstance(breakdown, dict) or not breakdown:
        return ""
    rows = {str(name): row for name, row in breakdown.items() if isinstance(row, dict)}
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    head = "".join(f"<th scope='col' class='num' title='{esc(c, quote=True)}'>{esc(label(c))}</th>" for c in columns)
    body = []
    for name, row in rows.items():
        cells = []
        for column in columns:
            value, gate = row.get(column), gate_for(case, column)
            missed = gate is not None and isinstance(value, int | float) and not gate.met(value)
            mark = (f" class='num below' title='{'above' if gate.upper else 'below'} the case threshold "
                    f"{format_value(gate.limit, 2)}'" if missed else " class='num'")
            cells.append(f"<td{mark}>{esc(format_value(value))}</td>")
        body.append(f"<tr><th scope='row'>{esc(name)}</th>{''.join(cells)}</tr>")
    return (f"<table class='breakdown'><thead><tr><th scope='col'>group</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")
