"""Prediction fan-out to Ray actors: each actor builds and fits the group's pipeline once (on its own GPU
when `[executor] num_gpus` gives it one) and predicts the batches it is sent; the controller streams the
answers back in order and alone writes the cache, scores and reports.

A batch whose actor died (process killed, out of memory) or whose pipeline raised is sent once more, to a
fresh actor if the old one is gone; a second failure ends the case with a WorkerError quoting the actor's error.
Needs `pip install fmtest[ray]`. The address is `--fm-ray-address`, else `$RAY_ADDRESS`, else `[executor]
address`; `local` starts a cluster inside this process, `auto` joins the one `ray start --head` started here.
A `host:port` (or `ray://host:port`) where nothing answers within CONNECT_TIMEOUT_S (10 s) is refused in one
line naming it, instead of Ray waiting minutes for a head node that is not there.
"""

from __future__ import annotations

import collections
import itertools
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from fmtest.errors import ConfigError
from fmtest.pipelines.base import Pipeline
from fmtest.run.executors import Answers, Batches, PipelineRecipe, WorkerError
from fmtest.util.redact import redact

BATCHES_IN_FLIGHT_PER_ACTOR = 2  # one predicting, one queued: an actor never waits for the controller
CONNECT_TIMEOUT_S = 10.0  # an address where nothing answers within this is refused (Ray would wait for minutes)
# host:port, optionally behind ray:// (Ray Client) and with user info (redacted in messages)
_HOST_PORT = re.compile(r"(?:ray://)?(?:[^@/]*@)?(?P<host>\[[^\]]+\]|[^:/@]+):(?P<port>\d+)/?")
_END = object()


class Predictor:
    """The actor's body: one fitted pipeline, built on the first batch."""

    def __init__(self, recipe: PipelineRecipe, device: str):
        from fmtest.util.threads import pin_one_thread_per_op

        pin_one_thread_per_op()  # the same rows as the controller's local run
        self.recipe, self.device = recipe, device
        self.pipeline: Pipeline | None = None

    def predict(self, samples):
        if self.pipeline is None:
            self.pipeline = self.recipe.build(self.device)
        t0 = time.perf_counter()
        predictions = self.pipeline.predict(samples)
        return predictions, time.perf_counter() - t0


@dataclass
class _Batch:
    todo: list
    future: object = None  # the ObjectRef of (predictions, seconds); None for an empty batch
    slot: int = 0
    actor: object = None


class RayExecutor:
    def __init__(self, *, address: str, actors: int, num_gpus: float, num_cpus: float):
        self.address = address
        self.n_actors, self.num_gpus, self.num_cpus = int(actors), float(num_gpus), float(num_cpus)
        self._ray = None
        self._started_here = False

    def _connect(self):
        if self._ray is None:
            try:
                import ray
            except ImportError:
                raise ConfigError("--fm-executor=ray needs Ray: pip install 'fmtest[ray]'") from None
            if not ray.is_initialized():
                check_address(self.address)
                try:
                    ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
                except Exception as e:  # noqa: BLE001 - whatever Ray says, one line naming the address
                    raise ConfigError(f"cannot join the Ray cluster at {redact(self.address)} (--fm-ray-address, "
                                      f"[executor] address): {_actor_error(e)}") from None
                self._started_here = True
            self._ray = ray
        return self._ray

    def predict_batches(self, pipeline: Pipeline, batches: Batches, *, prepare: Callable[[], None] | None = None,
                        recipe: PipelineRecipe | None = None) -> Answers:
        if recipe is None:
            raise ConfigError(f"pipeline {pipeline.name}: this part has no recipe to build it on a Ray actor")
        ray = self._connect()
        actor_class = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0)(Predictor)
        recipe_ref = ray.put(recipe)
        device = "cuda" if self.num_gpus else "cpu"
        actors: list = []

        def start():
            return actor_class.remote(recipe_ref, device)

        def submit(batch: _Batch) -> _Batch:
            while len(actors) <= batch.slot:  # actors start on first need: a cached part starts none
                actors.append(start())
            batch.actor = actors[batch.slot]
            batch.future = batch.actor.predict.remote(batch.todo)
            return batch

        slots = itertools.cycle(range(self.n_actors))
        pending: collections.deque[_Batch] = collections.deque()
        source = iter(batches)
        try:
            while True:
                while len(pending) < self.n_actors * BATCHES_IN_FLIGHT_PER_ACTOR:
                    todo = next(source, _END)
                    if todo is _END:
                        break
                    pending.append(submit(_Batch(todo, slot=next(slots))) if todo else _Batch(todo))
                if not pending:
                    return
                batch = pending.popleft()
                yield self._answer(ray, batch, actors, start, submit, pipeline.name) if batch.todo else ([], 0.0)
        finally:
            for actor in actors:
                ray.kill(actor)

    def _answer(self, ray, batch: _Batch, actors: list, start, submit, name: str):
        """The batch's answers; a failure re-runs it once (on a fresh actor when its actor died)."""
        for attempt in (1, 2):
            try:
                return ray.get(batch.future)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                if attempt == 2:
                    raise WorkerError(f"pipeline {name}: a batch of {len(batch.todo)} image(s) from "
                                      f"{batch.todo[0].id} failed twice on Ray actors: {_actor_error(e)}") from None
                if isinstance(e, ray.exceptions.RayActorError) and actors[batch.slot] is batch.actor:
                    actors[batch.slot] = start()
                submit(batch)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Shut down a cluster this executor started; one it joined keeps running."""
        if self._ray is not None and self._started_here:
            self._ray.shutdown()
        self._ray = None


def _actor_error(error: Exception) -> str:
    """One line from Ray's error, credentials redacted: the pipeline's own exception, or why the actor died."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, Exception) and not type(cause).__module__.startswith("ray."):
        return redact(f"{type(cause).__name__}: {cause}")
    text = re.sub(r"\s+", " ", str(error)).strip()
    return redact(text[:400])


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within `timeout_s`, a cluster address where nothing answers: Ray itself would wait for its head
    node for minutes. `local` (a cluster started here) and `auto` (the one `ray start` recorded) are Ray's to find."""
    match = _HOST_PORT.fullmatch(address.strip())
    if match is None:
        return
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise ConfigError(f"Ray cluster at {redact(address)} (--fm-ray-address, [executor] address): nothing answers "
                          f"at {host}:{port} within {timeout_s:g} s ({reason}); start it (`ray start --head`) or "
                          "fix the address") from None
