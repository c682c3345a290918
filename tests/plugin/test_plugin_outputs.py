"""CI and tracker outputs of a pytest run: the Markdown scoreboard (file and GitHub job summary), the flat
metrics file, and MLflow, read back from a real tracking server started for the test."""

from __future__ import annotations

import datetime
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fakes import TESTS
from toy_fmtest import SUITE_CONFIG, make_suite, toy_config

import fmtest
from fmtest.config.settings import resolve_settings
from fmtest.errors import ConfigError

TOY = TESTS / "toy_fmtest.py"
CONFIG = SUITE_CONFIG.split('[thresholds."toy_empty-toy"]')[0]  # toy_empty held to every threshold
SERVER_START_LIMIT_S = 240  # a cold `mlflow server` creates its SQLite schema first: ~40 s on 2 busy cores


@pytest.fixture
def suite(pytester):
    (pytester.path / "fmtest.toml").write_text("")
    make_suite(pytester)
    (pytester.path / "fmtest.toml").write_text(toy_config(base=CONFIG))
    return pytester


def test_one_run_writes_the_markdown_summary_and_metrics_file(suite, monkeypatch):
    summary = suite.path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = suite.runpytest("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache", "-q",
                             "--fm-markdown=out/board.md", "--fm-metrics=out/metrics.json", "--fm-results=out.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # toy_empty misses its gates: the verdict is unchanged
    board = (suite.path / "out" / "board.md").read_text()
    assert "| `toy_threshold-toy` | 🟢 PASS | IoU 1.000 " in board and "| `toy_empty-toy` | 🔴 FAIL | IoU **0.000 " in board
    assert "slip: `test/006`" in board  # toy_empty passes every defective image as OK
    assert summary.read_text() == "earlier step\n" + board + "\n"
    metrics = json.loads((suite.path / "out" / "metrics.json").read_text())
    results = json.loads((suite.path / "out.json").read_text())
    assert list(metrics) == [c["id"] for c in results["cases"]]
    assert metrics["toy_threshold-toy"]["iou"] == pytest.approx(results["cases"][0]["metrics"]["iou"])
    result.stdout.fnmatch_lines([f"Markdown scoreboard: {suite.path / 'out' / 'board.md'}",
                                 f"GitHub job summary: {summary}", "metrics file: *metrics.json"])


def _settings(tmp_path, cli=None, config=""):
    (tmp_path / "fmtest.toml").write_text(config)
    values = {"config": "fmtest.toml", **(cli or {})}
    return resolve_settings(lambda name: values.get(name), tmp_path)


def test_outputs_and_tracker_come_from_cli_environment_or_config(tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    config = 'markdown = "reports/board.md"\nmetrics = "reports/metrics.txt"\n' \
             '[mlflow]\ntracking_uri = "http://tracker:5000"\nexperiment = "inspection"\n'
    s = _settings(tmp_path, config=config)
    assert (s.markdown, s.metrics) == (tmp_path / "reports/board.md", tmp_path / "reports/metrics.txt")
    assert (s.mlflow, s.mlflow_experiment, s.step_summary) == ("http://tracker:5000", "inspection", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    s = _settings(tmp_path, config=config)
    assert (s.mlflow, s.mlflow_experiment, s.step_summary) == ("http://env:5000", "from-env", tmp_path / "summary.md")
    assert _settings(tmp_path, {"mlflow": "http://cli:5000"}, config).mlflow == "http://cli:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert _settings(tmp_path).mlflow is None


def test_a_malformed_mlflow_table_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"fmtest\.toml: \[mlflow\] uri: unknown key; accepted: tracking_uri, experiment"):
        _settings(tmp_path, config='[mlflow]\nuri = "http://x"\n')


# -- a real MLflow tracking server ---------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a SQLite store and artifacts in tmp_path; always stopped."""
    pytest.importorskip("mlflow")
    port = _free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below, after the server is gone
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_LIMIT_S
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: uvicorn worker included
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.slow
def test_a_session_is_one_parent_run_with_a_child_run_per_case(suite, mlflow_server, monkeypatch):
    from mlflow import MlflowClient

    # the run and its xdist workers are fresh processes: they import this fmtest and the toy suite
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TOY.parent), str(Path(fmtest.__file__).parent.parent)]))
    result = suite.runpytest_subprocess("-n", "2", "-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache",
                                        f"--fm-mlflow={mlflow_server}", "--fm-report=board.html",
                                        "--fm-markdown=board.md", "--fm-metrics=metrics.json",
                                        "--fm-results=out.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"MLflow: run * (2 cases) in experiment 'fmtest' at {mlflow_server}"])
    results = json.loads((suite.path / "out.json").read_text())

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("fmtest")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # its runs, not the GenAI view
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3  # only the xdist controller logged
    parent = parents[0]
    assert parent.info.status == "FAILED"  # a run with a failed case is not green in the tracker
    children = {r.info.run_name: r for r in runs if r is not parent}
    assert set(children) == {"toy_threshold-toy", "toy_empty-toy"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    assert parent.data.tags["fmtest.verdict"] == "FAIL" and parent.data.metrics["cases_failed"] == 1
    assert "| `toy_empty-toy` | 🔴 FAIL |" in parent.data.tags["mlflow.note.content"]
    assert parent.data.params["pipelines"] == "toy_threshold,toy_empty"

    for case in results["cases"]:
        run = client.get_run(children[case["id"]].info.run_id)
        for name, value in case["metrics"].items():  # undefined (null in the JSON) is logged as NaN
            logged_value = run.data.metrics[name]
            assert math.isnan(logged_value) if value is None else logged_value == pytest.approx(value), name
        assert {"iou_ci_low", "iou_ci_high", "f2_ci_low", "f2_ci_high"} <= set(run.data.metrics)
        assert run.data.params["pipeline"] == case["pipeline"] and run.data.params["dataset"] == "toy"
        assert run.data.params["model_sha256"] == case["model_sha256"]
        assert run.data.params["config_file"] == str(suite.path / "fmtest.toml")
        assert run.data.tags["threshold.iou"] == "0.6" and run.data.tags["threshold.f2"] == "0.8"
        assert run.data.tags["fmtest.verdict"] == {"passed": "PASS", "failed": "FAIL"}[case["outcome"]]
        assert run.info.status == {"passed": "FINISHED", "failed": "FAILED"}[case["outcome"]]
        # MlflowClient.load_table searches through the global tracking URI, not the client's: read the artifact
        assert json.loads(run.data.tags["mlflow.loggedArtifacts"]) == [{"path": "images.json", "type": "table"}]
        plots = {a.path for a in client.list_artifacts(run.info.run_id)} - {"images.json"}
        assert {"confusion_matrix.png", "precision_recall.png", "iou_histogram.png"} <= plots
        started = {c["id"]: c["started"] for c in results["cases"]}[case["id"]]
        assert abs(run.info.start_time - 1000 * datetime.datetime.fromisoformat(started).timestamp()) < 1000
        assert run.info.end_time - run.info.start_time == pytest.approx(1000 * case["duration_s"], abs=2)
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "images.json", str(suite.path))).read_text())
        rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
        assert [(r["id"], r["label"], r["predicted"]) for r in rows] == [
            (img["id"], img["label"], img["predicted"]) for img in case["images"]]

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"results.json", "board.html", "board.md", "metrics.json", "board_files"}  # with its images
    layers = {a.path for a in client.list_artifacts(parent.info.run_id, "board_files")}
    assert layers == {"board_files/toy_threshold-toy", "board_files/toy_empty-toy"}
    logged = json.loads(Path(client.download_artifacts(parent.info.run_id, "results.json", str(suite.path))).read_text())
    assert [c["id"] for c in logged["cases"]] == [c["id"] for c in results["cases"]]


@pytest.mark.slow
def test_a_tracker_that_fails_costs_only_its_own_output(suite, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TOY.parent), str(Path(fmtest.__file__).parent.parent)]))
    result = suite.runpytest_subprocess("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache", "-q",
                                        "--fm-mlflow=http://127.0.0.1:9", "--fm-results=out.json",
                                        "--fm-report=board.html", "--fm-metrics=metrics.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the same verdict as without a tracker
    result.stdout.fnmatch_lines(["fmtest: warning: could not log to MLflow at http://127.0.0.1:9: *"])
    for name in ("out.json", "board.html", "metrics.json"):
        assert (suite.path / name).stat().st_size > 0, name
