"""`fmtest compare A B` as text: one table of every case's gated metrics in both runs with the change and its
paired 95 % bootstrap interval, then each case's new slips and new false alarms by image id, then which cases
would fail as a regression. A pure function of `fmtest.verdict.run_diff.RunDiff`."""

from __future__ import annotations

from fmtest.util.text import plural
from fmtest.verdict.regression import COMPARED
from fmtest.verdict.run_diff import RunDiff

HEADER = ("case", "metric", "A", "B", "change", "95% CI of change", "verdict")
_SHOWN_IMAGES = 20  # image ids listed per case and kind; the rest are counted


def compare_rows(diff: RunDiff) -> list[tuple[str, ...]]:
    """One row per (case, gated metric) in both runs; a case not compared is one row saying why."""
    rows: list[tuple[str, ...]] = []
    for case in diff.cases:
        c = case.comparison
        if c.status != COMPARED or not c.metrics:
            rows.append((c.case_id, "", "", "", "", "", c.message))
            continue
        for name, change in c.metrics.items():
            interval = (f"[{change.ci_low:+.3f}, {change.ci_high:+.3f}]"
                        if change.ci_low is not None and change.ci_high is not None else change.note or "none")
            if change.regressed:
                verdict = "REGRESSED" + ("" if change.significant is not False else " (within noise)")
            elif change.significant:
                verdict = "better" if (change.delta > 0) == change.higher_is_better else "worse, within tolerance"
            else:
                verdict = "no clear change"
            rows.append((c.case_id, name, f"{change.baseline:.3f}", f"{change.current:.3f}", f"{change.delta:+.3f}",
                         interval, verdict))
    return rows


def render_compare(diff: RunDiff, before: str, after: str) -> str:
    """The whole comparison as text, B (`after`) against A (`before`)."""
    rows = compare_rows(diff)
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    numbers = {2, 3, 4}
    lines = [f"A: {before}", f"B: {after}",
             (f"B against A, paired over the same images, tolerance {diff.tolerance:g}, "
              f"{diff.n_resamples} bootstrap resamples (the rules B recorded)"), ""]
    for row in [HEADER, *rows]:
        cells = [cell.rjust(w) if i in numbers else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                      strict=True))]
        lines.append("  ".join(cells).rstrip())
    for case in diff.cases:
        for noun, why, ids in (("new slip", "defective, B passes, A found", case.new_slips),
                               ("new false alarm", "good, B flags, A passed", case.new_false_alarms)):
            if ids:
                shown = ", ".join(ids[:_SHOWN_IMAGES]) + (f" and {len(ids) - _SHOWN_IMAGES} more"
                                                          if len(ids) > _SHOWN_IMAGES else "")
                lines.append(f"{case.case_id}: {plural(len(ids), noun)} ({why}): {shown}")
    lines.append("")
    regressed = diff.regressed
    if regressed:
        lines.append(f"REGRESSED: {plural(len(regressed), 'case')} would fail against A: {', '.join(regressed)}")
    else:
        lines.append(f"no case regresses against A ({plural(len(diff.cases), 'case')} compared or listed)")
    return "\n".join(lines)
