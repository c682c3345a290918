"""Scaling: images/s and overhead per image of the local executor vs Ray with 1 and 2 actors.

    .venv/bin/python benchmarks/bench_scaling.py                      # 160 images, 20 ms each
    .venv/bin/python benchmarks/bench_scaling.py --n-images 400 --cost-ms 50

A pipeline with a fixed CPU cost per image (a busy loop, so it competes for cores as a model
does) predicts synthetic images through `fmtest.run.evaluate.predict_all`, the path every case takes,
once per executor. Ideal wall time is n x cost / workers; the overhead per image is the rest
(actor start-up, fitting in each actor, pickling the images there and the answers back).
Ray runs on a local cluster started here with `--cpus` CPUs (default: all).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from fmtest.data.sample import Sample, SampleRef, SampleSet
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.run.evaluate import predict_all
from fmtest.run.executors import PipelineRecipe, make_executor
from fmtest.run.executors.local import LocalExecutor

ROOT = Path(__file__).resolve().parent.parent


class FixedCost(Pipeline):
    """Spends `cost_ms` of CPU per image, then answers from the image's mean."""

    name, task = "fixed_cost", "classification"
    cost_s = 0.02

    def predict(self, samples):
        out = []
        for s in samples:
            end = time.perf_counter() + self.cost_s
            while time.perf_counter() < end:
                pass
            score = float(s.image.mean())
            out.append(Prediction(label="NOK" if score > 0.5 else "OK", score=score))
        return out


def _image(i: int) -> Sample:
    return Sample(id=f"img{i:05d}", image=np.random.default_rng(i).random((64, 64), dtype=np.float32), label="OK")


def _no_reference():
    return None


def run(executor, n: int) -> tuple[float, list]:
    samples = SampleSet([SampleRef(f"img{i:05d}", "OK", lambda i=i: _image(i), memo=False) for i in range(n)])
    pipeline = FixedCost(PipelineContext(dataset="synthetic"))
    recipe = PipelineRecipe(FixedCost, pipeline.context, SampleSet([]), _no_reference)
    t0 = time.perf_counter()
    answers = [p.score for _, p, _ in predict_all(pipeline, samples, progress=False, executor=executor, recipe=recipe)]
    return time.perf_counter() - t0, answers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=160)
    parser.add_argument("--cost-ms", type=float, default=20.0)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    FixedCost.cost_s = args.cost_ms / 1000
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}})
    n, cost = args.n_images, FixedCost.cost_s
    print(f"{n} images, {args.cost_ms:g} ms CPU each, {os.cpu_count()} CPU core(s) seen, Ray cluster of {args.cpus}")
    print(f"{'executor':<16}{'wall s':>9}{'images/s':>10}{'ideal s':>9}{'overhead ms/img':>17}")
    reference = None
    for label, executor, workers in (("local", LocalExecutor(), 1),
                                     ("ray, 1 actor", make_executor("ray", {"actors": 1}), 1),
                                     ("ray, 2 actors", make_executor("ray", {"actors": 2}), 2)):
        wall, answers = run(executor, n)
        reference = reference or answers
        same = "" if answers == reference else "  DIFFERENT ANSWERS"
        ideal = n * cost / workers
        print(f"{label:<16}{wall:>9.2f}{n / wall:>10.1f}{ideal:>9.2f}{(wall - ideal) / n * 1000:>17.2f}{same}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
