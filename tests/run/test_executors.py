"""Executors: a Ray run on a local 2-CPU cluster equals the local run, survives a killed actor, and fails
a case whose pipeline always crashes with the actor's error."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from fakes import TESTS
from toy_fmtest import Toy, ToyAlwaysCrash, ToyCrashOnce, ToyThreshold
from toy_fmtest import run_suite as run

from fmtest.config.suite import SuiteConfig
from fmtest.pipelines import PipelineContext
from fmtest.run.cache import PredictionCache
from fmtest.run.evaluate import Part, collect_case
from fmtest.run.executors import WorkerError, make_executor
from fmtest.run.executors.local import LocalExecutor
from fmtest.run.plan import Case
from fmtest.verdict.finish import finish_case
from fmtest.verdict.results import CacheUse

ray = pytest.importorskip("ray")
TIMING = ("images_per_second", "fit_seconds")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs whose workers import fmtest and the toy pipelines from this checkout."""
    here = TESTS
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _evaluate(pipeline_cls, tmp_path, executor, **kw):
    dataset = Toy(n_good=12, n_defective=9)  # 21 images: three batches of 8, the last one short
    context = PipelineContext(dataset="toy", work_dir=tmp_path)
    parts = [Part.of(pipeline_cls(context), g) for g in dataset.groups()]
    rules = dataclasses.replace(SuiteConfig().rules, thresholds={"iou": 0.5}, bootstrap_resamples=200)
    evidence = collect_case(Case(pipeline_cls.name, "toy", "segmentation"), parts, progress=False,
                            executor=executor, **kw)
    return finish_case(evidence, rules)


def _figures(result):
    rows = [dataclasses.asdict(i) for i in result.images]
    return rows, {k: v for k, v in result.metrics.items() if k not in TIMING}, result.outcome


def test_ray_predicts_as_the_local_run_and_only_the_controller_writes_the_cache(cluster, tmp_path):
    local = _evaluate(ToyThreshold, tmp_path, LocalExecutor())
    with PredictionCache(tmp_path / "cache") as cache:
        fanned = _evaluate(ToyThreshold, tmp_path, make_executor("ray", {"actors": 2}), cache=cache)
        assert _figures(fanned) == _figures(local)
        assert fanned.cache == CacheUse(hits=0, predicted=21)
        assert cache.info()["entries"] == 21
        again = _evaluate(ToyThreshold, tmp_path, make_executor("ray", {"actors": 2}), cache=cache)
    assert again.cache == CacheUse(hits=21, predicted=0) and _figures(again) == _figures(local)


@pytest.mark.slow
def test_a_killed_actor_costs_a_retry_not_the_case(cluster, tmp_path):
    fanned = _evaluate(ToyCrashOnce, tmp_path, make_executor("ray", {"actors": 2}))
    assert (tmp_path / "crashed-once").exists()  # an actor did die
    assert _figures(fanned)[:2] == _figures(_evaluate(ToyThreshold, tmp_path, LocalExecutor()))[:2]


@pytest.mark.slow
def test_a_pipeline_that_always_crashes_fails_the_case_with_the_actors_error(cluster, tmp_path):
    with pytest.raises(WorkerError, match=r"toy_always_crash: a batch of 8 image\(s\) from test/000 failed twice "
                                          r"on Ray actors: RuntimeError: toy model exploded"):
        _evaluate(ToyAlwaysCrash, tmp_path, make_executor("ray", {"actors": 2}))


@pytest.mark.slow
def test_fm_executor_ray_gives_the_local_runs_results(cluster, suite):
    run(suite, "--fm-results=local.json")
    run(suite, "--fm-results=ray.json", "--fm-executor=ray")
    local, fanned = (json.loads((suite.path / f"{n}.json").read_text())["cases"] for n in ("local", "ray"))
    for a, b in zip(local, fanned, strict=True):
        assert a["images"] == b["images"]
        assert {k: v for k, v in a["metrics"].items() if k not in TIMING} == \
            {k: v for k, v in b["metrics"].items() if k not in TIMING}
