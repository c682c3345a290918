"""Plain-text scoreboard printed at the end of a pytest run: one row per case, 80-120 columns.

Pure ASCII, so it survives any CI log viewer; a terminal that takes colour gets each result word in its
outcome's colour (`fmtest.report.outcomes`, the same as the HTML's). A case id is never cut: a row whose id
is longer than the room for it puts the id on a line of its own, its figures on the next. The helpers that
decide what a case's headline number is and how its thresholds read (`main_metric`, `gates`, `image_counts`)
are shared with the HTML report and history plots so that all three show the same figures.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable

from fmtest.metrics.specs import format_metric, format_value
from fmtest.report.fidelity import FIDELITY_DOC, study_note
from fmtest.report.outcomes import style
from fmtest.util.text import plural
from fmtest.verdict.gates import (
    gate_for,
    gates,
    image_counts,
    main_metric,
    regressed_metrics,
)
from fmtest.verdict.results import CaseResult, RunResults, perturbation_of

Paint = Callable[[str, str], str]  # (text, outcome) -> the text in that outcome's colour

TASK_ABBREV = {"segmentation": "seg", "classification": "cls", "comparison": "cmp"}  # robustness cases have their own grid
COUNT_ORDER = ("failed", "passed", "error", "skipped")
_SEP = "  "
_MIN_OTHER_WIDTH = 20  # other gates get at least this much room when inline...
_MIN_CASE_WIDTH = 24  # ...unless case ids would get less room than this: then other gates go below the row


def plain(text: str, outcome: str) -> str:
    return text


def render_scoreboard(results: RunResults, width: int = 120, paint: Paint = plain) -> str:
    """The run as a table: case, task, main metric [CI], threshold, other gates, images, outcome; then
    robustness cases as a pipeline-dataset x perturbation grid, and skipped cases by reason. `paint` colours
    each result word (the plugin passes the terminal's markup)."""
    width = max(width, 60)
    ran = [c for c in results.cases if c.outcome != "skipped" and c.task != "robustness"]
    robust = [c for c in results.cases if c.task == "robustness"]
    skipped = [c for c in results.cases if c.outcome == "skipped"]
    lines = _title(results, width)
    if ran:
        lines += _table(ran, width, paint)
    if robust:
        lines += _robustness_table(robust, width, paint)
    if skipped:
        lines += _skipped_block(skipped, width)
    if any(c.study or c.departures for c in ran):
        lines += textwrap.wrap(f"departures from the study, each with its reason: {FIDELITY_DOC} (`fmtest config "
                               "--fidelity`)", width, break_on_hyphens=False)
    lines.append(count_line(results.cases))
    return "\n".join(lines)


def _title(results: RunResults, width: int) -> list[str]:
    parts = ["fmtest scoreboard", results.created]
    if results.git_commit:
        parts.append(f"commit {results.git_commit[:10]}")
    return textwrap.wrap(" - ".join(p for p in parts if p), width, break_on_hyphens=False)


def _table(cases: list[CaseResult], width: int, paint: Paint) -> list[str]:
    rows = [_row_cells(c) for c in cases]
    header = {"case": "case", "task": "task", "main": "metric [95% CI]", "thr": "thr", "other": "other gates",
              "images": "images/NOK", "result": "result"}
    fixed_keys = ("task", "main", "thr", "images", "result")
    widths = {k: max(len(header[k]), *(len(r[k]) for r in rows)) for k in fixed_keys}
    fixed = sum(widths.values()) + len(_SEP) * len(fixed_keys)
    longest_id = max(len(header["case"]), *(len(r["case"]) for r in rows))
    longest_other = max(len(r["other"]) for r in rows)
    other_reserve = min(longest_other, _MIN_OTHER_WIDTH) + len(_SEP) if longest_other else 0
    other_column = bool(longest_other) and width - fixed - other_reserve >= min(longest_id, _MIN_CASE_WIDTH)
    case_w = max(_MIN_CASE_WIDTH // 2, min(longest_id, width - fixed - (other_reserve if other_column else 0)))
    other_w = min(width - fixed - case_w - len(_SEP), max(longest_other, len(header["other"])))

    def line(case_cell: str, cells: dict[str, str], other: str, outcome: str | None = None) -> str:
        text = case_cell.ljust(case_w)
        for key in ("task", "main", "thr"):
            text += _SEP + cells[key].ljust(widths[key])
        if other_column:
            text += _SEP + other.ljust(other_w)
        text += _SEP + cells["images"].rjust(widths["images"]) + _SEP
        return text + (paint(cells["result"], outcome) if outcome else cells["result"])

    head = line(header["case"], header, header["other"]).rstrip()
    out = [head, "-" * len(head)]
    for cells, case in zip(rows, cases, strict=True):
        inline = other_column and len(cells["other"]) <= other_w
        if len(cells["case"]) > case_w:  # never cut an id: it gets a line of its own, its figures the next
            out.append(cells["case"])
        out.append(line(cells["case"] if len(cells["case"]) <= case_w else "", cells,
                        cells["other"] if inline else "", case.outcome))
        if not inline and cells["other"]:  # too long for the column: wrapped below its row
            out += textwrap.wrap(cells["other"], width, initial_indent="    ", subsequent_indent="    ",
                                 break_on_hyphens=False)
    return out


def _row_cells(case: CaseResult) -> dict[str, str]:
    name = main_metric(case)
    main = thr = ""
    if name is not None:
        value = case.metrics.get(name)
        lo, hi = case.metrics.get(f"{name}_ci_low"), case.metrics.get(f"{name}_ci_high")
        main = f"{name} {format_value(value)}"
        if lo is not None and hi is not None:
            main += f" [{format_value(lo)},{format_value(hi)}]"
        gate = gate_for(case, name)
        thr = f"{gate.relation}{format_metric(name, gate.limit, 2)}" if gate else "-"
    n_images, n_defective = image_counts(case)
    images = "-" if n_images is None else f"{n_images}/{'?' if n_defective is None else n_defective}"
    return {"case": case.id, "task": TASK_ABBREV.get(case.task, case.task[:3]), "main": main, "thr": thr,
            "other": _other_gates(case, name), "images": images,
            "result": style(case.outcome).word}


def _other_gates(case: CaseResult, main: str | None) -> str:
    """Gates besides the main metric's (`<`/`>` marks a miss), regressions, and an error's reason."""
    parts = []
    for gate in gates(case):
        if gate.metric is None:
            parts.append(f"{gate.name} {format_value(gate.limit)}")
        elif gate.metric != main:
            value = case.metrics.get(gate.metric)
            shown = gate.relation if gate.met(value) else ("<" if not gate.upper else ">")
            parts.append(f"{gate.metric} {format_metric(gate.metric, value)}{shown}"
                         f"{format_metric(gate.metric, gate.limit, 2)}")
    if "au_pro" in case.metrics and gate_for(case, "au_pro") is None:  # a region figure, shown, not gated
        parts.append(f"au_pro {format_value(case.metrics['au_pro'])} (not gated)")
    note = study_note(case, main)
    if note:
        parts.append(note)
    for name, delta in regressed_metrics(case).items():
        parts.append(f"REGRESSED {name} {'' if delta is None else f'{delta:+.3f}'}".rstrip())
    if case.outcome == "error" and case.message:
        parts.append(case.message.strip().splitlines()[0])
    return ", ".join(parts)


def _robustness_table(cases: list[CaseResult], width: int, paint: Paint) -> list[str]:
    """At the gated level, each case's flip rate against its tolerance and the verdict (a skipped case shows no
    number: its reason is listed with the skipped cases), pipeline-dataset x perturbation, so one glance shows which
    perturbations break which pipeline. Columns that do not fit the width continue in a second block."""
    names = list(dict.fromkeys(perturbation_of(c) for c in cases))
    grid: dict[str, dict[str, CaseResult]] = {}
    for case in cases:
        grid.setdefault(f"{case.pipeline}-{case.dataset}", {})[perturbation_of(case)] = case
    shared = bool(_tolerance_text(cases))  # one tolerance for all, said once above the grid
    cells = {row: {n: _robustness_cell(by_name.get(n), show_limit=not shared) for n in names}
             for row, by_name in grid.items()}
    gate_line = {n: _gate_text(n, cases) for n in names}
    col_w = {n: max(len(n), len(gate_line[n]), *(len(cells[r][n][0]) for r in grid)) for n in names}
    label_w = min(max(len("pipeline-dataset"), *map(len, grid)), width - len(_SEP) - max(col_w.values()))
    label_w = max(label_w, _MIN_CASE_WIDTH // 2)
    out = textwrap.wrap(f"robustness: flip rate at the gated level (@level){_tolerance_text(cases)}", width,
                        subsequent_indent="  ")
    for chunk in _chunks(names, col_w, width - label_w):
        head = "pipeline-dataset".ljust(label_w) + "".join(_SEP + n.ljust(col_w[n]) for n in chunk)
        gates_row = " " * label_w + "".join(_SEP + gate_line[n].ljust(col_w[n]) for n in chunk)
        out += [head.rstrip(), gates_row.rstrip(), "-" * len(head.rstrip())]
        for row in grid:
            if len(row) > label_w:  # never cut: the name on its own line
                out.append(row)
            line = (row if len(row) <= label_w else "").ljust(label_w)
            for n in chunk:
                text, outcome = cells[row][n]
                line += _SEP + (paint(text, outcome) + " " * (col_w[n] - len(text)) if outcome else text.ljust(col_w[n]))
            out.append(line.rstrip())
    for case in cases:
        if case.outcome in ("failed", "error") and case.message:
            out += textwrap.wrap(f"{case.id}: {case.message.strip().splitlines()[0]}", width,
                                 initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
    return out


def _robustness_cell(case: CaseResult | None, *, show_limit: bool) -> tuple[str, str | None]:
    """(the cell's text, the outcome that colours it): value, threshold (unless the grid's heading says the one
    tolerance of all) and result of a judged case; a skipped or unjudged case only its word."""
    if case is None:
        return "-", None
    word = style(case.outcome).word
    flip, limit = case.metrics.get("flip_rate"), case.thresholds.get("max_flip_rate")
    if case.outcome not in ("passed", "failed") or not isinstance(flip, int | float):
        return word, case.outcome
    shown = "" if limit is None or not show_limit else ("<=" if flip <= limit else ">") + format_value(limit, 2)
    return f"{format_value(flip)}{shown} {word}", case.outcome


def _gate_text(name: str, cases: list[CaseResult]) -> str:
    levels = {c.robustness.gate_level for c in cases if perturbation_of(c) == name and c.robustness}
    levels = {float(v) for v in levels if isinstance(v, int | float) and not isinstance(v, bool)}
    return f"@{levels.pop():g}" if len(levels) == 1 else ""


def _tolerance_text(cases: list[CaseResult]) -> str:
    flips = {c.thresholds.get("max_flip_rate") for c in cases} - {None}
    drops = {c.thresholds.get("max_metric_drop") for c in cases} - {None}
    if len(flips) == 1 and len(drops) == 1:
        return f" (tolerance: flip rate <= {format_value(flips.pop(), 2)}, metric drop <= {format_value(drops.pop())})"
    return ""


def _chunks(names: list[str], col_w: dict[str, int], room: int) -> list[list[str]]:
    """Consecutive columns grouped so that each group fits in `room` characters (at least one column each)."""
    chunks: list[list[str]] = [[]]
    used = 0
    for name in names:
        need = len(_SEP) + col_w[name]
        if chunks[-1] and used + need > room:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += need
    return chunks


def _skipped_block(cases: list[CaseResult], width: int) -> list[str]:
    """Skipped cases grouped by reason: usually many cases share one missing checkpoint or API key."""
    by_reason: dict[str, list[str]] = {}
    for case in cases:
        reason = (case.message or "no reason given").strip().splitlines()[0]
        by_reason.setdefault(reason, []).append(case.id)
    out = [f"skipped ({len(cases)}):"]
    for reason, ids in by_reason.items():
        out += textwrap.wrap(f"{', '.join(ids)}: {reason}", width, initial_indent="  ", subsequent_indent="      ",
                             break_on_hyphens=False)
    return out


def count_line(cases: list[CaseResult]) -> str:
    """"3 cases: 1 failed, 2 passed": the outcome counts, as the terminal, the HTML and MLflow say them."""
    counts = Counter(c.outcome for c in cases)
    known = [f"{counts[o]} {o}" for o in COUNT_ORDER if counts[o]]
    other = [f"{n} {o}" for o, n in counts.items() if o not in COUNT_ORDER]
    return f"{plural(len(cases), 'case')}: " + (", ".join(known + other) or "none run")


def data_quality_line(results: RunResults) -> str:
    """One line per dataset with guardrail findings, counted by kind; the HTML lists each image."""
    by_dataset: dict[str, Counter] = {}
    for case in results.cases:
        if case.dataset not in by_dataset and case.data_quality:
            by_dataset[case.dataset] = Counter(f.kind for f in case.data_quality)
    return "\n".join(f"data quality, {d}: " + ", ".join(_finding_count(n, k) for k, n in c.items())
                     for d, c in by_dataset.items())


FINDING_NOUNS = {  # a guardrail finding's kind as a count reads it: (one, several)
    "near_duplicate": ("near-duplicate", "near-duplicates"),
    "label_mask_disagreement": ("label/mask disagreement", "label/mask disagreements"),
    "intensity_outlier": ("intensity outlier", "intensity outliers"),
    "alignment_failure": ("alignment failure", "alignment failures"),
    "saturates_8bit": ("image an 8-bit conversion would saturate", "images an 8-bit conversion would saturate"),
    "check_skipped": ("check skipped", "checks skipped"),
}


def _finding_count(n: int, kind: str) -> str:
    one, several = FINDING_NOUNS.get(kind, (kind.replace("_", " "), kind.replace("_", " ")))
    return plural(n, one, several)


def markup_paint(markup: Callable[..., str]) -> Paint:
    """`paint` through a terminal writer's `markup(text, green=True)`, which leaves the text plain where the
    terminal takes no colour."""
    def paint(text: str, outcome: str) -> str:
        colour = style(outcome).terminal
        return markup(text, **{colour: True}) if colour else text
    return paint


def case_log_line(case: CaseResult) -> str:
    """One line for a finished case in a CI log, where progress bars would flood it: outcome, headline
    figure, images, cache use and time."""
    metric = main_metric(case)
    figure = f" {metric} {format_metric(metric, case.metrics[metric])}" if metric in case.metrics else ""
    n_images, _ = image_counts(case)
    counts = [plural(n_images, "image")] if n_images is not None else []
    if case.cache is not None and case.cache.hits:
        counts.append(f"{case.cache.hits} from the cache")
    took = f" in {case.duration_s:.1f} s" if case.duration_s else ""
    return f"fmtest: {case.id}: {style(case.outcome).word}{figure}{took}" + (f" ({', '.join(counts)})" if counts else "")

