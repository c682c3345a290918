"""Segment Any Anomaly+ (Cao et al.): GroundingDINO proposals regularised by hybrid prompts, refined by SAM.

Steps per image, with the paper's defaults (all `[pipelines.saa_plus]` options):
1. Object region: GroundingDINO on `object_prompt`; the largest kept box (normalised area) is the
   object's area, 1.0 when none is found or `object_prompt` is "" (single-object property prompt,
   as SAA+ on MVTec).
2. Anomaly region generator: GroundingDINO once per anomaly language prompt (`anomaly_prompts`;
   `{prompt}` is the dataset's text prompt, `{object}` the object prompt), box 0.10 / text 0.10.
3. Property prompts: a box survives when its score passes `box_threshold`, its normalised area is
   below `object area x max_area_ratio` (0.9), and its phrase contains none of `filter_words`
   (default: the object word; `{object}` is the object prompt).
4. Anomaly region refiner: SAM turns each surviving box into a mask.
5. Saliency prompt: per-location self-dissimilarity of a feature map (the mean of the
   `saliency_top_n` (400) largest values of (1 - cos) / 2 to every other location).
   `saliency = "sam_embedding"` (default) reads SAM's image embedding, already computed for the
   refiner (no extra weights). `saliency = "wideresnet50"` is SAA+'s own (`SAA/modelinet.py`): stages
   1-3 of an ImageNet Wide ResNet-50-2 on the image resized (bilinear, `cv2.resize`'s default) to
   256 x 256; `saliency_weights = "timm"` (default) loads the weights SAA+'s `timm.create_model(
   "wide_resnet50_2", pretrained=True)` gets (`wide_resnet50_racm-8234f177.pth`), "torchvision" the
   torchvision ones (`wide_resnet50_2-95faca4d.pth`).
6. Confidence: box score x exp(`saliency_gain` (3) x mean saliency inside the mask); the `top_k` (5)
   most confident regions are SAA+'s output.

How the output becomes a mask (`binarisation`), which SAA+ does not do (it reports threshold-free
AUROC, and F1 at the threshold that is best on the test set, which a gate must never use):
- "calibrated" (default): SAA+'s anomaly map (`SAA/model.py`, `confidence_prompting`: each pixel the
  sum of the confidences of the top-k masks covering it over 1 + their count) is thresholded at the
  `calibration_quantile` (0.99) quantile of its per-image maximum over up to `calibration_images`
  (20) defect-free training images (a seeded draw, `calibration_seed`), as `padim` sets its image
  threshold. Pixels above it are the mask; the image score is the map's maximum.
- "top_k_union": the union of the top-k regions whose confidence is at least `confidence_threshold`
  (every region SAA+ puts on its map); the image score is the best confidence.

Colour order (`colour_order`): SAA+'s `Model.forward` takes the BGR array `cv2.imread` returns, converts
it to RGB for GroundingDINO and hands it unconverted to SAM and to the saliency network. "bgr" does
the same; "rgb" (default) gives every model RGB, as they were trained. Greyscale images are alike
either way.

`published_prompts = true` takes SAA+'s own per-category prompts, object word, filter words and
property numbers for the images' dataset group (MVTec AD's texture categories), and fmtest's
settings of the same form for the study's other datasets (Oxford-IIIT-Pet, IndustrialSAT), over the
configured ones (`fmtest.pipelines.saa_prompts`); `options_for` returns the settings in effect, so
they can be printed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fmtest.data.departures import NOT_PUBLISHED, Departure, unless_equal
from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import OK, Sample, SampleSet
from fmtest.errors import ConfigError, DataError
from fmtest.models import imagenet_cnn, registry
from fmtest.models.grounding_dino import Detections
from fmtest.pipelines.base import PipelineContext, Prediction
from fmtest.pipelines.options import (
    require_at_least_one,
    require_choice,
    require_unit_interval,
    table,
)
from fmtest.pipelines.saa_prompts import PUBLISHED, STUDY_DATASETS, published_options
from fmtest.pipelines.sam_base import DetectorSamOptions, DetectorSamPipeline
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")

SALIENCY_SOURCES = ("sam_embedding", "wideresnet50")
SALIENCY_WEIGHTS = {"timm": imagenet_cnn.WIDE_RESNET50_TIMM_KEY, "torchvision": imagenet_cnn.WIDE_RESNET50_KEY}
BINARISATIONS = ("calibrated", "top_k_union")
COLOUR_ORDERS = ("rgb", "bgr")
WIDE_RESNET_INPUT = 256  # SAA+ resizes the image to 256 x 256 for its saliency network
NO_DETECTIONS = Detections(np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32), ())


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
    saliency_weights: str = "timm"  # with saliency = "wideresnet50": SAA+'s timm weights, or torchvision's
    colour_order: str = "rgb"  # "bgr": SAM and the saliency network see BGR, as in SAA+
    binarisation: str = "calibrated"
    calibration_images: int = 20  # defect-free training images the calibrated threshold is set on, at most
    calibration_quantile: float = 0.99  # of their anomaly maps' maxima
    calibration_seed: int = 0  # which of them, when there are more
    confidence_threshold: float = 0.0  # binarisation = "top_k_union": regions below it are left out


class SaaPlus(DetectorSamPipeline):
    name = "saa_plus"
    options_type = SaaPlusOptions
    study_source = "Segment-Any-Anomaly `SAA/model.py`, `SAA/modelinet.py`, `SAA/prompts/`, `eval_SAA.py`"

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.prompts = [t.format(prompt=context.prompt, object=self.options.object_prompt)
                        for t in self.options.anomaly_prompts]
        self.filter_words = [w.format(object=self.options.object_prompt).strip().lower()
                             for w in self.options.filter_words]
        self.threshold: float | None = None  # binarisation = "calibrated": set by `fit`

    @classmethod
    def options_for(cls, context: PipelineContext) -> SaaPlusOptions:
        """The settings in effect: the configured ones, with SAA+'s published prompts when asked for."""
        options = super().options_for(context)
        if options.published_prompts:
            options = dataclasses.replace(options, **published_options(context.dataset, context.group))
            cls.check_options(options)
        return options

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        """Against SAA+'s code: `SAA/model.py` (eval_SAA.py's box/text 0.1), its per-category settings where
        published, its timm Wide ResNet-50-2 saliency on BGR input, and its threshold-free output."""
        options = cls.read_options(context.options)
        if options.published_prompts and context.group is not None:
            options = cls.options_for(context)
        found = (unless_equal("box threshold", options.box_threshold, 0.10, "set by box_threshold; SAA+'s is 0.1")
                 + unless_equal("text threshold", options.text_threshold, 0.10,
                                "set by text_threshold; SAA+'s is 0.1"))
        found += cls._prompt_departures(context, options)
        if options.saliency == "sam_embedding":
            found.append(Departure("saliency features", "SAM's image embedding",
                                   "Wide ResNet-50-2 (timm) stages 1-3 at 256 x 256",
                                   'set by saliency = "sam_embedding": no extra weights; SAA+\'s is "wideresnet50"'))
        else:
            found += unless_equal("saliency weights", options.saliency_weights, "timm",
                                  'set by saliency_weights = "torchvision": torchvision\'s IMAGENET1K_V1 file '
                                  "(wide_resnet50_2-95faca4d.pth), not timm's default SAA+ loads "
                                  "(wide_resnet50_racm-8234f177.pth)")
        found += unless_equal("saliency top-n", options.saliency_top_n, 400, "set by saliency_top_n; SAA+ uses 400")
        found += unless_equal("saliency gain", options.saliency_gain, 3.0, "set by saliency_gain; SAA+ uses exp(3 x)")
        if options.colour_order == "rgb":
            found.append(Departure("colour order", "SAM and the saliency network see RGB",
                                   "they see the BGR array SAA+ is handed (cv2.imread); GroundingDINO sees RGB",
                                   'set by colour_order = "rgb": every model gets the colour order it was trained on'))
        if options.binarisation == "calibrated":
            found.append(Departure(
                "binarisation", f"anomaly map > the {options.calibration_quantile:g} quantile of its maximum on up to "
                f"{options.calibration_images} defect-free training images",
                "none: a continuous map, scored by AUROC and by F1 at the threshold best on the test set",
                "a gate needs a mask, and a threshold chosen on test labels would flatter it; set on defect-free "
                "training images, as padim's"))
        else:
            found.append(Departure(
                "binarisation", f"union of the top-{options.top_k} regions with confidence >= "
                f"{options.confidence_threshold:g}",
                "none: a continuous map, scored by AUROC and by F1 at the threshold best on the test set",
                'set by binarisation = "top_k_union": every region SAA+ puts on its map'))
        return found + super().departures(context)

    @classmethod
    def _prompt_departures(cls, context: PipelineContext, options: SaaPlusOptions) -> list[Departure]:
        """Prompts and property-prompt numbers: SAA+'s per category on MVTec AD, a reconstruction elsewhere."""
        dataset, word = context.dataset, options.object_prompt
        texts = ", ".join(f'"{t.format(prompt=context.prompt, object=word)}"' for t in options.anomaly_prompts)
        if word.strip():
            prompts = f'{texts}; object "{word}"; box area < {options.max_area_ratio:g} x the object\'s'
        else:
            prompts = f"{texts}; no object prompt; box area < {options.max_area_ratio:g} x the image"
        prompts += f"; top {options.top_k}"
        if dataset in PUBLISHED:
            if options.published_prompts:
                return []
            return [Departure("prompts", prompts,
                              "SAA+'s per-category prompts and property prompt (SAA/prompts/mvtec_parameters.py)",
                              "set published_prompts = true for SAA+'s own")]
        if options.published_prompts and dataset in STUDY_DATASETS:
            return [Departure("prompts", prompts, NOT_PUBLISHED,
                              f"fmtest's settings in SAA+'s form (saa_prompts.py): {STUDY_DATASETS[dataset].why}",
                              kind="unstated")]
        return [Departure("prompts", prompts, NOT_PUBLISHED,
                          "SAA+ publishes per-category settings for MVTec AD only; these are the configured ones",
                          kind="unstated")]

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        super().check_available(context)
        options = cls.read_options(context.options)  # a case's check: no group yet
        if options.saliency == "wideresnet50":
            registry.require(SALIENCY_WEIGHTS[options.saliency_weights], context.weights_dir)

    @classmethod
    def check_options(cls, options: SaaPlusOptions) -> None:
        require_unit_interval(cls.name, box_threshold=options.box_threshold, text_threshold=options.text_threshold,
                              calibration_quantile=options.calibration_quantile)
        require_choice(cls.name, "saliency", options.saliency, SALIENCY_SOURCES)
        require_choice(cls.name, "saliency_weights", options.saliency_weights, SALIENCY_WEIGHTS)
        require_choice(cls.name, "colour_order", options.colour_order, COLOUR_ORDERS)
        require_choice(cls.name, "binarisation", options.binarisation, BINARISATIONS)
        require_at_least_one(cls.name, calibration_images=options.calibration_images)
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
            return registry.combined_id(super().model_id, imagenet_cnn.checkpoint_id(
                SALIENCY_WEIGHTS[self.options.saliency_weights], self.context.weights_dir))
        return super().model_id

    @property
    def fingerprint(self) -> str:
        """Also keyed by the settings in effect: published prompts come from fmtest, not the config."""
        effective = json.dumps(dataclasses.asdict(self.options), sort_keys=True)
        return hashlib.sha256(f"{super().fingerprint}\n{effective}".encode()).hexdigest()[:16]

    @property
    def saliency_network(self) -> imagenet_cnn.ImageNetCnn:
        return imagenet_cnn.load_resnet(SALIENCY_WEIGHTS[self.options.saliency_weights], self.context.weights_dir,
                                        self.context.device)

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        """binarisation = "calibrated": the threshold from SAA+'s maps of up to `calibration_images` good images."""
        if self.options.binarisation != "calibrated":
            return
        good = train.filter(lambda ref: ref.label == OK)
        if not len(good):
            raise DataError(f'{self.name} with binarisation = "calibrated" sets its threshold on defect-free training '
                            f"images, and {self.context.dataset!r} has none; add some, or set binarisation = "
                            '"top_k_union"', self.context.dataset)
        n = min(len(good), self.options.calibration_images)
        drawn = np.sort(np.random.default_rng(self.options.calibration_seed).choice(len(good), n, replace=False))
        calibration = SampleSet([good.refs[i] for i in drawn])
        maxima = [float(region.anomaly_map().max()) for batch in calibration.batches(self.batch_size)
                  for region in self._regions(batch)]
        if not np.isfinite(maxima).all():
            raise DataError(f"{self.name}: SAA+'s anomaly map of a calibration image is not finite, so no threshold "
                            "can be set on it", self.context.dataset)
        self.threshold = float(np.quantile(maxima, self.options.calibration_quantile))

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        if self.options.binarisation == "top_k_union":
            return [region.union(self.options.confidence_threshold) for region in self._regions(samples)]
        if self.threshold is None:
            raise RuntimeError(f'{self.name}: predict() with binarisation = "calibrated" called before fit()')
        predictions = []
        for region in self._regions(samples):
            anomaly_map = region.anomaly_map()
            predictions.append(Prediction.from_mask(
                anomaly_map > self.threshold, score=float(anomaly_map.max()),
                score_map=anomaly_map / self.threshold if self.threshold > 0 else None))
        return predictions

    def refiner_inputs(self, samples: Sequence[Sample]) -> tuple[list[np.ndarray], list[str]]:
        """What SAM and the saliency network see, and SAM's embedding keys: RGB, or (`colour_order = "bgr"`) the
        colour images' channels reversed, under keys of their own (greyscale is alike both ways)."""
        images = [to_rgb_uint8(s.image) for s in samples]
        keys = [s.sha256 for s in samples]
        if self.options.colour_order == "bgr":
            colour = [s.image.ndim == 3 for s in samples]
            images = [np.ascontiguousarray(im[..., ::-1]) if c else im for im, c in zip(images, colour, strict=True)]
            keys = [f"{k}:bgr" if c else k for k, c in zip(keys, colour, strict=True)]
        self.engine.embed(images, keys)
        return images, keys

    def _regions(self, samples: Sequence[Sample]) -> list[SaaRegions]:
        """SAA+'s top-k regions of each sample: GroundingDINO on RGB, SAM and saliency on `refiner_inputs`."""
        rgb = [to_rgb_uint8(s.image) for s in samples]
        refiner_images, keys = self.refiner_inputs(samples)
        box_t, text_t = self.options.box_threshold, self.options.text_threshold
        precision = self.options.gdino_precision
        objects = (self.detector.detect(rgb, self.options.object_prompt, box_t, text_t, precision)
                   if self.options.object_prompt.strip() else [NO_DETECTIONS] * len(rgb))
        per_prompt = [self.detector.detect(rgb, p, box_t, text_t, precision) for p in self.prompts]
        return [self._regions_of_one(image, key, objects[i], [found[i] for found in per_prompt])
                for i, (image, key) in enumerate(zip(refiner_images, keys, strict=True))]

    def _regions_of_one(self, image: np.ndarray, key: str, objects: Detections,
                        candidates: list[Detections]) -> SaaRegions:
        hw = image.shape[:2]
        boxes, scores = self.filter_regions(objects, candidates, hw)
        if len(boxes) == 0:
            return SaaRegions(np.zeros((0, *hw), dtype=bool), np.zeros(0))
        masks, _ = self.engine.masks_from_boxes(image, key, boxes)
        confidence = self.confidence(masks, scores, self.saliency(image, key))
        order = np.argsort(-confidence, kind="stable")[: self.options.top_k]
        return SaaRegions(masks[order], confidence[order])

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


@dataclass(frozen=True)
class SaaRegions:
    """One image's top-k SAA+ regions, most confident first: masks (k, H, W) and their confidences (k,)."""

    masks: np.ndarray
    confidence: np.ndarray

    def anomaly_map(self) -> np.ndarray:
        """SAA+'s map (`confidence_prompting`): per pixel, the covering masks' confidences summed over 1 + their count."""
        covered = self.masks.sum(axis=0, dtype=np.float64)
        total = np.tensordot(self.confidence.astype(np.float64), self.masks.astype(np.float64), axes=1)
        return (total / (1.0 + covered)).astype(np.float32)

    def union(self, confidence_threshold: float) -> Prediction:
        """The regions at or above the threshold as one mask; the image score is the best confidence (0 without)."""
        keep = self.confidence >= confidence_threshold
        mask = self.masks[keep].any(axis=0) if keep.any() else np.zeros(self.masks.shape[1:], dtype=bool)
        return Prediction.from_mask(mask, score=float(self.confidence.max()) if len(self.confidence) else 0.0)
