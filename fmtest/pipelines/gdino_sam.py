"""GroundingDINO + SAM (Text2Seg / Grounded-SAM), as the study ran it.

GroundingDINO Swin-T OGC proposes boxes for the text prompt (box threshold 0.35, text threshold
0.25); SAM turns each box into one mask; the prediction is the union. No box gives an empty mask
(label OK) instead of the upstream demo's crash. The image score is the best box score (0 without
boxes), so the case also has a continuous anomaly score for the risk figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.models import grounding_dino, sam_variants
from fmtest.models.registry import combined_id
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.options import parse_options, require_choice, require_unit_interval

if TYPE_CHECKING:
    from fmtest.models.sam import SamEngine


@dataclass(frozen=True)
class GroundingDinoSamOptions:
    """`[pipelines.gdino_sam]`, with the study's thresholds."""

    box_threshold: float = 0.35
    text_threshold: float = 0.25
    sam_variant: str = "vit_h"


class GroundingDinoSam(Pipeline):
    name = "gdino_sam"
    task = "segmentation"
    batch_size = 4

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options = self.read_options(context)

    @classmethod
    def read_options(cls, context: PipelineContext) -> GroundingDinoSamOptions:
        options = parse_options(GroundingDinoSamOptions, cls.name, context.options)
        require_unit_interval(cls.name, box_threshold=options.box_threshold, text_threshold=options.text_threshold)
        require_choice(cls.name, "sam_variant", options.sam_variant, sam_variants.known_variants())
        return options

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        options = cls.read_options(context)
        grounding_dino.require(context.weights_dir)
        sam_variants.require(context.weights_dir, options.sam_variant)

    @property
    def detector(self) -> grounding_dino.GroundingDino:
        return grounding_dino.grounding_dino(self.context.weights_dir, self.context.device)

    @property
    def engine(self) -> SamEngine:
        from fmtest.models.sam import sam_engine  # segment_anything loads when a model is built, not at a check

        return sam_engine(self.context.weights_dir, self.context.device, self.options.sam_variant)

    @property
    def model_id(self) -> str:
        return combined_id(self.detector.model_id, self.engine.model_id)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        images = [to_rgb_uint8(s.image) for s in samples]
        keys = [s.sha256 for s in samples]
        detections = self.detector.detect(images, self.context.prompt, self.options.box_threshold,
                                          self.options.text_threshold)
        engine = self.engine
        engine.embed(images, keys)
        predictions = []
        for image, key, found in zip(images, keys, detections, strict=True):
            masks, _ = engine.masks_from_boxes(image, key, found.boxes_xyxy)
            union = masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], dtype=bool)
            score = float(found.scores.max()) if len(found) else 0.0
            predictions.append(Prediction.from_mask(union, score=score))
        return predictions
