"""What the four SAM pipelines share: options with a `sam_variant`, the process-wide SAM engine, and
the model that prompts SAM (GroundingDINO boxes, or CLIP / CLIP Surgery scores).

Each model's file is the registry's unless the pipeline's table names one: `sam_checkpoint`,
`gdino_checkpoint`, `clip_checkpoint` (a path; relative paths are relative to the suite config's folder).
A named file that does not exist is a configuration error, not a skip: the user asked for that file.

segment_anything is imported only when the engine is first used, so option checks and
`check_available` (run for every case of a suite, the skipped ones included) stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models import clip, grounding_dino, sam_variants
from fmtest.models.registry import combined_id
from fmtest.pipelines.base import Pipeline, PipelineContext
from fmtest.pipelines.options import parse_options, require_choice, table

if TYPE_CHECKING:
    from fmtest.models.sam import SamEngine


def checkpoint_option(context: PipelineContext, pipeline: str, option: str, value: str | None) -> Path | None:
    """The file (or folder) a `*_checkpoint` option names, resolved against the suite config's folder."""
    if value is None:
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else context.suite_dir / path
    if not path.exists():
        raise ConfigError(f"{option} = {value!r}: {path} does not exist", table(pipeline))
    return path


class SamPipeline(Pipeline):
    """A segmentation pipeline whose masks come from SAM; subclasses add the model that prompts it.

    `options_type` is the pipeline's frozen options dataclass; it must have `sam_variant` and
    `sam_checkpoint` fields.
    """

    task = "segmentation"
    batch_size = 4
    options_type: ClassVar[type]

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options = self.read_options(context)

    @classmethod
    def read_options(cls, context: PipelineContext):
        options = parse_options(cls.options_type, cls.name, context.options)
        require_choice(cls.name, "sam_variant", options.sam_variant, sam_variants.known_variants())
        cls.check_options(options)
        return options

    @classmethod
    def check_options(cls, options) -> None:
        """Ranges and combinations of the pipeline's own options (types are checked already)."""

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        cls.require_models(context, cls.read_options(context))

    @classmethod
    def require_models(cls, context: PipelineContext, options) -> None:
        """Raise MissingWeights for the first registry checkpoint that is neither present nor injected,
        ConfigError for a named checkpoint that does not exist."""
        if cls.sam_file(context, options) is None:
            sam_variants.require(context.weights_dir, options.sam_variant)

    @classmethod
    def sam_file(cls, context: PipelineContext, options) -> Path | None:
        return checkpoint_option(context, cls.name, "sam_checkpoint", options.sam_checkpoint)

    @property
    def engine(self) -> SamEngine:
        from fmtest.models.sam import custom_sam_engine, sam_engine

        own_file = self.sam_file(self.context, self.options)
        if own_file is not None:  # the variant comes from the file; a sam_variant the user set must agree
            return custom_sam_engine(own_file, self.context.device, self.context.options.get("sam_variant"))
        return sam_engine(self.context.weights_dir, self.context.device, self.options.sam_variant)

    def embedded_images(self, samples: Sequence[Sample]) -> tuple[list[np.ndarray], list[str]]:
        """The samples as RGB uint8 and their keys, with SAM's embedding of each computed (or cached)."""
        images = [to_rgb_uint8(s.image) for s in samples]
        keys = [s.sha256 for s in samples]
        self.engine.embed(images, keys)
        return images, keys


class DetectorSamPipeline(SamPipeline):
    """GroundingDINO proposes boxes from text; SAM turns boxes into masks. Options add `gdino_checkpoint`."""

    @classmethod
    def require_models(cls, context: PipelineContext, options) -> None:
        grounding_dino.require(context.weights_dir, cls.gdino_file(context, options))
        super().require_models(context, options)

    @classmethod
    def gdino_file(cls, context: PipelineContext, options) -> Path | None:
        return checkpoint_option(context, cls.name, "gdino_checkpoint", options.gdino_checkpoint)

    @property
    def detector(self) -> grounding_dino.GroundingDino:
        return grounding_dino.grounding_dino(self.context.weights_dir, self.context.device,
                                             self.gdino_file(self.context, self.options))

    @property
    def model_id(self) -> str:
        return combined_id(self.detector.model_id, self.engine.model_id)


class ClipSamPipeline(SamPipeline):
    """CLIP ViT-B/16 (plain, or run as CLIP Surgery) decides where the prompt is; SAM draws the masks.
    Options add `clip_checkpoint`."""

    @classmethod
    def require_models(cls, context: PipelineContext, options) -> None:
        super().require_models(context, options)
        if cls.clip_file(context, options) is None:
            clip.require_clip(context.weights_dir)

    @classmethod
    def clip_file(cls, context: PipelineContext, options) -> Path | None:
        return checkpoint_option(context, cls.name, "clip_checkpoint", options.clip_checkpoint)

    @property
    def encoder(self) -> clip.ClipEncoder:
        return clip.clip_encoder(self.context.weights_dir, self.context.device,
                                 self.clip_file(self.context, self.options))

    @property
    def model_id(self) -> str:
        return combined_id(self.engine.model_id, self.encoder.model_id)
