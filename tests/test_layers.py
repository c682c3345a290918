"""The architecture's one-way data flow, pinned: data -> models -> pipelines -> evaluate/verdict ->
plugin -> report. A module may import from layers below it, never above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fmtest
from fmtest.metrics import specs

PACKAGE = Path(fmtest.__file__).parent
# the top: the pytest plugin and the command line may import anything, reports only what is below them
TOP = {"plugin", "pytest_reports", "cli", "report"}
# what each lower layer must never import (the layers above it)
FORBIDDEN = {
    "data": ("fmtest.models", "fmtest.pipelines", "fmtest.run.evaluate", "fmtest.verdict", "fmtest.run.evaluator",
             "fmtest.plugin.hooks", "fmtest.report"),
    "models": ("fmtest.pipelines", "fmtest.run.evaluate", "fmtest.verdict", "fmtest.run.evaluator", "fmtest.plugin.hooks",
               "fmtest.report"),
    "pipelines": ("fmtest.run.evaluate", "fmtest.verdict", "fmtest.run.evaluator", "fmtest.plugin.hooks", "fmtest.report"),
    "metrics": ("fmtest.run.evaluate", "fmtest.verdict", "fmtest.run.evaluator", "fmtest.plugin.hooks", "fmtest.report"),
    "region_metrics": ("fmtest.data", "fmtest.models", "fmtest.pipelines", "fmtest.run.evaluate", "fmtest.verdict",
                       "fmtest.run.evaluator", "fmtest.plugin.hooks", "fmtest.report"),
    "verdict": ("fmtest.run.evaluator", "fmtest.plugin.hooks", "fmtest.report"),
    "evaluate": ("fmtest.run.evaluator", "fmtest.plugin.hooks", "fmtest.report"),
    "runner": ("fmtest.plugin.hooks", "fmtest.report"),
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        yield rel.parts[0].removesuffix(".py"), path


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_its_own(layer):
    offenders = []
    for top, path in _modules():
        if top != layer:
            continue
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_no_module_below_the_plugin_imports_a_renderer():
    offenders = [f"{path.relative_to(PACKAGE)} imports {name}"
                 for top, path in _modules() if top not in TOP
                 for name in _imports(path) if name.startswith("fmtest.report")]
    assert not offenders, "\n".join(offenders)


def test_direction_and_headline_are_written_only_in_the_spec_table():
    """No module but specs spells out which metrics are lower-is-better or a task's headline."""
    telltales = ("LOWER_IS_BETTER", "GATED_METRICS", "MAIN_METRIC", "HIGHER_IS_BETTER")
    offenders = [str(path.relative_to(PACKAGE)) for _, path in _modules()
                 if path.name != "specs.py" and any(t in path.read_text() for t in telltales)]
    assert not offenders


def test_each_task_has_one_headline_metric_with_a_direction():
    for task in ("segmentation", "classification", "robustness"):
        name = specs.headline_metric(task)
        assert name is not None and specs.METRICS[name].higher_is_better is not None
    headlines = [task for s in specs.METRICS.values() for task in s.headline_of]
    assert len(headlines) == len(set(headlines))


def test_interval_ends_share_the_spec_of_their_metric():
    assert specs.spec("iou_ci_low") is specs.METRICS["iou"] and specs.spec("f2_ci_high") is specs.METRICS["f2"]
    assert specs.spec("no_such_metric") is None
