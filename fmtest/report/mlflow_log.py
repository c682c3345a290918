"""A run's results logged to MLflow, the experiment tracker ML teams already watch.

One parent MLflow run per pytest session (its settings, counts, the Markdown scoreboard as its
description, the results JSON and the given report files, the scoreboard with its image folder, as artifacts)
and one child run per case: parameters (pipeline, dataset, every option it ran with, a variant's inherited
ones and defaults included, prompt, model sha256, config path), every metric and interval, thresholds and
verdict as tags, the per-image table as an MLflow table artifact, and the plots a reviewer wants (confusion
matrix, precision-recall curve, IoU histogram), as `mlflow.evaluate` logs them. Each child run spans the
case's own time (it started when the case did and lasted as long), not the moment of logging; the experiment
is marked a model-development experiment, so MLflow opens its runs, not its GenAI view.

A pure consumer of RunResults: it reads what the JSON holds, so the same numbers reach every report.
mlflow is an optional install (`fmtest[mlflow]`) imported only here, on use. Any failure of the
tracker becomes one TrackingError, so a run never loses its other outputs to an unreachable server;
MLflow's own HTTP retries (about four minutes by default) are bounded unless the user set them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import math
import numbers
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from fmtest.errors import FmtestError, Unavailable
from fmtest.report.results_file import results_json
from fmtest.util.extras import install_hint, installed
from fmtest.util.redact import redact
from fmtest.verdict.gates import regressed_metrics
from fmtest.verdict.results import OUTCOME_WORD, CaseResult, RunResults

DEFAULT_EXPERIMENT = "fmtest"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # MLflow 3's runs view, not its GenAI view
IMAGE_TABLE = "images.json"
RESULTS_ARTIFACT = "results.json"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
MAX_TAG_LENGTH = 5000
# A down server would otherwise hold the end of the pytest session for about four minutes.
BOUNDED_HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class TrackingError(FmtestError):
    """Logging to MLflow failed; the run's other outputs are unaffected."""


@dataclass(frozen=True)
class LoggedRun:
    """Where the results went: the parent run, and each case's child run by case id."""

    experiment_id: str
    run_id: str
    case_run_ids: dict[str, str]


def log_run(results: RunResults, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT,
            artifacts: Sequence[Path] = ()) -> LoggedRun:
    """Log `results` under a new parent run in `experiment` (created if missing); `artifacts` are files
    (HTML scoreboard, Markdown, metrics file) attached to the parent run beside the results JSON."""
    if not installed("mlflow"):
        raise Unavailable(f"logging to MLflow needs mlflow, not installed: {install_hint(['mlflow'])}")
    try:
        # MLflow prints a "View run" link per finished run; one line per case would bury pytest's summary
        with _bounded_http_retries(), contextlib.redirect_stdout(io.StringIO()):
            return _log(results, tracking_uri, experiment, artifacts)
    except Exception as e:  # noqa: BLE001 - network, server, permissions, bad URI: whatever the tracker does, the run goes on
        detail = (str(e).strip().splitlines() or [""])[0][:300]
        raise TrackingError(redact(f"could not log to MLflow at {tracking_uri}: {type(e).__name__}: {detail}")) \
            from None


def run_status(cases, *, interrupted: bool = False) -> str:
    """MLflow's run status: FAILED when a case failed or could not be judged, or the run was cut short; a
    green run in the tracker means what a green CI job means."""
    bad = interrupted or any(c.outcome in ("failed", "error") for c in cases)
    return "FAILED" if bad else "FINISHED"


def _log(results: RunResults, tracking_uri: str, experiment: str, artifacts: Sequence[Path]) -> LoggedRun:
    from mlflow import MlflowClient

    from fmtest.report.markdown import render_markdown
    from fmtest.report.plots import case_figures

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(experiment, tags=dict([EXPERIMENT_KIND]))
    else:
        experiment_id = found.experiment_id
        if EXPERIMENT_KIND[0] not in found.tags:  # the user's own choice of view is kept
            client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    spans = {c.id: case_span(c, results) for c in results.cases}
    start = min((s for s, _ in spans.values()), default=_ms(results.created))
    end = max((e for _, e in spans.values()), default=start)
    parent = client.create_run(experiment_id, run_name=f"fmtest {results.created}", start_time=start,
                               tags={**session_tags(results), "mlflow.note.content": render_markdown(results)})
    parent_id = parent.info.run_id
    _log_batch(client, parent_id, session_metrics(results), session_params(results), end)
    case_runs = {}
    for case in results.cases:
        case_start, case_end = spans[case.id]
        run = client.create_run(experiment_id, run_name=case.id, start_time=case_start,
                                tags={"mlflow.parentRunId": parent_id, **case_tags(case, results)})
        case_runs[case.id] = run.info.run_id
        _log_batch(client, run.info.run_id, case_metrics(case), case_params(case, results), case_end)
        if case.images:
            client.log_table(run.info.run_id, data=image_table(case), artifact_file=IMAGE_TABLE)
        for name, figure in case_figures(case).items():
            client.log_figure(run.info.run_id, figure, name)
        client.set_terminated(run.info.run_id, status=run_status([case]), end_time=case_end)
    client.log_text(parent_id, results_json(results), RESULTS_ARTIFACT)
    for path in artifacts:  # a folder (the scoreboard's images) keeps its name beside the page that links it
        if Path(path).is_dir():
            client.log_artifacts(parent_id, str(path), artifact_path=Path(path).name)
        else:
            client.log_artifact(parent_id, str(path))
    client.set_terminated(parent_id, status=run_status(results.cases, interrupted=results.interrupted), end_time=end)
    return LoggedRun(experiment_id, parent_id, case_runs)


