"""Where runs are kept (`--fm-runs-dir`, env, the suite config, the default) and when `--fm-baseline` names a
stored run rather than a file; the git branch a run records."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fmtest.config.settings import resolve_settings, runs_folder, stored_run_name
from fmtest.util.provenance import git_branch


def _settings(tmp_path: Path, **options):
    return resolve_settings(lambda flag: options.get(flag.replace("-", "_")), tmp_path)


def test_runs_folder_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("FMTEST_RUNS", raising=False)
    assert _settings(tmp_path).runs_dir == tmp_path / ".fmtest_runs"  # the schema's default, here
    assert _settings(tmp_path).store_run is True and _settings(tmp_path, no_store=True).store_run is False
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "fmtest.toml").write_text('runs_dir = "kept"\n')
    config = tmp_path / "suite" / "fmtest.toml"
    assert runs_folder(tmp_path, config_path=config) == tmp_path / "suite" / "kept"  # relative to the file
    monkeypatch.setenv("FMTEST_RUNS", "from-env")
    assert runs_folder(tmp_path, config_path=config) == tmp_path / "from-env"
    assert runs_folder(tmp_path, config_path=config, runs_dir="given") == tmp_path / "given"


def test_a_baseline_that_is_no_file_names_a_stored_run(tmp_path):
    (tmp_path / "main.json").write_text("{}")
    (tmp_path / "last").write_text("{}")  # a file of that name wins
    assert stored_run_name("main", tmp_path / "main") == "main"
    assert stored_run_name("last~1", tmp_path / "last~1") == "last~1"
    assert stored_run_name("last", tmp_path / "last") is None
    assert stored_run_name("main.json", tmp_path / "main.json") is None
    assert stored_run_name("gone.json", tmp_path / "gone.json") is None  # a missing file stays a file: not found
    assert stored_run_name("runs/x", tmp_path / "runs" / "x") is None
    settings = _settings(tmp_path, baseline="20261203T104512Z-ab12cd3")
    assert settings.baseline is None and settings.baseline_run == "20261203T104512Z-ab12cd3"
    settings = _settings(tmp_path, baseline="main.json")
    assert settings.baseline == tmp_path / "main.json" and settings.baseline_run is None


def test_the_branch_is_recorded_from_git_or_the_ci(tmp_path, monkeypatch):
    for variable in ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BRANCH_NAME", "BUILDKITE_BRANCH"):
        monkeypatch.delenv(variable, raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", "-b", "feature", str(tmp_path)], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    assert git_branch(tmp_path) == "feature"
    subprocess.run([*git, "-C", str(tmp_path), "checkout", "-q", "--detach"], check=True)
    assert git_branch(tmp_path) is None  # a detached checkout names no branch...
    monkeypatch.setenv("CI_COMMIT_REF_NAME", "main")
    assert git_branch(tmp_path) == "main"  # ...but CI says which branch it ran for
