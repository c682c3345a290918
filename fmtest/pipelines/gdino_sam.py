"""GroundingDINO + SAM (Text2Seg / Grounded-SAM), as the study ran it.

GroundingDINO Swin-T OGC proposes boxes for the text prompt (box threshold 0.35, text threshold
0.25); SAM turns each box into one mask; the prediction is the union. No box gives an empty mask
(label OK) instead of the upstream demo's crash. The image score is the best box score (0 without
boxes), so the case also has a continuous anomaly score for the risk figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models import grounding_dino, sam_variants
from fmtest.models.registry import combined_id
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction

if TYPE_CHECKING:
    from fmtest.models.sam import SamEngine


def read_options(context: PipelineContext, name: str, defaults: Mapping[str, object]) -> dict[str, object]:
    """`[pipelines.<name>]` merged over the defaults; unknown keys and wrong types raise ConfigError."""
    unknown = sorted(set(context.options) - set(defaults))
    if unknown:
        raise ConfigError(f"[pipelines.{name}]: unknown option(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(defaults))}")
    merged = dict(defaults)
    for key, value in context.options.items():
        default = defaults[key]
        if isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, tuple):
            ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        else:
            ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
        if not ok:
            raise ConfigError(f"[pipelines.{name}]: {key} must be {type(default).__name__}, got {value!r}")
        merged[key] = value
    for key in ("box_threshold", "text_threshold"):
        if key in merged and not 0.0 <= merged[key] <= 1.0:
            raise ConfigError(f"[pipelines.{name}]: {key} must be in [0, 1], got {merged[key]}")
    known = sam_variants.known_variants()
    if merged.get("sam_variant", "vit_h") not in known:
        raise ConfigError(f"[pipelines.{name}]: sam_variant must be one of {', '.join(known)}")
    return merged


class GroundingDinoSam(Pipeline):
    name = "gdino_sam"
    task = "segmentation"
    batch_size = 4
    DEFAULTS: Mapping[str, object] = {"box_threshold": 0.35, "text_threshold": 0.25, "sam_variant": "vit_h"}

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options = read_options(context, self.name, self.DEFAULTS)

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        options = read_options(context, cls.name, cls.DEFAULTS)
        grounding_dino.require(context.weights_dir)
        sam_variants.require(context.weights_dir, str(options["sam_variant"]))

    @property
    def detector(self) -> grounding_dino.GroundingDino:
        return grounding_dino.grounding_dino(self.context.weights_dir, self.context.device)

    @property
    def engine(self) -> SamEngine:
        from fmtest.models.sam import sam_engine  # segment_anything loads when a model is built, not at a check

        return sam_engine(self.context.weights_dir, self.context.device, str(self.options["sam_variant"]))

    @property
    def model_id(self) -> str:
        return combined_id(self.detector.model_id, self.engine.model_id)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        images = [to_rgb_uint8(s.image) for s in samples]
        keys = [s.sha256 for s in samples]
        detections = self.detector.detect(images, self.context.prompt, float(self.options["box_threshold"]),
                                          float(self.options["text_threshold"]))
        engine = self.engine
        engine.embed(images, keys)
        predictions = []
        for image, key, found in zip(images, keys, detections, strict=True):
            masks, _ = engine.masks_from_boxes(image, key, found.boxes_xyxy)
            union = masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], dtype=bool)
            score = float(found.scores.max()) if len(found) else 0.0
            predictions.append(Prediction.from_mask(union, score=score))
        return predictions
