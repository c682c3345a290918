"""What the four SAM pipelines share: the SAM options, the process-wide SAM engine, and the model that
prompts SAM (GroundingDINO boxes, or CLIP / CLIP Surgery scores).

Options every SAM pipeline takes (defaults: segment_anything's own float32 code path):
`sam_variant` ("vit_h"), `sam_precision` ("fp32" | "bf16": the image encoder under bfloat16
autocast), `sam_attention` ("reference" | "sdpa": PyTorch's fused attention with the relative
position bias as its mask), `sam_batch_size` (4: images per encoder call, and per `predict`),
`sam_compile` (false: torch.compile the encoder, its cache under the run's work folder).
GroundingDINO pipelines add `gdino_precision` ("fp32" | "bf16"). Pipelines with the same
precision, attention and compile settings share each image's embedding.

Each model's file is the registry's unless the pipeline's table names one: `sam_checkpoint`,
`gdino_checkpoint`, `clip_checkpoint` (a path; relative paths are relative to the suite config's folder).
A named file that does not exist is a configuration error, not a skip: the user asked for that file.

segment_anything is imported only when the engine is first used, so option checks and
`check_available` (run for every case of a suite, the skipped ones included) stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fmtest.data.departures import Departure, unless_equal
from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models import clip, grounding_dino, sam_variants
from fmtest.models.precision import PRECISIONS
from fmtest.models.registry import combined_id
from fmtest.pipelines.base import Pipeline, PipelineContext
from fmtest.pipelines.options import (
    parse_options,
    require_at_least_one,
    require_choice,
    table,
)
from fmtest.util.extras import require_sdks

if TYPE_CHECKING:
    from fmtest.models.sam import SamEngine
    from fmtest.models.sam_encoder import EncoderSettings

STUDY_SAM_VARIANT = "vit_h"  # the study: SAM ViT-H in every pipeline
SAM_ATTENTIONS = ("reference", "sdpa")  # fmtest.models.sam_encoder.ATTENTIONS, without importing segment_anything
COMPILE_CACHE_FOLDER = "torchinductor"  # under the run's work folder


@dataclass(frozen=True)
class SamOptions:
    """The options every SAM pipeline's options dataclass inherits."""

    sam_variant: str = "vit_h"
    sam_checkpoint: str | None = None
    sam_precision: str = "fp32"
    sam_attention: str = "reference"
    sam_batch_size: int = 4
    sam_compile: bool = False


@dataclass(frozen=True)
class DetectorSamOptions(SamOptions):
    """SamOptions plus how GroundingDINO runs."""

    gdino_precision: str = "fp32"
    gdino_checkpoint: str | None = None


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

    `options_type` is the pipeline's frozen options dataclass, a subclass of SamOptions. A pipeline
    predicts `sam_batch_size` images at a time, so each `predict` is one encoder call.
    """

    task = "segmentation"
    batch_size = SamOptions.sam_batch_size
    options_type: ClassVar[type[SamOptions]]
    sdk_modules: ClassVar[tuple[str, ...]] = ("segment_anything",)

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options = self.options_for(context)
        self.batch_size = self.options.sam_batch_size

    @classmethod
    def read_options(cls, options: Mapping[str, object]):
        parsed = parse_options(cls.options_type, cls.name, options)
        require_choice(cls.name, "sam_variant", parsed.sam_variant, sam_variants.known_variants())
        require_choice(cls.name, "sam_precision", parsed.sam_precision, PRECISIONS)
        require_choice(cls.name, "sam_attention", parsed.sam_attention, SAM_ATTENTIONS)
        require_at_least_one(cls.name, sam_batch_size=parsed.sam_batch_size)
        cls.check_options(parsed)
        return parsed

    @classmethod
    def check_options(cls, options) -> None:
        """Ranges and combinations of the pipeline's own options (types are checked already)."""

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        require_sdks(cls.sdk_modules, cls.name)
        cls.require_models(context, cls.read_options(context.options))  # a case's check: no group yet

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        """How SAM runs here against the study's (ViT-H, the official file, float32, segment_anything's code)."""
        return sam_departures(cls.read_options(context.options))

    @classmethod
    def require_models(cls, context: PipelineContext, options) -> None:
        """Raise MissingWeights for the first registry checkpoint that is neither present nor injected,
        ConfigError for a named checkpoint that does not exist."""
        if cls.checkpoint_file(context, options, "sam_checkpoint") is None:
            sam_variants.require(context.weights_dir, options.sam_variant)

    @classmethod
    def checkpoint_file(cls, context: PipelineContext, options, option: str) -> Path | None:
        """The file (or folder) that `options`' `option` (`sam_checkpoint`, `gdino_checkpoint`,
        `clip_checkpoint`) names, resolved against the suite config's folder; None when it names none."""
        return checkpoint_option(context, cls.name, option, getattr(options, option))

    def own_file(self, option: str) -> Path | None:
        """This pipeline's `checkpoint_file` for `option`."""
        return self.checkpoint_file(self.context, self.options, option)

    @cached_property
    def encoder_settings(self) -> EncoderSettings:
        from fmtest.models.sam_encoder import EncoderSettings

        o = self.options
        return EncoderSettings(precision=o.sam_precision, attention=o.sam_attention, compile=o.sam_compile,
                               batch_size=o.sam_batch_size,
                               compile_cache_dir=self.context.work_dir / COMPILE_CACHE_FOLDER)

    @property
    def engine(self) -> SamEngine:
        """The process-wide engine for the variant (or the named file), its encoder run with this
        pipeline's settings."""
        from fmtest.models.sam import custom_sam_engine, sam_engine

        own_file = self.own_file("sam_checkpoint")
        if own_file is not None:  # the variant comes from the file; a sam_variant the user set must agree
            engine = custom_sam_engine(own_file, self.context.device, self.context.options.get("sam_variant"))
        else:
            engine = sam_engine(self.context.weights_dir, self.context.device, self.options.sam_variant)
        return engine.configured(self.encoder_settings)

    @property
    def sam_model_id(self) -> str:
        """The engine's model id, read from its file without loading it, so a cached rerun loads no SAM."""
        return sam_variants.model_id(self.context.weights_dir, self.options.sam_variant, self.own_file("sam_checkpoint"))

    def embedded_images(self, samples: Sequence[Sample]) -> tuple[list[np.ndarray], list[str]]:
        """The samples as RGB uint8 and their keys, with SAM's embedding of each computed (or cached)."""
        images = [to_rgb_uint8(s.image) for s in samples]
        keys = [s.sha256 for s in samples]
        self.engine.embed(images, keys)
        return images, keys