def case_span(case: CaseResult, results: RunResults) -> tuple[int, int]:
    """(start, end) of the case in milliseconds since the epoch, as MLflow keeps run times: when it started and
    how long it took; a case that recorded no start (skipped, older results) is placed at the run's time."""
    start = _ms(case.started or results.created)
    return start, start + round(1000 * (case.duration_s or 0.0))


def _ms(iso: str) -> int:
    """An ISO 8601 UTC time in milliseconds since the epoch; now when it is empty or unreadable."""
    try:
        return round(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except (ValueError, AttributeError):
        return round(time.time() * 1000)


def _log_batch(client, run_id: str, metrics: dict[str, float], params: dict[str, str], when: int) -> None:
    """Metrics (measured at `when`, ms since the epoch: the end of the case) and params in batches within MLflow's
    per-request limits (1000 metrics, 100 params)."""
    from mlflow.entities import Metric, Param

    metric_rows = [Metric(k, v, when, 0) for k, v in metrics.items()]
    param_rows = [Param(k, v) for k, v in params.items()]
    for start in range(0, max(len(metric_rows), len(param_rows)), 100):
        client.log_batch(run_id, metrics=metric_rows[start:start + 100], params=param_rows[start:start + 100])


@contextlib.contextmanager
def _bounded_http_retries() -> Iterator[None]:
    """Few, short HTTP retries while logging, unless the user chose MLflow's settings; restored after."""
    added = {k: v for k, v in BOUNDED_HTTP_SETTINGS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


# -- what is logged (pure functions of the results) ----------------------------------------------------

def session_tags(results: RunResults) -> dict[str, str]:
    failing = [c for c in results.cases if c.outcome in ("failed", "error")]
    tags = {"fmtest.version": results.fmtest_version, "fmtest.created": results.created,
            "fmtest.verdict": "FAIL" if failing else "PASS"}
    if results.git_commit:
        tags["mlflow.source.git.commit"] = results.git_commit
    for name, version in results.environment.items():
        if version is not None:
            tags[f"env.{name}"] = str(version)
    return tags


def session_params(results: RunResults) -> dict[str, str]:
    cfg, rules = results.config, results.config.rules
    values = {"config_file": cfg.config_file, "datasets": cfg.datasets, "pipelines": cfg.pipelines,
              "device": cfg.device}
    if rules is not None:
        values.update(baseline_tolerance=rules.baseline_tolerance, bootstrap_resamples=rules.bootstrap_resamples,
                      seed=rules.seed)
    return {k: _param_value(v) for k, v in values.items() if v is not None}


def session_metrics(results: RunResults) -> dict[str, float]:
    return {f"cases_{o}": float(sum(c.outcome == o for c in results.cases))
            for o in ("passed", "failed", "error", "skipped")}


def case_params(case: CaseResult, results: RunResults) -> dict[str, str]:
    cfg = results.config
    params = {"pipeline": case.pipeline, "dataset": case.dataset, "task": case.task,
              "model_sha256": case.model_sha256, "config_file": cfg.config_file,
              "prompt": cfg.prompts.get(case.dataset),
              "config_fingerprint": case.config_fingerprint, "dataset_fingerprint": case.dataset_fingerprint}
    options = case.options or cfg.pipeline_options.get(case.pipeline) or {}  # results without `options`: the table
    params.update({f"option.{k}": v for k, v in options.items()})
    return {k: _param_value(v) for k, v in params.items() if v is not None}


def case_metrics(case: CaseResult) -> dict[str, float]:
    """Every recorded metric and interval end, the case's duration and, for API pipelines, what the run
    spent. An undefined metric (NaN, or null once read back from JSON) is logged as NaN: MLflow shows it
    as such, where leaving it out would look like a metric never computed."""
    values = dict(case.metrics)
    values.update(case.usage)
    if case.duration_s is not None:
        values["duration_s"] = case.duration_s
    return {k: math.nan if v is None else float(v) for k, v in values.items()
            if v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))}


def case_tags(case: CaseResult, results: RunResults) -> dict[str, str]:
    tags = {"fmtest.verdict": OUTCOME_WORD.get(case.outcome, case.outcome.upper()), "fmtest.outcome": case.outcome}
    if case.message:
        tags["fmtest.message"] = case.message[:MAX_TAG_LENGTH]
    for name, limit in case.thresholds.items():
        tags[f"threshold.{name}"] = f"{limit:g}"
    regressed = regressed_metrics(case)
    if regressed:
        tags["fmtest.regressed"] = ",".join(regressed)
    if results.git_commit:
        tags["mlflow.source.git.commit"] = results.git_commit
    return tags


def image_table(case: CaseResult) -> dict[str, list]:
    """The per-image rows as columns (MLflow's table form); columns empty for every image are left out, and so is
    each image's region summary (score counts for the case's region figures, not a reviewer's column)."""
    rows = [{f.name: _cell(getattr(image, f.name)) for f in fields(image) if f.name != "region"}
            for image in case.images]
    columns = [k for k in rows[0] if any(r[k] is not None for r in rows)]
    return {k: [r[k] for r in rows] for k in columns}


def _cell(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _param_value(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return text[:MAX_PARAM_LENGTH]
