"""The LVLM pipelines through `pytest suites`, against local Gemini and OpenAI-compatible servers:
the documented way to point fmtest at an endpoint (environment variables) works end to end, the
scoreboard shows F2 with its interval, and a rerun sends nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fakes import REPO
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
