"""SAM box prompts: per-box decoding (SAA+) vs one batched call (Text2Seg, and so gdino_sam), in one process.

    python benchmarks/bench_sam_boxes.py [REPEATS]      # tiny random SAM, 5 boxes on a 256 px image

`SamEngine.masks_from_boxes` decodes one box per `SamPredictor.predict(box=...)` call, as SAA+ does (a batched
decoder call rounds differently and can flip pixels whose logit is near zero); Text2Seg, and so gdino_sam
(`masks_from_boxes_batched`), passes all boxes to one `predict_torch` call. The two are timed alternately (the
order flips every repetition, so a busy spell of the machine hits both) and the medians compared; this is what
separated gdino_sam's two paths in `bench_vs_upstream.py --quick` before gdino_sam followed Text2Seg.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models
from tiny_models import build_tiny_sam

from fmtest.models.sam import SamEngine
from fmtest.util.threads import pin_one_thread_per_op

BOXES = np.array([[10, 10, 80, 90], [50, 40, 200, 180], [100, 120, 250, 250], [5, 150, 60, 240],
                  [30, 30, 220, 220]], float)


def main(argv: list[str]) -> int:
    repeats = int(argv[0]) if argv else 60
    pin_one_thread_per_op()
    image = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
    engine = SamEngine(build_tiny_sam(seed=1), "tiny")
    predictor = engine.predictor(image, "img")

    def per_box() -> np.ndarray:
        return engine.masks_from_boxes(image, "img", BOXES)[0]

    def batched() -> np.ndarray:
        boxes = predictor.transform.apply_boxes_torch(torch.as_tensor(BOXES), image.shape[:2])
        masks, _, _ = predictor.predict_torch(None, None, boxes=boxes, multimask_output=False)
        return masks[:, 0].numpy()

    paths = {"fmtest, one box per call": per_box, "upstream, all boxes in one call": batched}
    same = np.array_equal(per_box(), batched())
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(repeats):
        for name in list(paths)[:: 1 if i % 2 else -1]:
            start = time.perf_counter()
            paths[name]()
            seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    for name, s in seconds.items():
        print(f"{name:32s} {1000 * medians[name]:7.2f} ms median for {len(BOXES)} boxes "
              f"(p10 {1000 * np.percentile(s, 10):.2f}, p90 {1000 * np.percentile(s, 90):.2f})")
    a, b = medians.values()
    print(f"per-box / batched: {a / b:.2f}x ({repeats} interleaved repetitions); masks identical here: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
