"""The plugin stays dormant: an unrelated pytest project, with fmtest installed vs `-p no:fmtest`.

    python benchmarks/bench_dormant.py                 # 15 interleaved pairs
    python benchmarks/bench_dormant.py --repeats 31 --tests 50

pytest loads every installed plugin (entry point `pytest11`), so fmtest's plugin module is imported in
every pytest run of an environment where fmtest is installed. A tiny project that has nothing to do with
fmtest (`--tests` trivial tests, no suite config, no `--fm-*` option) is run as subprocesses, alternately
with the plugin and with `-p no:fmtest`, `--repeats` times each; the median wall times, their ratio and
every pair's ratio are printed (the machine's noise shows in the spread). Target: at most 10 % slower.

It also lists the top-level packages the plugin adds to `sys.modules` in such a run (read by a conftest
at session end): anything heavy there (numpy, torch, PIL, ...) is what to make lazy in
fmtest/plugin/hooks.py. The bytecode choice is bench_warm_cache.py's (`--bytecode`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stages  # benchmarks/stages.py, beside this file

REPO = Path(__file__).resolve().parent.parent
TARGET_OVERHEAD = 0.10

CONFTEST = '''
import json, os, sys

def pytest_sessionfinish(session):
    out = os.environ.get("DORMANT_MODULES")
    if out:
        with open(out, "w") as f:
            json.dump(sorted(sys.modules), f)
'''


def make_project(root: Path, n_tests: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "conftest.py").write_text(CONFTEST)
    lines = ["def add(a, b):", "    return a + b", ""]
    for i in range(n_tests):
        lines += [f"def test_add_{i}():", f"    assert add({i}, 1) == {i + 1}", ""]
    (root / "test_tiny.py").write_text("\n".join(lines))


def run(project: Path, env: dict[str, str], plugin: bool, modules: Path | None = None) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", str(project)]
    if not plugin:
        cmd[3:3] = ["-p", "no:fmtest"]
    env = {**env, "DORMANT_MODULES": str(modules)} if modules else env
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds


def added_packages(project: Path, env: dict[str, str], tmp: Path) -> list[str]:
    """Top-level packages in sys.modules with the plugin that are not there without it."""
    with_plugin, without = tmp / "with.json", tmp / "without.json"
    run(project, env, True, with_plugin)
    run(project, env, False, without)
    top = lambda path: {m.split(".")[0] for m in json.loads(path.read_text())}
    return sorted(top(with_plugin) - top(without))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved (with, without) pairs")
    parser.add_argument("--tests", type=int, default=20, help="trivial tests in the tiny project")
    parser.add_argument("--bytecode", choices=("cached", "inherit"), default="cached")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fmtest-dormant-") as tmp:
        tmp = Path(tmp)
        project, env = tmp / "tiny", stages.bytecode_env(args.bytecode, tmp / "pycache", REPO)
        make_project(project, args.tests)
        for plugin in (True, False):  # not timed: fills the bytecode cache
            run(project, env, plugin)
        added = added_packages(project, env, tmp)
        with_plugin, without, ratios = [], [], []
        for i in range(args.repeats):
            order = (True, False) if i % 2 == 0 else (False, True)  # alternate who goes first
            seconds = {plugin: run(project, env, plugin) for plugin in order}
            with_plugin.append(seconds[True]), without.append(seconds[False])
            ratios.append(seconds[True] / seconds[False])
    a, b = statistics.median(with_plugin), statistics.median(without)
    overhead = statistics.median(ratios) - 1
    verdict = "met" if overhead <= TARGET_OVERHEAD else "MISSED"
    print(f"tiny project ({args.tests} tests), {args.repeats} interleaved pairs, bytecode {args.bytecode}")
    print(f"with fmtest's plugin     {a:.3f} s median  ({min(with_plugin):.3f}-{max(with_plugin):.3f})")
    print(f"with -p no:fmtest        {b:.3f} s median  ({min(without):.3f}-{max(without):.3f})")
    print(f"overhead                 {100 * overhead:+.1f} % (median of pair ratios; pairs "
          f"{100 * (min(ratios) - 1):+.0f} % to {100 * (max(ratios) - 1):+.0f} %; {a - b:+.3f} s between medians)"
          f"  target <= {100 * TARGET_OVERHEAD:.0f} %: {verdict}")
    print(f"packages the plugin adds to sys.modules: {', '.join(added) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
