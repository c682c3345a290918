"""The scoreboard as GitHub-flavoured Markdown: for a CI job summary (`$GITHUB_STEP_SUMMARY`), a merge
request comment or a GitLab page, where the team already looks.

One row per thresholded metric of a case: verdict, value with its 95 % interval, threshold, change
against the baseline, and the names of the images the case got wrong (slips first, the costly kind).
Skipped cases are listed by reason below the table. Reads the results, the verdict layer and the HTML
scoreboard's shared pieces (how an image went wrong, how an interval reads), so both pages agree.
"""

from __future__ import annotations

from pathlib import Path

from fmtest.util.fsutil import atomic_write
from fmtest.report.html_case_charts import image_outcome
from fmtest.report.html_format import metric_interval
from fmtest.verdict.gates import Gate, gates, main_metric
from fmtest.verdict.results import OUTCOME_WORD, CaseResult, ImageResult, RunResults
from fmtest.metrics.specs import format_value

OUTCOME_MARK = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️"}
MAX_IMAGE_NAMES = 5  # per case: enough to start looking, short enough for a table cell
HEADER = ("case", "verdict", "metric", "value [95% CI]", "threshold", "Δ baseline", "failing images")


def render_markdown(results: RunResults) -> str:
    """The whole run: title, counts, the scoreboard table, then skipped cases grouped by reason."""
    ran = [c for c in results.cases if c.outcome != "skipped"]
    skipped = [c for c in results.cases if c.outcome == "skipped"]
    lines = [f"### fmtest scoreboard: {_counts(results.cases)}", ""]
    if results.interrupted or results.unfinished:  # never read as a finished run: say what did not run
        lines[0] = f"### fmtest scoreboard: INTERRUPTED, {_counts(results.cases)}"
        unfinished = ", ".join(f"`{c}`" for c in results.unfinished) or "none recorded"
        lines += [f"**Interrupted run:** {len(results.unfinished)} planned case(s) did not finish: {unfinished}", ""]
    provenance = [results.created] + ([f"commit `{results.git_commit[:10]}`"] if results.git_commit else [])
    lines += [" · ".join(p for p in provenance if p), ""]
    if ran:
        lines += [_row(HEADER), _row(["---"] * len(HEADER))]
        for case in ran:
            lines += [_row(cells) for cells in _case_rows(case)]
        lines.append("")
    errors = [c for c in ran if c.outcome == "error" and c.message]
    if errors:
        lines += [f"- **{c.id}** error: {_inline(c.message.strip().splitlines()[0])}" for c in errors] + [""]
    if skipped:
        lines += [f"<details><summary>{len(skipped)} skipped</summary>", ""]
        by_reason: dict[str, list[str]] = {}
        for case in skipped:
            by_reason.setdefault((case.message or "no reason given").strip().splitlines()[0], []).append(case.id)
        lines += [f"- {', '.join(f'`{i}`' for i in ids)}: {_inline(reason)}" for reason, ids in by_reason.items()]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def write_markdown(results: RunResults, path: Path) -> None:
    """Write the Markdown scoreboard to its own file (atomically)."""
    atomic_write(path, render_markdown(results))


def append_markdown(results: RunResults, path: Path) -> None:
    """Append to a file other steps also write, as GitHub's job summary file is."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(render_markdown(results) + "\n")


def _case_rows(case: CaseResult) -> list[list[str]]:
    """One row per judged metric; the case, its verdict and its failing images on the first."""
    verdict = f"{OUTCOME_MARK.get(case.outcome, '')} {OUTCOME_WORD.get(case.outcome, case.outcome.upper())}".strip()
    if case.outcome == "error":  # no figure of a run that could not be judged: the reason is listed below
        return [[f"`{case.id}`", verdict, "not judged", "–", "–", "", failing_images_cell(case)]]
    metric_rows = [_metric_cells(case, name, gate) for name, gate in _judged_metrics(case)] or [["", "", "", ""]]
    return [[f"`{case.id}`", verdict, *metric_rows[0], failing_images_cell(case)]] + [
        ["", "", *cells, ""] for cells in metric_rows[1:]]


def _judged_metrics(case: CaseResult) -> list[tuple[str, Gate | None]]:
    """The headline metric first, then every other thresholded metric; thresholds that judge no metric
    (a setting such as max_metric_drop) are left out."""
    by_metric = {g.metric: g for g in gates(case) if g.metric is not None}
    head = main_metric(case)
    names = ([head] if head is not None and (head in case.metrics or head in by_metric) else [])
    names += [m for m in by_metric if m not in names]
    return [(name, by_metric.get(name)) for name in names]


def _metric_cells(case: CaseResult, name: str, gate: Gate | None) -> list[str]:
    value = case.metrics.get(name)
    text = format_value(value)
    interval = metric_interval(case, name)
    if interval:
        text += f" {interval}"
    threshold = "–"
    if gate is not None:
        threshold = f"{'≤' if gate.upper else '≥'} {format_value(gate.limit, 2)}"
        if not gate.met(value):
            text = f"**{text}** ❌"
    return [name, text, threshold, _baseline_delta(case, name)]


def _baseline_delta(case: CaseResult, name: str) -> str:
    """The change against the baseline, flagged when the regression gate failed it."""
    change = case.baseline.changes.get(name) if case.baseline is not None else None
    if change is None:
        return ""
    text = f"{change.delta:+.3f}"
    return f"**{text}** regressed" if change.regressed else text


def failing_images(case: CaseResult) -> list[ImageResult]:
    """Images the case got wrong: slips (defect passed as OK), then false alarms, then errors."""
    slips = [i for i in case.images if i.error is None and i.label == "NOK" and i.predicted == "OK"]
    alarms = [i for i in case.images if i.error is None and i.label == "OK" and i.predicted == "NOK"]
    errors = [i for i in case.images if i.error is not None]
    return slips + alarms + errors


def failing_images_cell(case: CaseResult) -> str:
    wrong = failing_images(case)
    if not wrong:
        return ""
    kinds = {"slip": [], "false alarm": [], "error": []}
    for image in wrong[:MAX_IMAGE_NAMES]:
        kinds[image_outcome(image)].append(f"`{_inline(image.id)}`")
    parts = [f"{kind}: {', '.join(names)}" for kind, names in kinds.items() if names]
    more = len(wrong) - MAX_IMAGE_NAMES
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _counts(cases: list[CaseResult]) -> str:
    order = ("failed", "error", "passed", "skipped")
    counts = {o: sum(c.outcome == o for c in cases) for o in order}
    return ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "no cases"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _inline(text: str) -> str:
    """Text safe inside a table cell: no line breaks, pipes escaped, backticks neutralised."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")
