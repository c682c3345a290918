"""The CI examples' baseline steps, run as CI would run them: the baseline is the newest *finished* run
on the default branch (a failing gate must not leave branches without one), and a runner without the
GitHub CLI still runs the suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fakes import REPO

yaml = pytest.importorskip("yaml")
EXAMPLES = REPO / "examples"
BASH = shutil.which("bash")  # found before a test narrows PATH
pytestmark = pytest.mark.skipif(BASH is None, reason="the CI steps are bash scripts")


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, "-eo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


# -- GitHub Actions -------------------------------------------------------------------------------------

def _github_baseline_step() -> dict:
    steps = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())["jobs"]["evaluate"]["steps"]
    return next(s for s in steps if s.get("name") == "Fetch main's results as the baseline")


FAKE_GH = """#!/bin/sh
# GitHub CLI stand-in: main has runs 55 (cancelled before uploading) and 54 (a failed gate, with results)
echo "$*" >> "$GH_CALLS"
case "$1 $2" in
  "run list") printf '55\\n54\\n' ;;
  "run download") [ "$3" = 54 ] || exit 1; mkdir -p "$7" && echo '{"cases": [], "run": 54}' > "$7/results.json" ;;
esac
"""


def test_github_baseline_is_the_newest_finished_run_with_results(tmp_path):
    step = _github_baseline_step()
    assert step["continue-on-error"] is True
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_ENV": str(tmp_path / "github_env"),
           "GH_CALLS": str(tmp_path / "calls")}
    done = _bash(step["run"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "github_env").read_text() == "FMTEST_BASELINE_OPT=--fm-baseline=baseline/results.json\n"
    assert json.loads((tmp_path / "baseline" / "results.json").read_text())["run"] == 54
    listing = (tmp_path / "calls").read_text().splitlines()[0]
    assert "--status completed" in listing and "--branch main" in listing


def test_github_runner_without_gh_runs_the_suite_without_a_baseline(tmp_path):
    empty = tmp_path / "empty_path"
    empty.mkdir()
    done = _bash(_github_baseline_step()["run"], tmp_path, {"PATH": str(empty), "GITHUB_ENV": str(tmp_path / "env")})
    assert done.returncode == 0
    assert "::warning::the GitHub CLI (gh) is not installed" in done.stdout
    assert not (tmp_path / "env").exists()


# -- GitLab CI ------------------------------------------------------------------------------------------

class _GitLabApi(BaseHTTPRequestHandler):
    """The two GitLab API calls the snippet makes, for project 7 whose default branch is main."""

    jobs: list[dict]  # set per test (a subclass each)
    artifacts: dict[int, bytes]

    def do_GET(self):  # the http.server hook name
        if self.headers.get("JOB-TOKEN") != "job-token":
            return self._reply(401, b"{}")
        path = self.path.split("?")[0]
        if path == "/api/v4/projects/7/jobs":
            return self._reply(200, json.dumps(self.jobs).encode())
        for job_id, data in self.artifacts.items():
            if path == f"/api/v4/projects/7/jobs/{job_id}/artifacts/reports/results.json":
                return self._reply(200, data)
        return self._reply(404, b"{}")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def gitlab(tmp_path):
    """Runs the snippet's baseline script against a local GitLab API serving the given jobs and artifacts."""
    api = type("Api", (_GitLabApi,), {"jobs": [], "artifacts": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())["fmtest"]["before_script"][-1]
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "CI_API_V4_URL": f"http://127.0.0.1:{server.server_address[1]}/api/v4", "CI_PROJECT_ID": "7",
           "CI_JOB_TOKEN": "job-token", "CI_JOB_NAME": "fmtest", "CI_DEFAULT_BRANCH": "main",
           "CI_COMMIT_BRANCH": "feature"}

    def run(jobs: list[dict], artifacts: dict[int, bytes]) -> subprocess.CompletedProcess:
        api.jobs, api.artifacts = jobs, artifacts
        return _bash(script + '\necho "BASELINE_OPT=$BASELINE_OPT"', tmp_path, env)

    yield run
    server.shutdown()
    server.server_close()


def test_gitlab_baseline_is_the_newest_finished_job_on_the_default_branch(gitlab, tmp_path):
    jobs = [{"id": 31, "name": "fmtest", "ref": "feature", "status": "failed"},
            {"id": 30, "name": "lint", "ref": "main", "status": "success"},
            {"id": 21, "name": "fmtest", "ref": "main", "status": "failed"},  # its artifacts expired
            {"id": 20, "name": "fmtest", "ref": "main", "status": "failed"},
            {"id": 10, "name": "fmtest", "ref": "main", "status": "success"}]
    done = gitlab(jobs, {20: b'{"cases": [], "job": 20}', 10: b'{"cases": [], "job": 10}'})
    assert done.returncode == 0, done.stderr
    assert "BASELINE_OPT=--fm-baseline=baseline/results.json" in done.stdout
    assert "baseline: results of job 20 (failed) on main" in done.stdout
    assert json.loads((tmp_path / "baseline" / "results.json").read_text())["job"] == 20


def test_gitlab_without_results_on_the_default_branch_runs_without_a_baseline(gitlab, tmp_path):
    done = gitlab([{"id": 31, "name": "fmtest", "ref": "feature", "status": "failed"}], {})
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("BASELINE_OPT=")
    assert "no results from main yet; running without a baseline" in done.stdout


def test_every_ci_example_fails_a_run_that_judged_nothing():
    """A runner missing every key or checkpoint skips every case: the documented CI must not show that as green."""
    def commands(name: str, start: str) -> list[str]:
        lines = (EXAMPLES / name).read_text().splitlines()
        return [line for line in lines if line.strip().lstrip("- ").startswith(start)]

    for name in ("github-actions.yml", "gitlab-ci.yml"):
        (run,) = commands(name, "pytest suites")
        assert "--fm-require-judged" in run, name
    for name in ("github-actions-sharded.yml", "gitlab-ci-sharded.yml"):  # the merge judges a sharded run
        (merge,) = commands(name, "fmtest merge")
        assert "--require-judged" in merge, name
