"""`pip install fmtest` without extras: the baselines still run, every foundation-model pipeline is
skipped naming the extra that brings its SDK, and a tracker that is not installed costs only its output.

A fresh venv per test would take minutes; instead the SDKs are made uninstalled for one fresh
interpreter by an import hook that answers as Python does for a package that is not there. That
interpreter imports torch and builds padim's network (about 14 CPU seconds): those tests are slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fakes import REPO

from fmtest.util.extras import EXTRA_OF_MODULE, install_hint, installed

SDKS = ("segment_anything", "open_clip", "transformers", "google.genai", "openai", "mlflow", "anomalib")
EXPECTED_HINT = {
    "gdino_sam": "fmtest[sam,gdino]", "saa_plus": "fmtest[sam,gdino]", "sam_clip": "fmtest[sam,clip]",
    "clip_surgery_sam": "fmtest[sam,clip]", "gemini_basic": "fmtest[gemini]", "gemini_refined": "fmtest[gemini]",
    "openai_vlm": "fmtest[openai]", "anomalib": "fmtest[anomalib]",
}
AVAILABILITY_VARIABLES = ("FMTEST_WEIGHTS", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY",
                          "FMTEST_OPENAI_BASE_URL", "FMTEST_OPENAI_MODEL", "MLFLOW_TRACKING_URI")

WITHOUT_EXTRAS = """
import importlib.abc, json, sys
from pathlib import Path

BLOCKED = sys.argv[1].split(",")


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())

from fmtest.errors import Unavailable
from fmtest.models.efficientnet import build_efficientnet_lite0
from fmtest.pipelines import PIPELINES, pipeline_class
from fmtest.pipelines.base import PipelineContext
from fmtest.report.publish import publish
from fmtest.verdict.results import CaseResult, RunResults
import fmtest.cli, fmtest.plugin.hooks

empty = Path(sys.argv[2])
outcomes = {}
for name in PIPELINES:
    try:
        pipeline_class(name).check_available(PipelineContext(dataset="satsim", weights_dir=empty, suite_dir=empty))
        outcomes[name] = "available"
    except Unavailable as e:
        outcomes[name] = f"unavailable: {e}"
build_efficientnet_lite0()  # padim's network: core dependencies only
results = RunResults(cases=[CaseResult("padim-satsim", "padim", "satsim", "segmentation", metrics={"iou": 0.5})])
published = publish(results, metrics=empty / "metrics.json", mlflow_uri="http://127.0.0.1:9")
print(json.dumps({"outcomes": outcomes, "published": published,
                  "loaded": [m for m in BLOCKED if m in sys.modules]}))
"""


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no_extras")
    env = {k: v for k, v in os.environ.items() if k not in AVAILABILITY_VARIABLES}
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, ",".join(SDKS), str(folder)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), folder


@pytest.mark.slow
def test_baselines_run_without_any_extra(without_extras):
    report, _ = without_extras
    assert report["outcomes"]["reference_diff"] == "available"
    assert report["outcomes"]["padim"] == "available"
    assert report["outcomes"]["patchcore"] == "available"
    assert report["loaded"] == []


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", sorted(EXPECTED_HINT))
def test_model_pipelines_are_skipped_naming_the_extra(without_extras, pipeline):
    outcome = without_extras[0]["outcomes"][pipeline]
    assert outcome.startswith(f"unavailable: {pipeline} needs "), outcome
    assert f"pip install '{EXPECTED_HINT[pipeline]}'" in outcome


@pytest.mark.slow
def test_a_missing_tracker_costs_only_its_own_output(without_extras):
    report, folder = without_extras
    warning = "fmtest: warning: logging to MLflow needs mlflow, not installed: pip install 'fmtest[mlflow]'"
    assert report["published"] == [f"metrics file: {folder / 'metrics.json'}", warning]
    assert json.loads((folder / "metrics.json").read_text()) == {"padim-satsim": {"iou": 0.5}}


def test_every_sdk_has_an_extra_declared_in_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRA_OF_MODULE.values()) <= set(extras)
    assert set(EXTRA_OF_MODULE.values()) <= set(extras["all"][0].split("[")[1].rstrip("]").split(","))
    assert not any(dep.startswith("torch==") for dep in project["dependencies"])  # pins live in constraints.txt


def test_presence_is_asked_without_importing_and_the_hint_merges_extras():
    assert installed("json") and not installed("fmtest_no_such_module") and not installed("no_such_parent.child")
    assert "fmtest_no_such_module" not in sys.modules
    assert install_hint(["segment_anything", "open_clip", "segment_anything"]) == "pip install 'fmtest[sam,clip]'"
