"""Prediction-cache benchmarks: warm-cache rerun of the suite, and re-scoring 10,000 cached predictions.

    .venv/bin/python benchmarks/bench_warm_cache.py            # both
    .venv/bin/python benchmarks/bench_warm_cache.py --rescore-only --n-images 2000

1. suite: `pytest suites` on the default datasets, twice, in subprocesses sharing a fresh cache
   folder: cold (every model runs), then warm (every prediction comes from the cache). Target:
   the warm run at least 20x faster. The warm run must also reproduce the cold run's metrics
   and predict nothing, or the speed-up means nothing. Each run goes through benchmarks/stages.py,
   so the table also says where each run's seconds go (interpreter start, imports, data, ...).
   `--repeats N` runs N (cold, warm) pairs, each with its own fresh cache, and reports medians.
2. rescore: 10,000 predicted 512x512 masks are written to a fresh cache, then read back,
   decoded and scored against ground truth (per-image IoU, F2, 1000-resample bootstraps of
   both). Target: under 5 s on 2 CPU cores. Filling the cache is not timed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fmtest.metrics import functional as metrics
from fmtest.metrics.specs import IOUS, VERDICTS
from fmtest.pipelines.base import Prediction
from fmtest.run.cache import PredictionCache
from fmtest.verdict.scoring import score_inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stages  # benchmarks/stages.py, beside this file

REPO = Path(__file__).resolve().parent.parent
WARM_SPEEDUP_TARGET = 20.0
RESCORE_TARGET_S = 5.0
FINGERPRINT, MODEL_ID, PIPELINE = "bench-fingerprint", "bench-model", "bench"
TIMING_SUFFIXES = ("_seconds", "_per_second")  # durations and throughput: expected to differ between runs


# -- 1. cold vs warm suite run ------------------------------------------------------------------------
def run_suite(cache_dir: Path, results: Path, extra_args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    """Seconds one `pytest suites` run takes, and where they went (benchmarks/stages.py); failing cases are
    fine, a crashed run is not."""
    profile = results.with_suffix(".stages.json")
    cmd = [sys.executable, str(REPO / "benchmarks" / "stages.py"), str(profile), "--", "suites",
           f"--fm-cache={cache_dir}", f"--fm-results={results}", "-q", "-p", "no:randomly", *extra_args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1) or not results.exists():  # 1: some case below its threshold
        raise SystemExit(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return seconds, json.loads(profile.read_text())


def cache_counts(results: Path) -> tuple[int, int]:
    """(predicted, from cache) summed over the cases of a results file."""
    cases = json.loads(results.read_text())["cases"]
    counts = [c.get("cache") or c.get("extra", {}).get("cache", {}) for c in cases]
    return sum(c.get("predicted", 0) for c in counts), sum(c.get("hits", 0) for c in counts)


def bench_suite(extra_args: list[str], repeats: int = 1, bytecode: str = "cached") -> list[tuple[str, str, str]]:
    """`repeats` (cold, warm) pairs, each in a fresh cache, run one after the other (interleaved, so a busy
    spell of the machine hits both kinds); medians, and every pair's ratio so the noise shows."""
    colds, warms, cold_stages, warm_stages, ratios, differences = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="fmtest-bench-") as tmp:
        tmp = Path(tmp)
        env = stages.bytecode_env(bytecode, tmp / "pycache", REPO)
        if bytecode == "cached":
            stages.prime_bytecode(env, REPO, ["suites", f"--fm-cache={tmp / 'prime'}", *extra_args])
        for i in range(repeats):
            cold, cold_profile = run_suite(tmp / f"cache{i}", tmp / f"cold{i}.json", extra_args, env)
            warm, warm_profile = run_suite(tmp / f"cache{i}", tmp / f"warm{i}.json", extra_args, env)
            colds.append(cold), warms.append(warm), ratios.append(cold / warm)
            cold_stages.append(stages.stage_seconds(cold_profile, cold)), warm_stages.append(stages.stage_seconds(warm_profile, warm))
            differences += differing_results(tmp / f"cold{i}.json", tmp / f"warm{i}.json")
        predicted_cold, hits_cold = cache_counts(tmp / "cold0.json")
        predicted_warm, hits_warm = cache_counts(tmp / "warm0.json")
    cold, warm = statistics.median(colds), statistics.median(warms)
    speedup = statistics.median(ratios)
    if predicted_cold == 0:
        verdict = "not measured: the cold run predicted nothing (every case skipped?)"
    else:
        verdict = f"target >= {WARM_SPEEDUP_TARGET:.0f}x: {'met' if speedup >= WARM_SPEEDUP_TARGET else 'MISSED'}"

    def spread(xs: list[float]) -> str:
        return f"{min(xs):.1f}-{max(xs):.1f}" if len(xs) > 1 else ""

    rows = [
        ("suite, cold cache", f"{cold:.1f} s", (f"{hits_cold} cached, {predicted_cold} predicted; "
                                                f"median of {repeats} {spread(colds)}")),
        ("suite, warm cache", f"{warm:.2f} s", (f"{hits_warm} cached, {predicted_warm} predicted; "
                                                f"median of {repeats} {spread(warms)}")),
        ("warm speed-up", f"{speedup:.1f}x", f"{verdict}; per pair {', '.join(f'{r:.1f}x' for r in ratios)}"),
        ("warm results = cold results", "NO" if differences else "yes", ", ".join(differences[:8])),
        (f"where the seconds go (median of {repeats}, exclusive)", "cold", "warm"),
    ]
    for name in stages.ORDER:
        c = statistics.median(s.get(name, 0.0) for s in cold_stages)
        w = statistics.median(s.get(name, 0.0) for s in warm_stages)
        if max(c, w) >= 0.005:
            rows.append((f"  {name}", f"{c:.2f} s", f"{w:.2f} s  ({100 * w / warm:.0f} % of warm)"))
    missing = sorted({m for profile in (cold_profile, warm_profile) for m in profile.get("missing", [])})
    if missing:
        rows.append(("  (not found, not timed)", "", ", ".join(missing)))
    rows.append(("  bytecode", bytecode, "cached: .pyc in a temporary PYTHONPYCACHEPREFIX, compiled before timing"
                                         if bytecode == "cached" else "this environment's (see stages.bytecode_env)"))
    return rows


