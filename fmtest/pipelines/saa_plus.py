"""Segment Any Anomaly+ (Cao et al.): GroundingDINO proposals regularised by hybrid prompts, refined by SAM.

Steps per image, with the paper's defaults (all `[pipelines.saa_plus]` options):
1. Object region: GroundingDINO on `object_prompt`; the largest kept box (normalised area) is the
   object's area, 1.0 when none is found (single-object property prompt, as SAA+ on MVTec).
2. Anomaly region generator: GroundingDINO once per anomaly language prompt (`anomaly_prompts`;
   `{prompt}` is the dataset's text prompt, `{object}` the object prompt), box 0.10 / text 0.10.
3. Property prompts: a box survives when its score passes `box_threshold`, its normalised area is
   below `object area x max_area_ratio` (0.9), and its phrase contains none of `filter_words`
   (default: the object word; `{object}` is the object prompt).
4. Anomaly region refiner: SAM turns each surviving box into a mask.
5. Saliency prompt: per-location self-dissimilarity of a feature map (the mean of the
   `saliency_top_n` (400) largest values of (1 - cos) / 2 to every other location).
   `saliency = "sam_embedding"` (default) reads SAM's image embedding, already computed for the
   refiner (no extra weights). `saliency = "wideresnet50"` is SAA+'s own: stages 1-3 of an ImageNet
   Wide ResNet-50-2 (torchvision's `wide_resnet50_2-95faca4d.pth`) on the image resized to 256 x 256.
6. Confidence: box score x exp(`saliency_gain` (3) x mean saliency inside the mask); the `top_k` (5)
   most confident regions with confidence >= `confidence_threshold` form the predicted mask.
The image score is the best confidence (0 without regions).

`published_prompts = true` takes SAA+'s own per-category prompts, object word, filter words and
property numbers for the images' dataset group (MVTec AD's texture categories,
`fmtest.pipelines.saa_prompts`) over the configured ones; `read_options` returns the settings in
effect, so they can be printed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models import imagenet_cnn, registry
from fmtest.models.grounding_dino import Detections
from fmtest.pipelines.base import PipelineContext, Prediction
from fmtest.pipelines.options import require_at_least_one, require_choice, require_unit_interval, table
from fmtest.pipelines.saa_prompts import published_options
from fmtest.pipelines.sam_base import DetectorSamOptions, DetectorSamPipeline

SALIENCY_SOURCES = ("sam_embedding", "wideresnet50")
WIDE_RESNET_INPUT = 256  # SAA+ resizes the image to 256 x 256 for its saliency network


def self_dissimilarity(features: torch.Tensor, valid_hw: tuple[int, int], top_n: int) -> np.ndarray:
    """Saliency map (h, w) of a (1, C, H, W) feature map restricted to its valid top-left h x w.

    Each location scores the mean of its `top_n` largest dissimilarities (1 - cosine) / 2 to all
    locations: a region unlike the rest of the image scores high.
    """
    h, w = valid_hw
    feats = features[0, :, :h, :w].reshape(features.shape[1], h * w).float()
    feats = torch.nn.functional.normalize(feats, dim=0)
    dissimilarity = 0.5 * (1.0 - feats.T @ feats)
    n = min(top_n, h * w)
    top = dissimilarity.topk(n, dim=1).values
    return top.mean(dim=1).reshape(h, w).cpu().numpy()


def normalised_areas(found: Detections, image_hw: tuple[int, int]) -> np.ndarray:
    h, w = image_hw
    boxes = found.boxes_xyxy
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / float(h * w)


@dataclass(frozen=True)
class SaaPlusOptions(DetectorSamOptions):
    """`[pipelines.saa_plus]`, with the paper's defaults."""

    box_threshold: float = 0.10
    text_threshold: float = 0.10
    anomaly_prompts: tuple[str, ...] = ("{prompt}",)
    object_prompt: str = "object"
    filter_words: tuple[str, ...] = ("{object}",)
    published_prompts: bool = False
    max_area_ratio: float = 0.9
    top_k: int = 5
    saliency_top_n: int = 400
    saliency_gain: float = 3.0
    saliency: str = "sam_embedding"
    confidence_threshold: float = 0.0


