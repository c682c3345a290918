"""The scoreboard as GitHub-flavoured Markdown: for a CI job summary (`$GITHUB_STEP_SUMMARY`), a merge
request comment or a GitLab page, where the team already looks.

What a reviewer needs first comes first: the run's verdict, each failed or unjudged case with its reason,
the regressions against the baseline, the new slips (images by name) of a candidate against the model it
would replace. Then one row per case: verdict, headline metric with its 95 % interval, threshold, the other
gates, change against the baseline, the study's number and departures, the images it got wrong (slips first,
the costly kind). Skipped cases are listed by reason, departures from the study with their reasons, each in a
collapsed block. Reads the results, the verdict layer and the shared pieces of the other scoreboards (how an
image went wrong, how an interval reads, the outcome colours), so every page agrees.
"""

from __future__ import annotations

from pathlib import Path

from fmtest.metrics.specs import REGION_METRICS, format_metric, label
from fmtest.report.fidelity import study_note
from fmtest.report.html_case_charts import image_outcome
from fmtest.report.html_format import metric_interval
from fmtest.report.outcomes import style
from fmtest.util.fsutil import atomic_write
from fmtest.util.text import plural
from fmtest.verdict.gates import Gate, gate_for, gates, main_metric, regressed_metrics
from fmtest.verdict.results import CaseResult, ImageResult, RunResults

MAX_IMAGE_NAMES = 5  # per case: enough to start looking, short enough for a table cell
HEADER = ("case", "verdict", "metric [95% CI]", "threshold", "other gates", "Δ baseline", "study", "failing images")
FIDELITY_HEADING = "Departures from the study"


def render_markdown(results: RunResults) -> str:
    """The whole run: verdict, what needs a look (failures, regressions, new slips), one row per case, then the
    skipped cases by reason and the departures from the study."""
    ran = [c for c in results.cases if c.outcome != "skipped"]
    skipped = [c for c in results.cases if c.outcome == "skipped"]
    unfinished = [f"**Interrupted run:** {plural(len(results.unfinished), 'planned case')} did not finish: "
                  + (", ".join(f"`{c}`" for c in results.unfinished) or "none recorded"), ""] \
        if results.interrupted or results.unfinished else []  # never read as a finished run: say what did not run
    provenance = [results.created] + ([f"commit `{results.git_commit[:10]}`"] if results.git_commit else [])
    lines = [f"### fmtest: {_verdict(results)}", "", " · ".join(p for p in provenance if p), ""]
    lines += unfinished + _attention(results)
    if ran:
        with_study = any(c.study or c.departures for c in ran)
        header = [h for h in HEADER if with_study or h != "study"]
        lines += [_row(header), _row(["---"] * len(header))]
        lines += [_row(_case_cells(case, with_study)) for case in ran]
        lines.append("")
    if skipped:
        lines += [f"<details><summary>{len(skipped)} skipped</summary>", ""]
        by_reason: dict[str, list[str]] = {}
        for case in skipped:
            by_reason.setdefault((case.message or "no reason given").strip().splitlines()[0], []).append(case.id)
        lines += [f"- {', '.join(f'`{i}`' for i in ids)}: {_inline(reason)}" for reason, ids in by_reason.items()]
        lines += ["", "</details>", ""]
    lines += _fidelity(ran)
    return "\n".join(lines)


def write_markdown(results: RunResults, path: Path) -> None:
    """Write the Markdown scoreboard to its own file (atomically)."""
    atomic_write(path, render_markdown(results))


def append_markdown(results: RunResults, path: Path) -> None:
    """Append to a file other steps also write, as GitHub's job summary file is."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(render_markdown(results) + "\n")


def _verdict(results: RunResults) -> str:
    """"🔴 FAIL: 1 failed, 1 error, 3 passed, 2 skipped": the run's outcome in its colour, then the counts."""
    counts = {o: sum(c.outcome == o for c in results.cases) for o in ("failed", "error", "passed", "skipped")}
    worst = "failed" if counts["failed"] else "error" if counts["error"] else "passed" if counts["passed"] else "skipped"
    if results.interrupted:
        worst = "error"
    head = f"{style(worst).mark} {style(worst).word}"
    detail = ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "no cases"
    if results.interrupted:
        detail += f"; interrupted: {plural(len(results.unfinished), 'case')} did not finish"
    return f"{head}: {plural(len(results.cases), 'case')}, {detail}"


