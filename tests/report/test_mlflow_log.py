"""What a run sends to MLflow, as pure functions of the results (the server round trip is in
tests/test_plugin_outputs.py, marked slow)."""

from __future__ import annotations

import json
import math

from fmtest.config.suite import SuiteConfig
from fmtest.report.mlflow_log import (
    MAX_PARAM_LENGTH,
    MAX_TAG_LENGTH,
    case_metrics,
    case_params,
    case_tags,
    image_table,
    run_status,
    session_metrics,
    session_params,
    session_tags,
)
from fmtest.verdict.results import (
    BaselineComparison,
    CaseResult,
    ImageResult,
    MetricChange,
    RunConfig,
    RunResults,
)


def make_results() -> RunResults:
    case = CaseResult(
        "gemini_basic-elpv", "gemini_basic", "elpv", "classification", "failed", "f2 below" * 1000,
        metrics={"f2": 0.7, "f2_ci_low": 0.6, "f2_ci_high": 0.8, "precision": None, "recall": math.nan,
                 "n_images": 200.0},
        thresholds={"f2": 0.8, "max_false_alarm_rate": 0.05},
        images=[ImageResult("cell_1.png", "a" * 64, "NOK", "OK", score=0.9, reasoning="looks fine"),
                ImageResult("cell_2.png", "b" * 64, "OK", "OK", score=math.inf)],
        model_sha256="gemini-2.5-pro", config_fingerprint="cfg1", dataset_fingerprint="data1", duration_s=12.5,
        usage={"prompt_tokens": 1000, "cost_usd": 0.25},
        baseline=BaselineComparison("compared", "", 0.02, changes={
            "f2": MetricChange(baseline=0.75, current=0.7, delta=-0.05, regressed=True),
            "recall": MetricChange(baseline=0.5, current=0.5, delta=0.0)}))
    config = RunConfig(config_file="/suite/fmtest.toml", datasets=["elpv"], pipelines=["gemini_basic", "padim"],
                       device="cpu", prompts={"elpv": "a cracked solar cell"},
                       pipeline_options={"gemini_basic": {"model": "gemini-2.5-pro", "api_key": "<redacted>",
                                                          "prompt_file": "x" * 7000}},
                       rules=SuiteConfig().rules)
    skipped = CaseResult("sam_clip-elpv", "sam_clip", "elpv", "classification", "skipped", "no SAM")
    return RunResults(cases=[case, skipped], config=config, environment={"torch": "2.14.1", "cuda": None},
                      created="2026-11-29T10:00:00Z", git_commit="c0ffee")


def test_case_params_carry_what_produced_the_numbers():
    results = make_results()
    params = case_params(results.cases[0], results)
    assert params["pipeline"] == "gemini_basic" and params["dataset"] == "elpv" and params["task"] == "classification"
    assert params["model_sha256"] == "gemini-2.5-pro" and params["config_file"] == "/suite/fmtest.toml"
    assert params["prompt"] == "a cracked solar cell"
    assert params["option.model"] == "gemini-2.5-pro" and params["option.api_key"] == "<redacted>"
    assert len(params["option.prompt_file"]) == MAX_PARAM_LENGTH  # cut to what MLflow accepts
    assert params["config_fingerprint"] == "cfg1" and params["dataset_fingerprint"] == "data1"
    assert "model_sha256" not in case_params(results.cases[1], results)  # absent, not the string "None"


def test_case_metrics_keep_undefined_values_as_nan_and_add_duration_and_spend():
    metrics = case_metrics(make_results().cases[0])
    assert metrics["f2"] == 0.7 and metrics["f2_ci_low"] == 0.6 and metrics["n_images"] == 200.0
    assert math.isnan(metrics["precision"]) and math.isnan(metrics["recall"])
    assert metrics["duration_s"] == 12.5 and metrics["prompt_tokens"] == 1000.0 and metrics["cost_usd"] == 0.25
    assert all(isinstance(v, float) for v in metrics.values())


def test_case_tags_hold_verdict_thresholds_and_regressions():
    results = make_results()
    tags = case_tags(results.cases[0], results)
    assert tags["fmtest.verdict"] == "FAIL" and tags["fmtest.outcome"] == "failed"
    assert tags["threshold.f2"] == "0.8" and tags["threshold.max_false_alarm_rate"] == "0.05"
    assert tags["fmtest.regressed"] == "f2"
    assert len(tags["fmtest.message"]) == MAX_TAG_LENGTH
    assert tags["mlflow.source.git.commit"] == "c0ffee"
    assert case_tags(results.cases[1], results)["fmtest.verdict"] == "SKIP"


