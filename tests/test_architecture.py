"""The architecture, pinned: the layers are folders, data flows one way, each thing is written in one place.

    util -> data -> metrics -> imaging -> models -> pipelines -> config -> run -> verdict -> report -> plugin, cli

A module may import from its own folder and the folders before it, never after it (`fmtest/errors.py` and
`fmtest/__init__.py` are below everything). The pytest plugin and the command line are both on top and
never import each other. docs/ARCHITECTURE.md draws the same order; a test keeps it in step.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from fakes import REPO

import fmtest
from fmtest.metrics import specs

PACKAGE = Path(fmtest.__file__).parent
LAYERS = ("util", "data", "metrics", "imaging", "models", "pipelines", "config", "run", "verdict", "report",
          "plugin", "cli")
BASE = {"errors", "__init__"}  # fmtest/errors.py, fmtest/__init__.py: below every layer
TOP = {"plugin", "cli"}  # peers: neither imports the other


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).parts[0].removesuffix(".py"), path


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """fmtest modules `path` imports (also inside functions, unless `top_level_only`)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name == "fmtest" or name.startswith("fmtest.")}


def _layer_of(name: str) -> str | None:
    """The layer folder an imported name lives in; None for the package itself and what it exports (__version__)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in (*LAYERS, *BASE) else None


def test_every_module_of_the_package_lives_in_a_layer_folder():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.stem not in BASE]
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert loose == [] and folders == sorted(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_itself_and_the_layers_before_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1]) | BASE
    if layer in TOP:
        allowed -= TOP - {layer}
    offenders = [f"{path.relative_to(PACKAGE)} imports {name}"
                 for top, path in _modules() if top == layer
                 for name in _imports(path) if _layer_of(name) not in allowed and _layer_of(name) is not None]
    assert not offenders, "\n".join(offenders)


def test_no_import_cycles_between_modules():
    """At import time (module-level imports), modules form no circle: each can be imported on its own."""
    module_of = {path: ".".join(("fmtest", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
                 for _, path in _modules()}
    known = set(module_of.values())
    graph = {}
    for path, name in module_of.items():
        targets = set()
        for imported in _imports(path, top_level_only=True):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_architecture_document_draws_the_same_layers():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    drawn = re.search(r"^util -> .*$", text, re.MULTILINE)
    assert drawn is not None, "docs/ARCHITECTURE.md lost its layer line"
    assert [p.strip() for p in re.split(r"->|,", drawn.group(0))] == list(LAYERS)
    for layer in LAYERS:
        assert f"`fmtest/{layer}/`" in text, f"docs/ARCHITECTURE.md does not describe fmtest/{layer}/"


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


def test_every_metric_computed_from_rows_names_a_statistic_that_exists():
    for spec in specs.METRICS.values():
        if spec.rows is not None:
            assert spec.rows in (specs.VERDICTS, specs.IOUS) and callable(spec.compute), spec.name
        assert spec.label and spec.description, spec.name


def test_interval_ends_share_the_spec_of_their_metric():
    assert specs.spec("iou_ci_low") is specs.METRICS["iou"] and specs.spec("f2_ci_high") is specs.METRICS["f2"]
    assert specs.spec("no_such_metric") is None
