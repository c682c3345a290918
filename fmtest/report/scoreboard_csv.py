"""The scoreboard as CSV (`--fm-csv`): one row per case with its outcome and, for every gated metric of the run,
the value, its 95 % interval and the case's threshold, for a spreadsheet. A pure function of `RunResults`.

Columns: id, pipeline, dataset, task, outcome, then per gated metric `<m>`, `<m>_ci_low`, `<m>_ci_high` and
`threshold_<t>` (`threshold_max_<m>` for a maximum, as the JUnit properties name them), then the message. A
figure the case lacks is an empty cell; a message that a spreadsheet would read as a formula is quoted with '.
"""

from __future__ import annotations

import csv
import io
import math

from fmtest.verdict.gates import gates
from fmtest.verdict.results import RunResults

HEAD = ("id", "pipeline", "dataset", "task", "outcome")


def gated_columns(results: RunResults) -> list[tuple[str, str]]:
    """(metric, threshold name) of every gate a case of the run has, in the order they first appear."""
    seen: dict[tuple[str, str], None] = {}
    for case in results.cases:
        for gate in gates(case):
            if gate.metric is not None:
                seen.setdefault((gate.metric, gate.name), None)
    return list(seen)


def scoreboard_csv(results: RunResults) -> str:
    columns = gated_columns(results)
    header = [*HEAD]
    for metric, threshold in columns:
        header += [metric, f"{metric}_ci_low", f"{metric}_ci_high", f"threshold_{threshold}"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "message"])
    for case in results.cases:
        row = [case.id, case.pipeline, case.dataset, case.task, case.outcome]
        for metric, threshold in columns:
            row += [_number(case.metrics.get(metric)), _number(case.metrics.get(f"{metric}_ci_low")),
                    _number(case.metrics.get(f"{metric}_ci_high")), _number(case.thresholds.get(threshold))]
        writer.writerow([*row, _text(case.message)])
    return out.getvalue()


def _number(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return ""
    return f"{value:.6g}"


def _text(message: str | None) -> str:
    text = " ".join((message or "").split())
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


__all__ = ["scoreboard_csv"]
