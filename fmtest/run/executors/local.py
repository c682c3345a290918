"""The default executor: the controller's own pipeline predicts every batch, in this process."""

from __future__ import annotations

import time
from collections.abc import Callable

from fmtest.pipelines.base import Pipeline
from fmtest.run.executors import Answers, Batches, PipelineRecipe


class LocalExecutor:
    def predict_batches(self, pipeline: Pipeline, batches: Batches, *, prepare: Callable[[], None] | None = None,
                        recipe: PipelineRecipe | None = None) -> Answers:
        """`prepare` (fitting) runs before the first non-empty batch, so a fully cached part never fits."""
        for todo in batches:
            if not todo:
                yield [], 0.0
                continue
            if prepare is not None:
                prepare()
                prepare = None
            t0 = time.perf_counter()
            predictions = pipeline.predict(todo)
            yield predictions, time.perf_counter() - t0

    def close(self) -> None:
        """Nothing to release."""
