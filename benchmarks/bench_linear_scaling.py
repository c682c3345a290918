"""Does a run scale linearly in images? Time per image and peak memory, 100 to 2,000 ELPV cells, cold and warm.

    python benchmarks/bench_linear_scaling.py                          # padim on 100, 300, 1000, 2000 cells
    python benchmarks/bench_linear_scaling.py --sizes 100,300,1000 --pipeline padim

For each size n, a suite config (written to a temporary folder) asks for the `elpv` dataset with 60 good
training cells and n test cells (70 % good, 30 % defective, as far as the package has them) and one
pipeline, and `pytest suites/test_classification.py` runs twice in subprocesses sharing a fresh
prediction cache: cold (every cell predicted), then warm (every prediction from the cache). Each run goes
through benchmarks/stages.py, so the table gives, besides the wall time, the seconds spent predicting and
decoding and aligning (the guardrails register every cell to the dataset's reference), and the process's
peak resident memory (`ru_maxrss`, the whole process: interpreter, torch,
model, decoded images held by the sample memo).

Read: s/image (wall / n) falls with n as the fixed cost (interpreter, imports, fitting) is spread;
the marginal s/image between consecutive sizes ((t2 - t1) / (n2 - n1)) is the cost of one more image,
and stays flat when the run scales linearly. Peak memory should grow by at most the sample memo's bound
(FMTEST_SAMPLE_MEMORY_MB, 1 GiB by default), not without limit. Nothing here is asserted: a measurement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stages  # benchmarks/stages.py, beside this file

REPO = Path(__file__).resolve().parent.parent
N_TRAIN = 60
GOOD_SHARE = 0.7


def suite_config(path: Path, n: int, pipeline: str) -> Path:
    good = round(GOOD_SHARE * n)
    path.write_text(f"""default_datasets = ["elpv"]
default_pipelines = ["{pipeline}"]

[datasets.elpv]
n_train = {N_TRAIN}
n_test_good = {good}
n_test_defective = {n - good}
seed = 0
""")
    return path


def run(config: Path, cache: Path, results: Path, env: dict[str, str]) -> tuple[float, dict]:
    profile = results.with_suffix(".stages.json")
    cmd = [sys.executable, str(REPO / "benchmarks" / "stages.py"), str(profile), "--",
           "suites/test_classification.py", f"--fm-config={config}", f"--fm-cache={cache}",
           f"--fm-results={results}", "-q", "-p", "no:randomly"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1) or not results.exists():
        raise SystemExit(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return seconds, json.loads(profile.read_text())


def counted(results: Path) -> tuple[int, int, int]:
    """(images scored, predicted, from cache) over the run's cases."""
    cases = json.loads(results.read_text())["cases"]
    cache = [c.get("cache") or c.get("extra", {}).get("cache", {}) for c in cases]
    return (sum(len(c.get("images", [])) for c in cases), sum(c.get("predicted", 0) for c in cache),
            sum(c.get("hits", 0) for c in cache))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1000,2000", help="test cells per run, comma list")
    parser.add_argument("--pipeline", default="padim")
    parser.add_argument("--bytecode", choices=("cached", "inherit"), default="cached",
                        help="as bench_warm_cache.py: cached writes .pyc files to a temporary prefix")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fmtest-linear-") as tmp:
        tmp = Path(tmp)
        env = stages.bytecode_env(args.bytecode, tmp / "pycache", REPO)
        if args.bytecode == "cached":
            stages.prime_bytecode(env, REPO, ["suites/test_classification.py", f"--fm-cache={tmp / 'prime'}"])
        for n in sizes:
            config = suite_config(tmp / f"fmtest-{n}.toml", n, args.pipeline)
            for kind in ("cold", "warm"):
                seconds, profile = run(config, tmp / f"cache-{n}", tmp / f"{kind}-{n}.json", env)
                scored, predicted, hits = counted(tmp / f"{kind}-{n}.json")
                spent = stages.stage_seconds(profile, seconds)
                rows.append({"n": n, "kind": kind, "seconds": seconds, "scored": scored, "predicted": predicted,
                             "hits": hits, "peak_mib": profile["max_rss_kb"] / 1024,
                             "predicting": spent.get("predicting", 0.0) + spent.get("fitting", 0.0),
                             "alignment": spent.get("alignment", 0.0),
                             "data": spent.get("data: decode or render", 0.0)})
                print(f"... {kind} {n}: {seconds:.1f} s, {rows[-1]['peak_mib']:.0f} MiB peak; stages "
                      + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.1),
                      file=sys.stderr, flush=True)
    print(f"{args.pipeline} on elpv ({N_TRAIN} training cells), bytecode {args.bytecode}")
    print("| test cells | run | wall s | s/image | marginal s/image | fit+predict s | alignment s | decode s "
          "| peak RSS MiB | predicted / cached |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    previous: dict[str, dict] = {}
    for r in rows:
        p = previous.get(r["kind"])
        marginal = f"{(r['seconds'] - p['seconds']) / (r['n'] - p['n']):.4f}" if p else "-"
        print(f"| {r['n']} | {r['kind']} | {r['seconds']:.1f} | {r['seconds'] / r['n']:.4f} | {marginal} "
              f"| {r['predicting']:.1f} | {r['alignment']:.1f} | {r['data']:.1f} | {r['peak_mib']:.0f} "
              f"| {r['predicted']} / {r['hits']} |")
        previous[r["kind"]] = r
        if r["scored"] != r["n"]:
            print(f"  (scored {r['scored']} images, not {r['n']}: the package has fewer cells of a label)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