class SaaPlus(DetectorSamPipeline):
    name = "saa_plus"
    options_type = SaaPlusOptions

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.prompts = [t.format(prompt=context.prompt, object=self.options.object_prompt)
                        for t in self.options.anomaly_prompts]
        self.filter_words = [w.format(object=self.options.object_prompt).strip().lower()
                             for w in self.options.filter_words]

    @classmethod
    def options_for(cls, context: PipelineContext) -> SaaPlusOptions:
        """The settings in effect: the configured ones, with SAA+'s published prompts when asked for."""
        options = super().options_for(context)
        if options.published_prompts:
            options = dataclasses.replace(options, **published_options(context.dataset, context.group))
            cls.check_options(options)
        return options

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        super().check_available(context)
        if cls.read_options(context.options).saliency == "wideresnet50":  # a case's check: no group yet
            registry.require(imagenet_cnn.WIDE_RESNET50_KEY, context.weights_dir)

    @classmethod
    def check_options(cls, options: SaaPlusOptions) -> None:
        require_unit_interval(cls.name, box_threshold=options.box_threshold, text_threshold=options.text_threshold)
        require_choice(cls.name, "saliency", options.saliency, SALIENCY_SOURCES)
        if not options.anomaly_prompts:
            raise ConfigError("anomaly_prompts must name at least one prompt", table(cls.name))
        for template in options.filter_words:
            try:
                template.format(object="")
            except (KeyError, IndexError, ValueError):
                raise ConfigError(f"filter word {template!r} may only use {{object}}", table(cls.name)) from None
        for template in options.anomaly_prompts:
            try:
                template.format(prompt="", object="")
            except (KeyError, IndexError, ValueError):
                raise ConfigError(f"anomaly prompt {template!r} may only use {{prompt}} and {{object}}",
                                  table(cls.name)) from None
        require_at_least_one(cls.name, top_k=options.top_k, saliency_top_n=options.saliency_top_n)
        if not 0.0 < options.max_area_ratio <= 1.0:
            raise ConfigError("max_area_ratio must be in (0, 1]", table(cls.name))

    @property
    def model_id(self) -> str:
        if self.options.saliency == "wideresnet50":
            return registry.combined_id(super().model_id, self.saliency_network.model_id)
        return super().model_id

    @property
    def fingerprint(self) -> str:
        """Also keyed by the settings in effect: published prompts come from fmtest, not the config."""
        effective = json.dumps(dataclasses.asdict(self.options), sort_keys=True)
        return hashlib.sha256(f"{super().fingerprint}\n{effective}".encode()).hexdigest()[:16]

    @property
    def saliency_network(self) -> imagenet_cnn.ImageNetCnn:
        return imagenet_cnn.load_resnet(imagenet_cnn.WIDE_RESNET50_KEY, self.context.weights_dir, self.context.device)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        images, keys = self.embedded_images(samples)
        box_t, text_t = self.options.box_threshold, self.options.text_threshold
        precision = self.options.gdino_precision
        objects = self.detector.detect(images, self.options.object_prompt, box_t, text_t, precision)
        per_prompt = [self.detector.detect(images, p, box_t, text_t, precision) for p in self.prompts]
        return [self._predict_one(image, key, objects[i], [found[i] for found in per_prompt])
                for i, (image, key) in enumerate(zip(images, keys, strict=True))]

    def _predict_one(self, image: np.ndarray, key: str, objects: Detections,
                     candidates: list[Detections]) -> Prediction:
        hw = image.shape[:2]
        boxes, scores = self.filter_regions(objects, candidates, hw)
        if len(boxes) == 0:
            return Prediction.from_mask(np.zeros(hw, dtype=bool), score=0.0)
        masks, _ = self.engine.masks_from_boxes(image, key, boxes)
        saliency = self.saliency(image, key)
        confidence = self.confidence(masks, scores, saliency)
        order = np.argsort(-confidence, kind="stable")[: self.options.top_k]
        keep = [i for i in order if confidence[i] >= self.options.confidence_threshold]
        mask = masks[keep].any(axis=0) if keep else np.zeros(hw, dtype=bool)
        return Prediction.from_mask(mask, score=float(confidence.max()))

    def filter_regions(self, objects: Detections, candidates: list[Detections],
                       hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Property prompts: boxes below the area limit whose phrase contains no filter word."""
        object_areas = normalised_areas(objects, hw)
        object_areas = object_areas[object_areas < 1.0]  # single object: its box may not be the whole image
        object_area = float(object_areas.max()) if len(object_areas) else 1.0
        max_area = object_area * self.options.max_area_ratio
        boxes, scores = [], []
        for found in candidates:
            areas = normalised_areas(found, hw)
            for box, score, area, phrase in zip(found.boxes_xyxy, found.scores, areas, found.phrases, strict=True):
                if 0.0 < area < max_area and not any(w and w in phrase.lower() for w in self.filter_words):
                    boxes.append(box)
                    scores.append(score)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(scores, dtype=np.float32)

    def saliency(self, image: np.ndarray, key: str) -> np.ndarray:
        """Self-dissimilarity of the saliency features (SAM embedding or Wide ResNet), resized to the image."""
        if self.options.saliency == "wideresnet50":
            features = imagenet_cnn.stage_maps(self.saliency_network, image, WIDE_RESNET_INPUT)
            valid = tuple(features.shape[-2:])
        else:
            predictor = self.engine.predictor(image, key)
            features = self.engine.image_embedding(image, key)
            stride = predictor.model.image_encoder.img_size // features.shape[-1]
            valid = tuple(-(-s // stride) for s in predictor.input_size)
        small = self_dissimilarity(features, valid, self.options.saliency_top_n)
        return cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)

    def confidence(self, masks: np.ndarray, scores: np.ndarray, saliency: np.ndarray) -> np.ndarray:
        """Box score x exp(gain x mean saliency in the mask); an empty mask keeps its box score."""
        gain = self.options.saliency_gain
        factors = np.array([np.exp(gain * saliency[m].mean()) if m.any() else 1.0 for m in masks])
        return scores * factors
