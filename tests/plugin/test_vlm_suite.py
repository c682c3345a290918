"""The LVLM pipelines through `pytest suites`, against local Gemini and OpenAI-compatible servers:
the documented way to point fmtest at an endpoint (environment variables) works end to end, the
scoreboard shows F2 with its interval, and a rerun sends nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fakes import REPO, unwritable_folder
from vlm_servers import GeminiServer, OpenAIServer

ROOT = REPO
CONFIG = """
[datasets.satsim]
size = 96
n_train = 2
n_test_good = 4
n_test_defective = 3
[pipelines.gemini_basic]
backoff_initial_s = 0.01
[pipelines.openai_vlm]
backoff_initial_s = 0.01
[guardrails]
enabled = false
"""


def _nok_if_bright(number, request, server):
    """A toy model: NOK when the last image (the one inspected) has a bright spot."""
    verdict = "NOK" if request.images[-1].max() > 200 else "OK"
    return server.answer(json.dumps({"label": verdict, "reasoning": f"request {number}"}))


def _run(tmp_path, env):
    args = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:randomly", "-p", "no:cacheprovider",
            f"--fm-config={tmp_path / 'fmtest.toml'}", "--fm-dataset=satsim",
            "--fm-pipeline=gemini_basic,openai_vlm", f"--fm-cache={tmp_path / 'cache'}",
            f"--fm-results={tmp_path / 'results.json'}", "-q"]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_gemini_and_openai_vlm_run_through_the_suite_and_resume_for_free(tmp_path):
    (tmp_path / "fmtest.toml").write_text(CONFIG)
    gemini = GeminiServer(script=lambda n, r: _nok_if_bright(n, r, GeminiServer))
    openai = OpenAIServer(script=lambda n, r: _nok_if_bright(n, r, OpenAIServer))
    with gemini, openai:
        env = {**os.environ, "GEMINI_API_KEY": "test-key", "FMTEST_GEMINI_BASE_URL": gemini.base_url,
               "FMTEST_OPENAI_BASE_URL": f"{openai.base_url}/v1", "FMTEST_OPENAI_MODEL": "local-vlm",
               "OPENAI_API_KEY": "test-key"}
        first = _run(tmp_path, env)
        out = first.stdout + first.stderr
        assert first.returncode in (0, 1), out  # 1: a case below its threshold is a verdict, not a crash
        assert "gemini_basic-satsim" in out and "openai_vlm-satsim" in out and "f2 " in out
        cases = {c["pipeline"]: c for c in json.loads((tmp_path / "results.json").read_text())["cases"]}
        for name in ("gemini_basic", "openai_vlm"):
            case = cases[name]
            assert case["task"] == "classification" and case["outcome"] in ("passed", "failed")
            assert case["metrics"]["n_images"] == 7 and case["metrics"]["f2_ci_low"] is not None
            assert all(i["reasoning"].endswith(tuple("0123456789")) for i in case["images"])
            assert case["usage"]["prompt_tokens"] > 0
        assert gemini.count == 7 and openai.count == 7  # one request per test image

        second = _run(tmp_path, env)
        assert second.returncode in (0, 1), second.stdout + second.stderr
        assert gemini.count == 7 and openai.count == 7  # a rerun sends nothing
        again = {c["pipeline"]: c for c in json.loads((tmp_path / "results.json").read_text())["cases"]}
        assert again["gemini_basic"]["metrics"]["f2"] == cases["gemini_basic"]["metrics"]["f2"]


def test_without_key_or_endpoint_both_skip_with_a_reason(tmp_path):
    (tmp_path / "fmtest.toml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "FMTEST_OPENAI_BASE_URL", "FMTEST_OPENAI_MODEL")}
    run = _run(tmp_path, env)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "2 skipped" in out.strip().splitlines()[-1]
    assert "GEMINI_API_KEY" in out and "FMTEST_OPENAI_BASE_URL" in out


def _gemini_only(tmp_path, server, *args, env_extra=None):
    """One run of gemini_basic on satsim through `pytest suites`, pointed at `server`."""
    env = {**os.environ, "GEMINI_API_KEY": "test-key", "FMTEST_GEMINI_BASE_URL": server.base_url, **(env_extra or {})}
    command = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:randomly", "-p", "no:cacheprovider",
               f"--fm-config={tmp_path / 'fmtest.toml'}", "--fm-dataset=satsim", "--fm-pipeline=gemini_basic",
               f"--fm-results={tmp_path / 'results.json'}", "-q", *args]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    (case,) = json.loads((tmp_path / "results.json").read_text())["cases"]
    return done, case


@pytest.mark.slow
def test_the_request_store_follows_the_cache_option_and_cache_clear(tmp_path):
    """Answers are kept in the run's cache folder and replayed; `fmtest cache clear` removes them; under
    --fm-no-cache nothing is replayed and no store is made anywhere (not in the shared temporary folder)."""
    (tmp_path / "fmtest.toml").write_text(CONFIG)
    temp = tmp_path / "tmp"
    temp.mkdir()
    with GeminiServer(script=lambda n, r: _nok_if_bright(n, r, GeminiServer)) as server:
        cached = (f"--fm-cache={tmp_path / 'cache'}",)
        _, case = _gemini_only(tmp_path, server, *cached)
        assert case["outcome"] in ("passed", "failed") and server.count == 7
        _gemini_only(tmp_path, server, *cached)
        assert server.count == 7  # replayed from the store (and the prediction cache)
        cleared = subprocess.run([sys.executable, "-m", "fmtest.cli", "cache", "clear", "--dir", str(tmp_path / "cache")],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=120, env=os.environ)
        assert cleared.returncode == 0, cleared.stderr
        _gemini_only(tmp_path, server, *cached)
        assert server.count == 14  # nothing stored any more: every image asked again
        for expected in (21, 28):
            _gemini_only(tmp_path, server, "--fm-no-cache", env_extra={"TMPDIR": str(temp)})
            assert server.count == expected  # no store: every run asks
        assert not list(temp.rglob("requests.sqlite"))


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["read-only", "a file in its place"])
def test_a_cache_folder_that_cannot_be_written_leaves_a_vlm_case_a_result(tmp_path, fault):
    if fault == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "fmtest.toml").write_text(CONFIG)
    with (unwritable_folder(tmp_path / "cache", read_only=fault == "read-only") as cache,
          GeminiServer(script=lambda n, r: _nok_if_bright(n, r, GeminiServer)) as server):
        done, case = _gemini_only(tmp_path, server, f"--fm-cache={cache}")
    out = done.stdout + done.stderr
    assert done.returncode in (0, 1), out
    assert case["outcome"] in ("passed", "failed"), case["message"]  # a result, never an error
    assert server.count == 7
    assert out.count("RequestStoreUnavailableWarning") == 1 and "PermissionError" not in out
