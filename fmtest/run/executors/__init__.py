"""Where predictions are computed: in this process (local) or fanned out to Ray actors (ray).

An executor turns a stream of batches (lists of samples still to predict, an empty list where the
cache answered the whole batch) into a stream of `(predictions, seconds inside predict)`, one per
batch and in the same order, so `fmtest.run.evaluate.predict_all` stays one path whatever runs the model:
the controller alone reads and writes the cache, scores and reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fmtest.config.schema import EXECUTORS
from fmtest.errors import ConfigError, FmtestError

if TYPE_CHECKING:
    from fmtest.data.base import Group
    from fmtest.data.sample import Sample, SampleSet
    from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction



class WorkerError(FmtestError):
    """A worker failed a batch twice (crashed, or its pipeline raised): the case errors with the worker's error."""


@dataclass(frozen=True)
class PipelineRecipe:
    """How to build and fit a group's pipeline in another process: class, context, training images and
    reference. Shipped (cloudpickled) to each worker instead of a fitted model, so a worker loads the
    weights and fits once, on its own device; the data must be readable at the same paths there."""

    pipeline_class: type[Pipeline]
    context: PipelineContext
    train: SampleSet
    load_reference: Callable[[], Sample | None]

    @classmethod
    def of(cls, pipeline: Pipeline, group: Group) -> PipelineRecipe:
        return cls(type(pipeline), pipeline.context, group.train, group.load_reference)

    def build(self, device: str | None = None) -> Pipeline:
        import dataclasses

        context = self.context if device is None else dataclasses.replace(self.context, device=device)
        pipeline = self.pipeline_class(context)
        pipeline.fit(self.train, self.load_reference())
        return pipeline


Batches = Iterable[list["Sample"]]
Answers = Iterator[tuple[list["Prediction"], float]]


class Executor(Protocol):
    def predict_batches(self, pipeline: Pipeline, batches: Batches, *, prepare: Callable[[], None] | None,
                        recipe: PipelineRecipe | None) -> Answers:
        """One (predictions, seconds) per batch, in order; `prepare` fits `pipeline` here before its first
        prediction, `recipe` builds a fitted copy elsewhere."""

    def close(self) -> None: ...


def make_executor(kind: str, options: Mapping[str, object] | None = None) -> Executor:
    """The executor a run asked for (`--fm-executor`, `[executor] kind`); `options` are `[executor]`'s other keys
    (address, actors, num_gpus, num_cpus), the schema's defaults filling what is not set."""
    if kind == "local":
        from fmtest.run.executors.local import LocalExecutor

        return LocalExecutor()
    if kind == "ray":
        from fmtest.config import schema
        from fmtest.run.executors.ray import RayExecutor

        table = schema.EXECUTOR.check({k: v for k, v in dict(options or {}).items() if k != "kind"}, "[executor]",
                                      None)
        return RayExecutor(address=table["address"], actors=table["actors"], num_gpus=table["num_gpus"],
                           num_cpus=table["num_cpus"])
    raise ConfigError(f"--fm-executor={kind}: unknown executor; known: {', '.join(EXECUTORS)}")
