"""SAM + CLIP (Text2Seg's "SAM + CLIP" pipeline): SAM proposes every object, CLIP keeps those the prompt names.

SAM's automatic mask generator (32 x 32 point grid and its default quality filters, as Text2Seg runs
it) proposes masks. Each mask becomes a crop: its bounding box, with every pixel outside the mask
set to black (Text2Seg's cut-out, so CLIP sees the object, not its surroundings). CLIP ViT-B/16 embeds
all crops of a batch in one pass, and each crop is scored against the prompt:

- `softmax_over = "texts"` (default, the contract of this project): softmax over the prompt and the
  `negative_texts` ("background"), at CLIP's logit scale 100; the prompt's probability is the score.
  A crop passes when it is more likely the prompt than anything else (`score_threshold` 0.5).
- `softmax_over = "masks"`: Text2Seg's retrieval form, a softmax of the prompt similarity across the
  image's crops; Text2Seg keeps crops above 0.05 (set `score_threshold = 0.05` to reproduce it).
  Some crop always wins there, so a defect-free image is rarely left empty.

The union of the passing masks is the prediction (none passing, or no proposals: an empty mask, OK).
The image score is the best crop's probability. Greyscale images are replicated to RGB first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models import clip, sam_variants
from fmtest.models.registry import combined_id
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.gdino_sam import read_options

if TYPE_CHECKING:
    from fmtest.models.sam import SamEngine

SOFTMAX_AXES = ("texts", "masks")
# SamAutomaticMaskGenerator settings a suite may change; Text2Seg sets only points_per_side.
GENERATOR_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")


def mask_crop(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The mask's bounding box cut from the image with the pixels outside the mask black; None if empty."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return image_rgb[box] * mask[box][:, :, None].astype(np.uint8)


def prompt_probabilities(crop_features: torch.Tensor, text_features: torch.Tensor, softmax_over: str) -> np.ndarray:
    """(N,) probability that each crop shows text 0 (the prompt); unit (N, D) crops, unit (T, D) texts."""
    logits = clip.LOGIT_SCALE * crop_features @ text_features.T
    if softmax_over == "texts":
        probs = logits.softmax(dim=1)[:, 0]
    else:
        probs = logits[:, 0].softmax(dim=0)
    return probs.float().cpu().numpy()


class SamClip(Pipeline):
    name = "sam_clip"
    task = "segmentation"
    batch_size = 4
    DEFAULTS: Mapping[str, object] = {
        "score_threshold": 0.5, "softmax_over": "texts", "negative_texts": ("background",),
        "points_per_side": 32, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95, "box_nms_thresh": 0.7,
        "clip_batch_size": 32, "sam_variant": "vit_h",
    }

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options = self.read_options(context)

    @classmethod
    def read_options(cls, context: PipelineContext) -> dict[str, object]:
        options = read_options(context, cls.name, cls.DEFAULTS)
        if options["softmax_over"] not in SOFTMAX_AXES:
            raise ConfigError(f"[pipelines.{cls.name}]: softmax_over must be one of {', '.join(SOFTMAX_AXES)}, "
                              f"got {options['softmax_over']!r}")
        if not 0.0 <= options["score_threshold"] <= 1.0:
            raise ConfigError(f"[pipelines.{cls.name}]: score_threshold must be in [0, 1], "
                              f"got {options['score_threshold']}")
        if options["softmax_over"] == "texts" and not options["negative_texts"]:
            raise ConfigError(f"[pipelines.{cls.name}]: softmax_over = \"texts\" needs at least one negative_texts")
        if options["points_per_side"] < 1 or options["clip_batch_size"] < 1:
            raise ConfigError(f"[pipelines.{cls.name}]: points_per_side and clip_batch_size must be >= 1")
        return options

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        options = cls.read_options(context)
        sam_variants.require(context.weights_dir, str(options["sam_variant"]))
        clip.require_clip(context.weights_dir)

    @property
    def engine(self) -> SamEngine:
        from fmtest.models.sam import sam_engine  # segment_anything loads when a model is built, not at a check

        return sam_engine(self.context.weights_dir, self.context.device, str(self.options["sam_variant"]))

    @property
    def encoder(self) -> clip.ClipEncoder:
        return clip.clip_encoder(self.context.weights_dir, self.context.device)

    @property
    def model_id(self) -> str:
        return combined_id(self.engine.model_id, self.encoder.model_id)

    @cached_property
    def text_features(self) -> torch.Tensor:
        """Prompt first, then the negatives, as plain texts (Text2Seg uses no prompt ensemble here)."""
        return self.encoder.encode_texts([self.context.prompt, *self.options["negative_texts"]])

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        images = [to_rgb_uint8(s.image) for s in samples]
        keys = [s.sha256 for s in samples]
        engine = self.engine
        engine.embed(images, keys)
        generator = {k: self.options[k] for k in GENERATOR_OPTIONS}
        proposals = []  # per image: the non-empty masks and their crops
        for image, key in zip(images, keys, strict=True):
            masks, crops = [], []
            for record in engine.automatic_masks(image, key, **generator):
                crop = mask_crop(image, record["segmentation"])
                if crop is not None:
                    masks.append(record["segmentation"])
                    crops.append(crop)
            proposals.append((masks, crops))
        all_crops = [crop for _, crops in proposals for crop in crops]
        features = self.encoder.encode_images(all_crops, batch_size=int(self.options["clip_batch_size"]))
        predictions, start = [], 0
        for image, (masks, crops) in zip(images, proposals, strict=True):
            union = np.zeros(image.shape[:2], dtype=bool)
            score = 0.0
            if masks:
                probs = prompt_probabilities(features[start:start + len(crops)], self.text_features,
                                             str(self.options["softmax_over"]))
                start += len(crops)
                for mask, prob in zip(masks, probs, strict=True):
                    if prob > self.options["score_threshold"]:
                        union |= mask
                score = float(probs.max())
            predictions.append(Prediction.from_mask(union, score=score))
        return predictions
