"""Model SDKs are optional installs (pip extras): `pip install fmtest` runs the baselines, and a
foundation-model pipeline whose SDK is missing is skipped with the extra that brings it.

Presence is asked of the import system without importing the SDK: `check_available` runs for every
case of a suite, also the skipped ones, and importing segment_anything or transformers costs seconds.
"""

from __future__ import annotations

import importlib.util

from fmtest.errors import Unavailable

EXTRA_OF_MODULE = {
    "segment_anything": "sam",
    "open_clip": "clip",
    "transformers": "gdino",
    "google.genai": "gemini",
    "openai": "openai",
    "mlflow": "mlflow",
    "pycocotools": "labels",
    "anomalib": "anomalib",
}


def installed(module: str) -> bool:
    """True when `module` can be imported; its parent packages may be imported to find out, it is not."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module without a spec
        return False


def install_hint(modules: list[str] | tuple[str, ...]) -> str:
    """The pip command that installs the extras bringing `modules`."""
    extras = ",".join(dict.fromkeys(EXTRA_OF_MODULE[m] for m in modules))
    return f"pip install 'fmtest[{extras}]'"


def require_sdks(modules: tuple[str, ...], needed_by: str) -> None:
    """Raise Unavailable naming every missing SDK and the one command that installs them all."""
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise Unavailable(f"{needed_by} needs {' and '.join(missing)}, not installed: {install_hint(missing)}")
