"""Checking whether a pipeline can run, and keying its cache, imports no model library.

`pytest suites` asks every pipeline of every case (`check_available`), also those skipped for want
of weights or keys; importing torch, segment_anything, open_clip or an API SDK there costs seconds each.
A pipeline's cache key (its model id and fingerprint) is read from its files, so a rerun whose predictions
are all cached loads no model either. Each pipeline is checked in a fresh interpreter, so no other test's
imports hide one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "torchvision", "sklearn", "transformers", "segment_anything", "open_clip", "google.genai",
         "openai", "anomalib", "lightning")
FOUNDATION_PIPELINES = ("gdino_sam", "sam_clip", "clip_surgery_sam", "saa_plus", "gemini_basic", "gemini_refined",
                        "openai_vlm", "anomalib")
# Anything that would make a pipeline available: each check must end in Unavailable.
AVAILABILITY_VARIABLES = ("FMTEST_WEIGHTS", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY",
                          "FMTEST_OPENAI_BASE_URL", "FMTEST_OPENAI_MODEL")

CHECK = """
import json, sys
from pathlib import Path
from fmtest.errors import Unavailable
from fmtest.pipelines import pipeline_class
from fmtest.pipelines.base import PipelineContext

empty = Path(sys.argv[2])
try:
    pipeline_class(sys.argv[1]).check_available(PipelineContext(dataset="satsim", weights_dir=empty, suite_dir=empty))
    outcome = "available"
except Unavailable as e:
    outcome = f"unavailable: {e}"
print(json.dumps({"outcome": outcome, "loaded": [m for m in sys.argv[3:] if m in sys.modules]}))
"""


@pytest.mark.parametrize("name", FOUNDATION_PIPELINES)
def test_check_available_imports_no_model_library(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in AVAILABILITY_VARIABLES}
    done = subprocess.run([sys.executable, "-c", CHECK, name, str(tmp_path), *HEAVY], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["outcome"].startswith("unavailable: "), report
    assert report["loaded"] == [], f"{name}: check_available imported {report['loaded']}"


KEY = """
import json, sys
from fmtest.pipelines import pipeline_class
from fmtest.pipelines.base import PipelineContext

cls = pipeline_class(sys.argv[1])
context = PipelineContext(dataset="satsim")
cls.check_available(context)
pipeline = cls(context)
print(json.dumps({"key": [pipeline.fingerprint, pipeline.model_id],
                  "loaded": [m for m in sys.argv[2:] if m in sys.modules]}))
"""


@pytest.mark.parametrize("name", ["reference_diff", "padim", "patchcore", "supervised"])
def test_the_default_pipelines_cache_key_imports_no_model_library(name):
    done = subprocess.run([sys.executable, "-c", KEY, name, *HEAVY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert all(report["key"]) and report["loaded"] == [], report
