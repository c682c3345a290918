"""Where a run's numbers came from: the package versions that can change a number, and the git commit."""

from __future__ import annotations

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