def test_image_table_is_columns_without_empty_ones_or_non_finite_numbers():
    table = image_table(make_results().cases[0])
    assert table["id"] == ["cell_1.png", "cell_2.png"] and table["predicted"] == ["OK", "OK"]
    assert table["reasoning"] == ["looks fine", None]
    assert table["score"] == [0.9, None]  # infinity is no JSON number
    assert "iou" not in table and "error" not in table  # no image has one


def test_image_table_leaves_out_the_region_summaries():
    import numpy as np

    from fmtest.metrics.region import summarise_image

    case = make_results().cases[0]
    truth = np.zeros((8, 8), bool)
    truth[2:4, 2:4] = True
    case.images[0].region = summarise_image(case.images[0].id, truth.astype(np.float32), truth, truth)
    table = image_table(case)
    assert "region" not in table and table["id"] == ["cell_1.png", "cell_2.png"]
    json.dumps(table)  # what MLflow stores: plain JSON


def test_session_run_summarises_the_run():
    results = make_results()
    assert session_params(results) == {"config_file": "/suite/fmtest.toml", "datasets": "elpv",
                                       "pipelines": "gemini_basic,padim", "device": "cpu", "seed": "0",
                                       "baseline_tolerance": "0.02", "bootstrap_resamples": "1000"}
    assert session_metrics(results) == {"cases_passed": 0.0, "cases_failed": 1.0, "cases_error": 0.0,
                                        "cases_skipped": 1.0}
    tags = session_tags(results)
    assert tags["fmtest.verdict"] == "FAIL" and tags["env.torch"] == "2.14.1" and "env.cuda" not in tags
    assert tags["mlflow.source.git.commit"] == "c0ffee" and tags["fmtest.version"] == results.fmtest_version


def test_a_run_is_green_in_the_tracker_only_when_every_case_passed_or_skipped():
    passed = CaseResult("a-b", "a", "b", "classification", "passed")
    skipped = CaseResult("c-b", "c", "b", "classification", "skipped")
    assert run_status([passed, skipped]) == "FINISHED"
    for outcome in ("failed", "error"):
        assert run_status([passed, CaseResult("d-b", "d", "b", "classification", outcome)]) == "FAILED"
    assert run_status([passed], interrupted=True) == "FAILED"


def test_a_variants_child_run_carries_every_option_it_ran_with():
    results = make_results()
    case = results.cases[0]
    case.options = {"model": "gemini-2.5-pro", "temperature": 0.0, "api_key": "<redacted>"}  # inherited + defaults
    params = case_params(case, results)
    assert params["option.temperature"] == "0.0" and "option.prompt_file" not in params  # the case's, not the table's


def test_a_child_run_spans_the_cases_own_time_not_the_logging_time():
    from fmtest.report.mlflow_log import case_span

    results = make_results()
    case = results.cases[0]
    case.started = "2026-11-29T09:00:00Z"
    start, end = case_span(case, results)
    assert start == 1795942800000 and end - start == 12500  # 09:00:00 UTC, 12.5 s
    assert case_span(results.cases[1], results)[0] == 1795946400000  # no start recorded: placed at the run's time


def test_a_case_gets_the_plots_a_reviewer_wants():
    from fmtest.report.plots import case_figures

    images = [ImageResult(f"{i}", "s", "NOK" if i % 2 else "OK", "NOK" if i % 3 else "OK", score=i / 10,
                          iou=(i / 10 if i % 2 else None)) for i in range(10)]
    seg = CaseResult("padim-satsim", "padim", "satsim", "segmentation", "failed", thresholds={"iou": 0.6},
                     images=images)
    figures = case_figures(seg)
    assert set(figures) == {"confusion_matrix.png", "precision_recall.png", "iou_histogram.png"}
    for figure in figures.values():
        import io
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
    unscored = CaseResult("gemini-elpv", "gemini", "elpv", "classification", "passed",
                          images=[ImageResult("a", "s", "NOK", "NOK"), ImageResult("b", "s", "OK", "OK")])
    assert set(case_figures(unscored)) == {"confusion_matrix.png"}  # no scores, no IoU: no curve, no histogram
    assert case_figures(CaseResult("x-y", "x", "y", "segmentation", "error", images=images)) == {}
