"""examples/plugin: a user's pipeline and dataset, found by `class =` in the config or through entry
points once installed, and run through `pytest suites`; broken plugins are one line naming them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from fakes import REPO
from PIL import Image

from fmtest.config.suite import parse_config
from fmtest.errors import ConfigError
from fmtest.metrics.functional import iou
from fmtest.pipelines.base import PipelineContext

ROOT = REPO
PLUGIN = ROOT / "examples" / "plugin"
SUITES = ROOT / "suites"


def write_parts(folder: Path, n_train: int = 6, n_good: int = 4, n_defect: int = 4, size: int = 32) -> None:
    """Aligned grey parts with a little noise; defective ones carry a bright square, with its mask."""
    rng = np.random.default_rng(0)
    part = np.full((size, size), 100, np.uint8)
    part[8:24, 8:24] = 160  # the die
    for split, n in (("train/good", n_train), ("test/good", n_good), ("test/defect", n_defect)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = (part + rng.integers(-2, 3, part.shape)).astype(np.uint8)
            if split == "test/defect":
                mask = np.zeros_like(part, bool)
                mask[4 + i : 10 + i, 12:18] = True
                image[mask] = 250
                (folder / "masks").mkdir(exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{i:02d}.png")
            Image.fromarray(image).save(folder / split / f"{i:02d}.png")


@pytest.fixture
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN / "src"))
    yield
    for name in [m for m in sys.modules if m.startswith("fmtest_example_plugin")]:
        del sys.modules[name]


def test_plugin_named_by_class_loads_checks_its_options_and_finds_the_defects(tmp_path, plugin_on_path):
    write_parts(tmp_path / "parts")
    config = parse_config({
        "pipelines": {"gauss": {"class": "fmtest_example_plugin.pipeline:PixelGaussian", "z_threshold": 5.0}},
        "datasets": {"my_parts": {"class": "fmtest_example_plugin.dataset:PartsFolder"}},
    })
    assert "gauss-my_parts" in config.case_ids() and config.pipeline_task("gauss") == "segmentation"
    with pytest.raises(ConfigError, match=r"^\[pipelines.gauss\]: out of range: z_threshold=-1.0"):
        parse_config({"pipelines": {"gauss": {"class": "fmtest_example_plugin.pipeline:PixelGaussian",
                                              "z_threshold": -1}}})
    dataset = config.dataset_class("my_parts").from_config(tmp_path, config.datasets["my_parts"])
    pipeline = config.pipeline_class("gauss")(PipelineContext(dataset="my_parts",
                                                             options=config.pipeline_options("gauss", "my_parts")))
    pipeline.fit(dataset.train, dataset.reference)
    samples = list(dataset.test)
    predictions = pipeline.predict(samples)
    assert [p.label for p in predictions] == [s.label for s in samples]
    ious = [iou(p.mask, s.mask) for s, p in zip(samples, predictions, strict=True) if s.label == "NOK"]
    assert len(ious) == 4 and min(ious) == pytest.approx(1.0)


@pytest.mark.parametrize(("module", "spec", "expected"), [
    ("raise ImportError('needs torchvision 9')", "broken_plugin:Model",
     r'^\[pipelines.mine\] class = "broken_plugin:Model": cannot import broken_plugin: ImportError: needs torchvision 9$'),
    ("class Model:\n    task = 'segmentation'", "broken_plugin:Model",
     r"is not a subclass of fmtest.pipelines.base.Pipeline$"),
    ("from fmtest.pipelines import Pipeline\nclass Model(Pipeline):\n    def predict(self, s):\n        return []",
     "broken_plugin:Model", r'must set task = "segmentation" or "classification", got None$'),
    ("from fmtest.pipelines import Pipeline\nclass Model(Pipeline):\n    task = 'segmentation'", "broken_plugin:Model",
     r"broken_plugin:Model does not implement predict$"),
    ("x = 1", "broken_plugin:Model", r"module broken_plugin has no Model$"),
    ("x = 1", "broken_plugin.Model", r'class = "broken_plugin.Model": accepted: "module:Class"'),
])
def test_a_broken_plugin_is_one_line_naming_it(tmp_path, module, spec, expected):
    (tmp_path / "broken_plugin.py").write_text(module + "\n")
    (tmp_path / "fmtest.toml").write_text(f'[pipelines.mine]\nclass = "{spec}"\n')
    from fmtest.config.suite import load_config

    try:
        with pytest.raises(ConfigError, match=expected) as info:
            load_config(tmp_path / "fmtest.toml")
    finally:
        sys.modules.pop("broken_plugin", None)
    assert "\n" not in str(info.value)


def test_a_broken_dataset_plugin_is_one_line_naming_it(tmp_path):
    (tmp_path / "my_data.py").write_text("class Parts:\n    pass\n")
    (tmp_path / "fmtest.toml").write_text('[datasets.parts]\nclass = "my_data:Parts"\n')
    from fmtest.config.suite import load_config

    try:
        with pytest.raises(ConfigError, match=r'^.*\[datasets.parts\] class = "my_data:Parts": my_data:Parts is not '
                                              r"a subclass of fmtest.data.base.Dataset$"):
            load_config(tmp_path / "fmtest.toml")
    finally:
        sys.modules.pop("my_data", None)


SUITE_CONFIG = """
default_datasets = ["parts"]
default_pipelines = ["pixel_gaussian", "pixel_gaussian_blunt"]
data_root = "data"
bootstrap_resamples = 100
[thresholds]
iou = 0.9
f2 = 0.9
[pipelines.pixel_gaussian_blunt]   # a variant of the installed plugin: it cannot see the defects
uses = "pixel_gaussian"
z_threshold = 1000.0
[guardrails]
enabled = false
"""


@pytest.mark.slow
def test_installed_plugin_runs_through_pytest_suites_found_by_entry_points(tmp_path):
    """pip installs examples/plugin into a throwaway folder; `pytest <suite>` from another folder runs
    its pipeline, a variant of it, and its dataset, with the config found beside the suite."""
    site = tmp_path / "site"
    build = tmp_path / "build"
    shutil.copytree(PLUGIN, build, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(build)], check=True, capture_output=True, timeout=300)
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(SUITES / "test_segmentation.py", suite)
    (suite / "fmtest.toml").write_text(SUITE_CONFIG)
    write_parts(suite / "data" / "parts")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--fm-no-cache", "--fm-device=cpu", f"--fm-results={tmp_path / 'out.json'}",
                           f"--junitxml={tmp_path / 'junit.xml'}", "-q"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr  # the blunt variant misses every defect
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["config"]["config_file"] == str((suite / "fmtest.toml").resolve())
    outcomes = {c["id"]: c["outcome"] for c in results["cases"]}
    assert outcomes == {"pixel_gaussian-parts": "passed", "pixel_gaussian_blunt-parts": "failed"}
    tests = {t.get("name"): t for t in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    assert set(tests) == {"test_segmentation[pixel_gaussian-parts]", "test_segmentation[pixel_gaussian_blunt-parts]"}
