"""Where a run's numbers came from: the package versions that can change a number, and the git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

VERSIONED = ("numpy", "torch", "torchvision", "segment-anything", "open-clip-torch", "transformers", "google-genai",
             "openai", "opencv-python-headless")


def environment() -> dict[str, str | None]:
    """Package versions that can change a number: recorded so two runs can be compared honestly; the CUDA version
    when a model ran (importing torch only to ask would cost a cached rerun seconds)."""
    from importlib import metadata

    env: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in VERSIONED:
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    torch = sys.modules.get("torch")  # loaded by a model that ran; a run whose predictions were all cached ran none
    if torch is not None:
        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return env


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# CI checks out a commit, not a branch: these name the branch it ran for (GitHub Actions, GitLab CI, Jenkins, Buildkite)
_CI_BRANCH_VARIABLES = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BRANCH_NAME", "BUILDKITE_BRANCH")


def git_branch(cwd: Path | None = None) -> str | None:
    """The branch checked out, or in CI (a detached checkout) the branch the job ran for; None when unknown."""
    try:
        out = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], check=False, cwd=cwd, capture_output=True, text=True,
                             timeout=5)
        branch = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        branch = ""
    if branch and branch != "HEAD":
        return branch
    return next((os.environ[v] for v in _CI_BRANCH_VARIABLES if os.environ.get(v)), None)