def differing_results(cold: Path, warm: Path) -> list[str]:
    """Where two runs disagree, per-image records and metrics alike; throughput is expected to differ."""
    def load(path: Path) -> dict:
        return {c["id"]: c for c in json.loads(path.read_text())["cases"]}

    before, after = load(cold), load(warm)
    out = [f"{case_id}: missing" for case_id in before.keys() ^ after.keys()]
    for case_id in sorted(before.keys() & after.keys()):
        a, b = before[case_id], after[case_id]
        out += [f"{case_id}.{k}" for k in sorted(a["metrics"].keys() | b["metrics"].keys())
                if not k.endswith(TIMING_SUFFIXES) and not _same(a["metrics"].get(k), b["metrics"].get(k))]
        if a["images"] != b["images"]:
            out.append(f"{case_id}.images")
    return out


def _same(a: object, b: object) -> bool:
    """Equal, counting nan (an undefined metric) as equal to nan."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


# -- 2. re-scoring cached predictions -----------------------------------------------------------------
@dataclass
class SyntheticRun:
    """Ground truth for predictions written to a cache: `truth[i % len(truth)]` is image i's mask."""

    image_sha256s: list[str]
    truth: np.ndarray  # (n_distinct, H, W) bool

    def target(self, i: int) -> np.ndarray:
        return self.truth[i % len(self.truth)]


