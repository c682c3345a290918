"""Every image of every case as one JSON line (`--fm-samples`), as lm-evaluation-harness logs its samples: what
the model answered for each image, to grep, diff or load into a dataframe. A pure function of `RunResults`.

A line holds the case, pipeline, dataset and task, the image id, its label and the prediction, the score and
IoU (null where there is none), and, where there is one, the group, defect type, the model's answer text or
reasoning and why the prediction failed. The run records no per-image latency or cache hit (only each case's
counts: `cache`, `duration_s`), so a line has none.
"""

from __future__ import annotations

import json

from fmtest.verdict.results import RunResults, to_plain

_OPTIONAL = ("group", "defect_type", "reasoning", "error")  # written only when the image has one


def samples_jsonl(results: RunResults) -> str:
    """One JSON object per line per (case, image), cases in the run's order, images as the case recorded them."""
    lines = []
    for case in results.cases:
        for image in case.images:
            row = {"case": case.id, "pipeline": case.pipeline, "dataset": case.dataset, "task": case.task,
                   "image": image.id, "label": image.label, "prediction": image.predicted, "score": image.score,
                   "iou": image.iou}
            row.update({k: getattr(image, k) for k in _OPTIONAL if getattr(image, k) is not None})
            lines.append(json.dumps(to_plain(row), allow_nan=False))
    return "".join(f"{line}\n" for line in lines)


__all__ = ["samples_jsonl"]
