"""Same inputs, same rows, bit for bit: the default suite's pipelines (reference_diff, padim, supervised) on
small satsim and ELPV sets give identical per-image rows and metrics in two case orders, with `-k`, on one
or two library threads, from a cold and a warm prediction cache; the warm run predicts nothing and imports
no model library."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fakes import SUITES

SMALL = """
default_datasets = ["satsim", "elpv"]
default_pipelines = ["reference_diff", "padim", "supervised"]
bootstrap_resamples = 200
[datasets.satsim]
n_train = 12
n_test_good = 10
n_test_defective = 10
[datasets.elpv]
n_train = 12
n_test_good = 10
n_test_defective = 10
[guardrails]
enabled = false
"""
# Set before fmtest configures: a process whose libraries already run on several threads (a user's conftest, an
# earlier test). fmtest must pin them to one per operation, or warps and convolutions differ in the last bits.
THREADS = """
import os
if os.environ.get("FMTEST_TEST_THREADS"):
    import cv2, torch
    torch.set_num_threads(int(os.environ["FMTEST_TEST_THREADS"]))
    cv2.setNumThreads(int(os.environ["FMTEST_TEST_THREADS"]))

def pytest_sessionfinish(session):  # which model libraries the run imported
    if os.environ.get("FMTEST_TEST_LOADED"):
        import json, sys
        with open(os.environ["FMTEST_TEST_LOADED"], "w") as f:
            json.dump([m for m in ("torch", "torchvision", "timm", "sklearn") if m in sys.modules], f)
"""
TIMING = {"images_per_second", "fit_seconds"}


def digests(path: Path) -> dict[str, tuple[str, str, str]]:
    """Case id -> (hash of its per-image rows, hash of its metrics but timing, outcome)."""
    out = {}
    for case in json.loads(path.read_text())["cases"]:
        rows = [(i["id"], i["label"], i["predicted"], i["score"], i["iou"], i["error"]) for i in case["images"]]
        metrics = {k: v for k, v in case["metrics"].items() if k not in TIMING}
        out[case["id"]] = (hashlib.sha256(json.dumps(rows).encode()).hexdigest(),
                           hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest(), case["outcome"])
    return out


@pytest.fixture
def small_suite(pytester):
    for name in ("test_segmentation.py", "test_classification.py"):
        shutil.copy(SUITES / name, pytester.path / name)
    (pytester.path / "fmtest.toml").write_text(SMALL)
    pytester.makeconftest(THREADS)
    return pytester


def test_rows_do_not_depend_on_order_history_threads_or_cache(small_suite, monkeypatch):
    monkeypatch.setenv("FMTEST_TEST_THREADS", "3")  # this process: three threads per operation before fmtest pins
    common = ("-p", "no:randomly", "-p", "no:cacheprovider", "-q", "--fm-config=fmtest.toml")
    small_suite.runpytest(*common, "--fm-cache=cache", "--fm-results=cold.json")
    first = digests(small_suite.path / "cold.json")
    assert len(first) == 6 and all(len(v[0]) == 64 for v in first.values())

    # every prediction cached, failed answers too (reference_diff cannot align every cell): a fresh process that
    # needs no model library, so imports none
    with monkeypatch.context() as warm_env:
        warm_env.delenv("FMTEST_TEST_THREADS")
        warm_env.setenv("FMTEST_TEST_LOADED", str(small_suite.path / "loaded.json"))
        small_suite.runpytest_subprocess(*common, "--fm-cache=cache", "--fm-results=warm.json")
    warm = json.loads((small_suite.path / "warm.json").read_text())
    assert all(c["cache"]["predicted"] == 0 for c in warm["cases"] if c["cache"] is not None)  # None: fit refused
    assert json.loads((small_suite.path / "loaded.json").read_text()) == []
    assert digests(small_suite.path / "warm.json") == first

    # another order, after the cases above ran in this process, without the cache
    small_suite.runpytest(*common, "--fm-no-cache", "--fm-dataset=elpv,satsim", "--fm-results=reordered.json")
    assert digests(small_suite.path / "reordered.json") == first

    small_suite.runpytest(*common, "--fm-no-cache", "-k", "elpv", "--fm-results=selected.json")
    selected = digests(small_suite.path / "selected.json")
    assert set(selected) == {c for c in first if c.endswith("-elpv")} and all(selected[c] == first[c] for c in selected)

    # a fresh process whose libraries were set to one thread before fmtest started
    monkeypatch.setenv("FMTEST_TEST_THREADS", "1")
    small_suite.runpytest_subprocess(*common, "--fm-no-cache", "--fm-results=threads.json")
    assert digests(small_suite.path / "threads.json") == first