def sam_departures(options: SamOptions) -> list[Departure]:
    """The SAM settings of `options` that differ from the study's run of SAM."""
    found = unless_equal("SAM variant", options.sam_variant, STUDY_SAM_VARIANT,
                         "set by sam_variant; the study used ViT-H in every pipeline")
    found += own_weights("SAM", "sam_checkpoint", options, "sam_vit_h_4b8939.pth")
    found += unless_equal("SAM precision", options.sam_precision, "fp32",
                          "set by sam_precision: the encoder under bfloat16 autocast rounds differently")
    found += unless_equal("SAM attention", options.sam_attention, "reference",
                          "set by sam_attention: PyTorch's fused attention rounds differently from "
                          "segment_anything's own")
    if options.sam_compile:
        found.append(Departure("SAM compiled", "torch.compile'd encoder", "segment_anything's eager encoder",
                               "set by sam_compile: compiled kernels round differently"))
    return found


def own_weights(model: str, option: str, options, study_file: str) -> list[Departure]:
    """The departure a `*_checkpoint` option makes: the user's file for `model` instead of the study's file."""
    path = getattr(options, option)
    return [] if path is None else [Departure(f"{model} weights", f"your file {path}", study_file, f"set by {option}")]


class DetectorSamPipeline(SamPipeline):
    """GroundingDINO proposes boxes from text; SAM turns boxes into masks. Options add `gdino_checkpoint`."""

    options_type: ClassVar[type[DetectorSamOptions]]

    sdk_modules: ClassVar[tuple[str, ...]] = ("segment_anything", "transformers")

    @classmethod
    def read_options(cls, options: Mapping[str, object]):
        parsed = super().read_options(options)
        require_choice(cls.name, "gdino_precision", parsed.gdino_precision, PRECISIONS)
        return parsed

    @classmethod
    def require_models(cls, context: PipelineContext, options) -> None:
        grounding_dino.require(context.weights_dir, cls.checkpoint_file(context, options, "gdino_checkpoint"))
        super().require_models(context, options)

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        found = super().departures(context)
        options = cls.read_options(context.options)
        found += own_weights("GroundingDINO", "gdino_checkpoint", options, "groundingdino_swint_ogc.pth")
        found += unless_equal("GroundingDINO precision", options.gdino_precision, "fp32",
                              "set by gdino_precision: bfloat16 autocast rounds differently")
        return found

    @property
    def detector(self) -> grounding_dino.GroundingDino:
        return grounding_dino.grounding_dino(self.context.weights_dir, self.context.device,
                                             self.own_file("gdino_checkpoint"))

    @property
    def model_id(self) -> str:
        return combined_id(grounding_dino.model_id(self.context.weights_dir, self.own_file("gdino_checkpoint")),
                           self.sam_model_id)


# Text2Seg loads CLIP with `clip.load(..., device="cuda")`, which keeps OpenAI's float16 weights on a GPU.
CLIP_PRECISION = Departure(
    "CLIP precision", "float32", "float16 (OpenAI's weights as `clip.load` keeps them on a GPU)",
    "float32 is the reference arithmetic and runs the same on every device; half precision changes rounding only")


class ClipSamPipeline(SamPipeline):
    """CLIP ViT-B/16 (plain, or run as CLIP Surgery) decides where the prompt is; SAM draws the masks.
    Options add `clip_checkpoint`."""

    sdk_modules: ClassVar[tuple[str, ...]] = ("segment_anything", "open_clip")

    @classmethod
    def require_models(cls, context: PipelineContext, options) -> None:
        super().require_models(context, options)
        if cls.checkpoint_file(context, options, "clip_checkpoint") is None:
            clip.require_clip(context.weights_dir)

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        found = super().departures(context)
        found += own_weights("CLIP", "clip_checkpoint", cls.read_options(context.options), "OpenAI ViT-B-16.pt")
        found.append(CLIP_PRECISION)
        return found

    @property
    def encoder(self) -> clip.ClipEncoder:
        return clip.clip_encoder(self.context.weights_dir, self.context.device, self.own_file("clip_checkpoint"))

    @property
    def model_id(self) -> str:
        return combined_id(self.sam_model_id, clip.model_id(self.context.weights_dir, self.own_file("clip_checkpoint")))
