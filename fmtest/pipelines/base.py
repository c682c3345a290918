"""The one small interface every pipeline implements: check_available -> fit -> predict."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import sys
import sysconfig
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from fmtest import __version__
from fmtest.data.departures import Departure
from fmtest.data.sample import NOK, Label, Sample, SampleSet
from fmtest.errors import ConfigError
from fmtest.pipelines.options import parse_options, table

Task = Literal["segmentation", "classification"]


@dataclass
class Prediction:
    """A pipeline's answer for one image.

    `mask` (bool, image size) is set by segmentation pipelines. A mask that marks a defect makes the
    answer NOK (`from_mask`); one under an OK label is a contradiction the run counts as an unusable
    answer. NOK with an empty mask is allowed: a defect found but not located (IoU 0). `score` is a continuous anomaly score (higher = more defective) when the pipeline has
    one. `error` records an answer that could not be used (malformed, refused): such a prediction
    is counted and reported, and its label is NOK so a broken answer never passes a part.
    `score_map` (float32, image size), when the pipeline computes one, is the per-pixel score in
    units of its pixel threshold, so 1.0 is the mask's edge whatever the pipeline: the scoreboard's
    viewer shows it on one colour scale. It is for viewing only; the prediction cache keeps it as the viewer
    draws it (its colour levels, at most 256 pixels on the long side).
    """

    label: Label
    score: float | None = None
    mask: np.ndarray | None = None
    reasoning: str | None = None
    error: str | None = None
    usage: Mapping[str, float] = field(default_factory=dict)
    score_map: np.ndarray | None = None

    @classmethod
    def from_mask(cls, mask: np.ndarray, score: float | None = None, **kw) -> Prediction:
        mask = np.asarray(mask, dtype=bool)
        return cls(label=NOK if mask.any() else "OK", score=score, mask=mask, **kw)

    @classmethod
    def failed(cls, error: str, **kw) -> Prediction:
        return cls(label=NOK, error=error, **kw)


@dataclass(frozen=True)
class PipelineContext:
    """Everything a pipeline needs from the run, resolved by the plugin from options and config."""

    dataset: str
    group: str | None = None  # the dataset group (MVTec category) this pipeline instance fits and scores
    options: Mapping[str, object] = field(default_factory=dict)  # [pipelines.<name>] of the config
    prompt: str = "defect"  # [prompts] entry for the dataset
    weights_dir: Path | None = None
    device: str = "cpu"
    work_dir: Path = Path(".fmtest_cache")  # where a pipeline may keep files of its own (compiled kernels)
    # where a remote-API pipeline keeps its requests and answers (fmtest.pipelines.vlm.store): the run's
    # cache folder's `vlm_requests`; None (--fm-no-cache): nothing is read from a store or written to one
    request_store: Path | None = None
    suite_dir: Path = Path(".")  # folder of the suite config: prompt files are relative to it
    progress: bool = True
    data_fingerprint: str = ""  # what `fit` learns from (dataset options, train ids, reference): keys the cache


class Pipeline(ABC):
    """A pipeline turns images into Predictions.

    Subclasses set `name` and `task`, raise `fmtest.errors.Unavailable` from `check_available`
    when weights or keys are missing, may learn from defect-free data in `fit`, and answer in
    `predict`, a batch at a time.
    """

    name: ClassVar[str]
    task: ClassVar[Task]
    batch_size: ClassVar[int] = 8
    remote_api: ClassVar[bool] = False  # True: each image is a (possibly paid) request to a service
    options_type: ClassVar[type | None] = None  # frozen dataclass of `[pipelines.<name>]`; None: no options
    # 0: `fit` sees defect-free training images only and the test split is scored. k > 0: the pipeline
    # learns from labelled OK and NOK images, so it is scored by stratified k-fold cross-validation over
    # the labelled images (fmtest.data.folds.stratified_folds), one fitted instance per fold.
    cross_validation_folds: ClassVar[int] = 0
    sdk_modules: ClassVar[tuple[str, ...]] = ()  # optional installs (fmtest.util.extras) check_available requires
    # The published code (or text) of the study this pipeline runs, for the fidelity table; None: not one of
    # the study's pipelines.
    study_source: ClassVar[str | None] = None

    def __init__(self, context: PipelineContext):
        self.context = context

    @classmethod
    def read_options(cls, options: Mapping[str, object]) -> object:
        """The pipeline's options from its `[pipelines.<name>]` table, checked (names, types, ranges).

        Loads no model: the suite config calls it for every pipeline table when it loads, so an unknown
        option or a bad value fails before any case runs. The default reads `options_type`.
        """
        if cls.options_type is None:
            if options:
                raise ConfigError(f"takes no options, got {', '.join(sorted(options))}", table(cls.name))
            return None
        parsed = parse_options(cls.options_type, cls.name, options)
        cls.check_options(parsed)
        return parsed

    @classmethod
    def options_for(cls, context: PipelineContext) -> object:
        """The options in effect for a dataset and group: the table's, plus what a pipeline sets for them
        (SAA+'s published per-category prompts). `fmtest config` prints these."""
        return cls.read_options(context.options)

    @classmethod
    def check_options(cls, options) -> None:
        """Ranges and combinations of the pipeline's own options (types are checked already)."""

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        """How this pipeline, with the options in effect for the context's dataset and group, departs from
        the study's run of it (the paper and the upstream code, `study_source`); [] when faithful.

        Loads no model. The default declares none: only the study's pipelines have a published run to
        depart from, and each of them overrides this.
        """
        return []

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        """Raise Unavailable (naming the missing file or variable) if this pipeline cannot run."""

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        """Learn from defect-free training images and the reference image; never sees test images."""

    @abstractmethod
    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        """One Prediction per sample, in order, masks at each sample's original size."""

    @property
    def model_id(self) -> str:
        """sha256 of the weights, or the API model name: what produced the numbers."""
        return "none"

    @property
    def fingerprint(self) -> str:
        """Changes whenever a setting that can change a prediction changes (the pipeline's code among them):
        keys the prediction cache."""
        blob = json.dumps(
            {"name": self.name, "options": dict(self.context.options), "prompt": self.context.prompt,
             "model": self.model_id, "dataset": self.context.dataset, "data": self.context.data_fingerprint,
             "code": code_fingerprint(type(self))},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@functools.cache
def code_fingerprint(cls: type) -> str:
    """What a pipeline's code is, so an edited pipeline is predicted again rather than served from the cache:
    fmtest's version, and for every class of its lineage below `Pipeline` its module's source and, when that
    module comes from an installed distribution, the distribution's name, version and recorded files (which
    also cover the package's other modules). Read once per class and process."""
    h = hashlib.sha256(f"fmtest {__version__}\n".encode())
    for klass in cls.__mro__:
        if klass is Pipeline or not issubclass(klass, Pipeline):
            continue
        module = sys.modules.get(klass.__module__)
        source = getattr(module, "__file__", None)
        h.update(f"{klass.__module__}:{klass.__qualname__}\n".encode())
        if not source or not Path(source).is_file():
            continue
        h.update(Path(source).read_bytes())
        if _installed(Path(source)):
            for dist in _distributions(klass.__module__.partition(".")[0]):
                h.update(f"{dist.metadata['Name']}=={dist.version}\n{dist.read_text('RECORD') or ''}".encode())
    return h.hexdigest()[:16]


def _installed(path: Path) -> bool:
    """A file of an installed (not editable) distribution, under site-packages."""
    return any(path.is_relative_to(sysconfig.get_path(kind)) for kind in ("purelib", "platlib"))


def _distributions(package: str) -> list[importlib.metadata.Distribution]:
    """The installed distributions that provide a top-level package."""
    names = importlib.metadata.packages_distributions().get(package, [])
    return [importlib.metadata.distribution(name) for name in dict.fromkeys(names)]