def _attention(results: RunResults) -> list[str]:
    """What a reviewer must read before the table: failed and unjudged cases with their reason, regressions
    against the baseline, new slips and new false alarms of a candidate, by image."""
    lines = []
    bad = [c for c in results.cases if c.outcome in ("failed", "error")]
    if bad:
        lines += [f"**{plural(len(bad), 'case')} to look at:**", ""]
        lines += [f"- {style(c.outcome).mark} `{c.id}` {style(c.outcome).word}: "
                  f"{_inline((c.message or c.outcome).strip().splitlines()[0])}" for c in bad]
        lines.append("")
    regressions = [(c, name, c.baseline.changes[name]) for c in results.cases if c.baseline is not None
                   for name in regressed_metrics(c)]
    if regressions:
        lines += ["**Regressions against the baseline:**", ""]
        for case, name, change in regressions:
            interval = ("" if change.ci_low is None or change.ci_high is None
                        else f", paired 95% CI [{change.ci_low:+.3f}, {change.ci_high:+.3f}]")
            lines.append(f"- `{case.id}` {name} {format_metric(name, change.baseline)} → "
                         f"{format_metric(name, change.current)} ({change.delta:+.3f}{interval})")
        lines.append("")
    pairs = [c for c in results.cases if c.comparison is not None and c.comparison.image_changes]
    for case in pairs:
        for kind, words in (("new_slips", "new slips"), ("new_false_alarms", "new false alarms")):
            names = [f"`{_inline(ch.id)}`" for ch in case.comparison.image_changes if ch.change == kind]
            if names:
                more = f" (+{len(names) - MAX_IMAGE_NAMES} more)" if len(names) > MAX_IMAGE_NAMES else ""
                lines.append(f"- **{words}** of `{case.comparison.candidate.case}` against "
                             f"`{case.comparison.reference.case}`: {', '.join(names[:MAX_IMAGE_NAMES])}{more}")
    if pairs and lines and lines[-1].startswith("- **"):
        lines.append("")
    return lines


def _case_cells(case: CaseResult, with_study: bool) -> list[str]:
    """The case's one row: verdict, headline metric with its interval, its threshold, the other gates (a miss
    marked), its change against the baseline, the study note, the images it got wrong."""
    verdict = f"{style(case.outcome).mark} {style(case.outcome).word}"
    name = main_metric(case)
    metric = threshold = delta = ""
    if case.outcome == "error":  # no figure of a run that could not be judged: the reason is listed above
        metric = "not judged"
    elif name is not None and name in case.metrics:
        gate = gate_for(case, name)
        metric = f"{label(name)} {_figure(case, name, gate)}"
        threshold = "–" if gate is None else f"{'≤' if gate.upper else '≥'} {format_metric(name, gate.limit, 2)}"
        delta = _baseline_delta(case, name)
    others = "" if case.outcome == "error" else "<br>".join(
        f"{label(g.metric)} {_figure(case, g.metric, g)} {'≤' if g.upper else '≥'} {format_metric(g.metric, g.limit, 2)}"
        for g in gates(case) if g.metric is not None and g.metric != name)
    shown = [f"{label(m)} {format_metric(m, case.metrics[m])}" for m in REGION_METRICS
             if case.outcome != "error" and m in case.metrics and gate_for(case, m) is None]
    if shown:  # the region figures: shown beside the gates, not gated
        others = "<br>".join([others] * bool(others) + [" · ".join(shown) + " (shown, not gated)"])
    cells = [f"`{case.id}`", verdict, metric, threshold, others, delta]
    if with_study:
        note = study_note(case, name)
        cells.append(f"[{_inline(note)}](#{_anchor(FIDELITY_HEADING)})" if note and case.departures else _inline(note))
    return cells + [failing_images_cell(case)]


def _figure(case: CaseResult, name: str, gate: Gate | None) -> str:
    """A metric's value with its interval, bold with a red mark where it misses its gate."""
    value = case.metrics.get(name)
    text = format_metric(name, value)
    interval = metric_interval(case, name)
    if interval:
        text += f" {interval}"
    if gate is not None and not gate.met(value):
        text = f"**{text}** {style('failed').mark}"
    return text


def _baseline_delta(case: CaseResult, name: str) -> str:
    """The change against the baseline, flagged when the regression gate failed it."""
    change = case.baseline.changes.get(name) if case.baseline is not None else None
    if change is None:
        return ""
    text = f"{change.delta:+.3f}"
    return f"**{text}** regressed" if change.regressed else text


def _fidelity(cases: list[CaseResult]) -> list[str]:
    """Each departure from the study, with what fmtest does, what the study did and why, in a collapsed block."""
    shown = [c for c in cases if c.departures and c.task != "robustness"]
    if not shown:
        return []
    lines = [f"#### {FIDELITY_HEADING}", "", "<details><summary>each departure, with its reason</summary>", "",
             _row(("case", "departure", "fmtest", "study / upstream", "why")), _row(["---"] * 5)]
    for case in shown:
        for index, d in enumerate(case.departures):
            lines.append(_row((f"`{case.id}`" if index == 0 else "", _inline(d.name), _inline(d.ours),
                               _inline(d.upstream), _inline(d.reason))))
    return lines + ["", "</details>", ""]


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


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, spaces as hyphens."""
    return "-".join(heading.lower().split())


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _inline(text: str) -> str:
    """Text safe inside a table cell: no line breaks, pipes escaped, backticks neutralised."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")
