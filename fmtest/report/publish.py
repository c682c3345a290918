"""Results sent where CI and ML teams look: a Markdown scoreboard (own file and GitHub's job summary),
a flat metrics file, and MLflow.

Called after the JSON results and HTML scoreboard are written: a failure here (a folder that cannot be
written, an unreachable tracker) costs only its own output, is reported as one line, and never changes
the verdict or the exit status of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fmtest.errors import FmtestError
from fmtest.report.layers import layers_dir
from fmtest.report.markdown import append_markdown, write_markdown
from fmtest.report.metrics_file import write_metrics_file
from fmtest.util.redact import redact
from fmtest.util.text import plural
from fmtest.verdict.results import RunResults


def publish(results: RunResults, *, markdown: Path | None = None, step_summary: Path | None = None,
            metrics: Path | None = None, mlflow_uri: str | None = None, mlflow_experiment: str = "fmtest",
            attachments: Sequence[Path] = ()) -> list[str]:
    """Write each requested output; returns one line per output for the terminal (where it went, or why not).

    `attachments` (the HTML scoreboard) go to the MLflow parent run with the files written here, each with the
    folder of images its viewer loads (`scoreboard_files/`), so the page opened from the tracker shows them.
    """
    lines = []
    written = [p for p in attachments if p.is_file()]
    written += [layers_dir(p) for p in written if layers_dir(p).is_dir()]
    outputs = ((markdown, write_markdown, "Markdown scoreboard", True),
               (step_summary, append_markdown, "GitHub job summary", False),  # shared with other steps
               (metrics, write_metrics_file, "metrics file", True))
    for path, write, label, attach in outputs:
        if path is None:
            continue
        try:
            write(results, path)
        except OSError as e:
            lines.append(f"fmtest: warning: {label} not written to {path}: {e.strerror or e}")
            continue
        lines.append(f"{label}: {path}")
        if attach:
            written.append(path)
    if mlflow_uri:
        from fmtest.report.mlflow_log import log_run

        try:
            logged = log_run(results, mlflow_uri, mlflow_experiment, artifacts=written)
        except FmtestError as e:
            lines.append(f"fmtest: warning: {redact(str(e))}")
        else:
            lines.append(f"MLflow: run {logged.run_id} ({plural(len(logged.case_run_ids), 'case')}) in experiment "
                         f"{mlflow_experiment!r} at {redact(mlflow_uri)}")
    return lines
