"""GroundingDINO + SAM (Text2Seg / Grounded-SAM), as the study ran it.

GroundingDINO Swin-T OGC proposes boxes for the text prompt (box threshold 0.35, text threshold
0.25); SAM turns each box into one mask, all boxes in one decoder call as Text2Seg's `predict_dino` makes it
(`predict_torch`); the prediction is the union. No box gives an empty mask
(label OK) instead of the upstream demo's crash. The image score is the best box score (0 without
boxes), so the case also has a continuous anomaly score for the risk figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmtest.data.departures import Departure, unless_equal
from fmtest.data.sample import Sample
from fmtest.pipelines.base import PipelineContext, Prediction
from fmtest.pipelines.options import require_unit_interval
from fmtest.pipelines.sam_base import DetectorSamOptions, DetectorSamPipeline


@dataclass(frozen=True)
class GroundingDinoSamOptions(DetectorSamOptions):
    """`[pipelines.gdino_sam]`, with the study's thresholds."""

    box_threshold: float = 0.35
    text_threshold: float = 0.25


class GroundingDinoSam(DetectorSamPipeline):
    name = "gdino_sam"
    options_type = GroundingDinoSamOptions
    study_source = "Text2Seg `Text2Seg.predict_dino` (text2seg/text2seg.py)"

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        """Text2Seg hard-codes box 0.35 / text 0.25 and unions SAM's one mask per box, as fmtest does."""
        options = cls.read_options(context.options)
        return (unless_equal("box threshold", options.box_threshold, 0.35, "set by box_threshold; Text2Seg's is 0.35")
                + unless_equal("text threshold", options.text_threshold, 0.25,
                               "set by text_threshold; Text2Seg's is 0.25")
                + super().departures(context))

    @classmethod
    def check_options(cls, options: GroundingDinoSamOptions) -> None:
        require_unit_interval(cls.name, box_threshold=options.box_threshold, text_threshold=options.text_threshold)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        images, keys = self.embedded_images(samples)
        detections = self.detector.detect(images, self.context.prompt, self.options.box_threshold,
                                          self.options.text_threshold, self.options.gdino_precision)
        engine = self.engine
        predictions = []
        for image, key, found in zip(images, keys, detections, strict=True):
            masks, _ = engine.masks_from_boxes_batched(image, key, found.boxes_xyxy)  # all boxes at once, as Text2Seg
            union = masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], dtype=bool)
            score = float(found.scores.max()) if len(found) else 0.0
            predictions.append(Prediction.from_mask(union, score=score))
        return predictions