def _disks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Defect-like masks, one disk each; about a third are empty (defect-free images)."""
    yy, xx = np.ogrid[:size, :size]
    radius = rng.integers(1, max(2, size // 8), n) * (rng.random(n) > 0.3)
    centres = rng.integers(0, size, (n, 2))
    return np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 < r * r for (cy, cx), r in zip(centres, radius)])


def fill_cache(cache: PredictionCache, n_images: int, size: int, n_distinct: int, seed: int = 0,
               progress: bool = True) -> SyntheticRun:
    """Write `n_images` predictions: the ground-truth disk shifted by a few pixels, so IoUs vary, and
    every 13th image given another image's mask, so some defects are missed and some good parts flagged."""
    rng = np.random.default_rng(seed)
    truth = _disks(rng, n_distinct, size)
    shas = [f"{i:064x}" for i in range(n_images)]
    batch: dict[str, Prediction] = {}
    for i in tqdm(range(n_images), desc="filling cache", unit="img", disable=not progress):
        source = truth[(i + (i % 13 == 0)) % n_distinct]
        batch[shas[i]] = Prediction.from_mask(np.roll(source, i % 7, axis=1), score=float(i % 7))
        if len(batch) == 500 or i == n_images - 1:
            cache.put_many(FINGERPRINT, MODEL_ID, batch, pipeline=PIPELINE)
            batch = {}
    return SyntheticRun(shas, truth)


def rescore(cache: PredictionCache, run: SyntheticRun, n_resamples: int = 1000, progress: bool = True) -> dict:
    """Read every prediction back and score the run as the evaluation layer does from a warm cache."""
    n = len(run.image_sha256s)
    y_true = np.empty(n, dtype=bool)
    y_pred = np.empty(n, dtype=bool)
    ious = []
    with tqdm(total=n, desc="re-scoring", unit="img", disable=not progress) as bar:
        for start in range(0, n, 256):
            chunk = run.image_sha256s[start : start + 256]
            found = cache.get_many(FINGERPRINT, MODEL_ID, chunk)
            for i, sha in enumerate(chunk, start):
                prediction, target = found[sha], run.target(i)
                y_true[i], y_pred[i] = target.any(), prediction.label == "NOK"
                if y_true[i]:
                    ious.append(metrics.iou(prediction.mask, target))
            bar.update(len(chunk))
    return score_inputs({VERDICTS: (y_true, y_pred), IOUS: (np.array(ious, dtype=np.float64),)}, task="segmentation",
                        n_resamples=n_resamples, seed=0)


def bench_rescore(n_images: int, size: int, n_distinct: int, n_resamples: int,
                  progress: bool) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory(prefix="fmtest-bench-") as tmp, PredictionCache(tmp) as cache:
        start = time.perf_counter()
        run = fill_cache(cache, n_images, size, n_distinct, progress=progress)
        fill_s = time.perf_counter() - start
        stored = cache.info()
        start = time.perf_counter()
        summary = rescore(cache, run, n_resamples, progress=progress)
        seconds = time.perf_counter() - start
        if cache.stats.hits != n_images:
            raise SystemExit(f"expected {n_images} cache hits, got {cache.stats}")
    return [
        (f"fill cache, {n_images} x {size}x{size}", f"{fill_s:.1f} s",
         f"{stored['bytes'] / 2**20:.1f} MiB on disk (not timed)"),
        (f"re-score {n_images} cached predictions", f"{seconds:.2f} s",
         f"target < {RESCORE_TARGET_S:.0f} s: {'met' if seconds < RESCORE_TARGET_S else 'MISSED'}"),
        ("  iou / f2 (sanity)", f"{summary['iou']:.3f} / {summary['f2']:.3f}",
         f"{n_resamples} bootstrap resamples each"),
    ]


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--suite-only", action="store_true", help="only the cold/warm suite run")
    which.add_argument("--rescore-only", action="store_true", help="only the re-scoring benchmark")
    parser.add_argument("--n-images", type=int, default=10_000, help="cached predictions to re-score")
    parser.add_argument("--size", type=int, default=512, help="mask side in pixels")
    parser.add_argument("--n-distinct", type=int, default=200,
                        help="distinct ground-truth masks kept in memory, reused in turn")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="(cold, warm) suite pairs, each in a fresh cache")
    parser.add_argument("--bytecode", choices=("cached", "inherit"), default="cached",
                        help="cached: the suite runs write and read .pyc files (in a temporary prefix); inherit: "
                             "this environment as it is (PYTHONDONTWRITEBYTECODE=1 recompiles every run)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for the suite runs (after --)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, str]] = []
    if not args.suite_only:
        rows += bench_rescore(args.n_images, args.size, args.n_distinct, args.resamples, not args.no_progress)
    if not args.rescore_only:
        rows += bench_suite(args.pytest_args, args.repeats, args.bytecode)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
