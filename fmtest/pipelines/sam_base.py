"""What the four SAM pipelines share: options with a `sam_variant`, the process-wide SAM engine, and
the model that prompts SAM (GroundingDINO boxes, or CLIP / CLIP Surgery scores).

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
from fmtest.extras import require_sdks
from fmtest.models import clip, grounding_dino, sam_variants
from fmtest.models.registry import combined_id
from fmtest.pipelines.base import Pipeline, PipelineContext
from fmtest.pipelines.options import parse_options, require_choice

if TYPE_CHECKING:
    from fmtest.models.sam import SamEngine


class SamPipeline(Pipeline):
    """A segmentation pipeline whose masks come from SAM; subclasses add the model that prompts it.

    `options_type` is the pipeline's frozen options dataclass; it must have a `sam_variant` field.
    """

    task = "segmentation"
    batch_size = 4
    options_type: ClassVar[type]
    sdk_modules: ClassVar[tuple[str, ...]] = ("segment_anything",)

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
        require_sdks(cls.sdk_modules, cls.name)
        options = cls.read_options(context)
        cls.require_models(context.weights_dir, options.sam_variant)

    @classmethod
    def require_models(cls, weights_dir: Path | None, sam_variant: str) -> None:
        """Raise MissingWeights for the first checkpoint that is neither present nor injected."""
        sam_variants.require(weights_dir, sam_variant)

    @property
    def engine(self) -> SamEngine:
        from fmtest.models.sam import sam_engine

        return sam_engine(self.context.weights_dir, self.context.device, self.options.sam_variant)

    def embedded_images(self, samples: Sequence[Sample]) -> tuple[list[np.ndarray], list[str]]:
        """The samples as RGB uint8 and their keys, with SAM's embedding of each computed (or cached)."""
        images = [to_rgb_uint8(s.image) for s in samples]
        keys = [s.sha256 for s in samples]
        self.engine.embed(images, keys)
        return images, keys


class DetectorSamPipeline(SamPipeline):
    """GroundingDINO proposes boxes from text; SAM turns boxes into masks."""

    sdk_modules: ClassVar[tuple[str, ...]] = ("segment_anything", "transformers")

    @classmethod
    def require_models(cls, weights_dir: Path | None, sam_variant: str) -> None:
        grounding_dino.require(weights_dir)
        super().require_models(weights_dir, sam_variant)

    @property
    def detector(self) -> grounding_dino.GroundingDino:
        return grounding_dino.grounding_dino(self.context.weights_dir, self.context.device)

    @property
    def model_id(self) -> str:
        return combined_id(self.detector.model_id, self.engine.model_id)


class ClipSamPipeline(SamPipeline):
    """CLIP ViT-B/16 (plain, or run as CLIP Surgery) decides where the prompt is; SAM draws the masks."""

    sdk_modules: ClassVar[tuple[str, ...]] = ("segment_anything", "open_clip")

    @classmethod
    def require_models(cls, weights_dir: Path | None, sam_variant: str) -> None:
        super().require_models(weights_dir, sam_variant)
        clip.require_clip(weights_dir)

    @property
    def encoder(self) -> clip.ClipEncoder:
        return clip.clip_encoder(self.context.weights_dir, self.context.device)

    @property
    def model_id(self) -> str:
        return combined_id(self.engine.model_id, self.encoder.model_id)
