"""SAM + CLIP (Text2Seg's "SAM + CLIP" pipeline): SAM proposes every object, CLIP keeps those the prompt names.

SAM's automatic mask generator (its default 32 x 32 point grid and quality filters; Text2Seg's only
published call sets `points_per_side = 10`, as suites/study.toml does) proposes masks. Each mask
becomes a crop with every pixel outside the mask set to black (Text2Seg's cut-out, so CLIP sees the
object, not its surroundings):

- `crop = "mask_box"` (default): the mask's bounding box, whole.
- `crop = "text2seg"`: what Text2Seg's `segment_image(...).crop(bbox)` (text2seg/utils.py) hands CLIP.
  It pastes the cut-out on a canvas made with `Image.new("RGB", image.shape[:2])`, i.e. width and
  height swapped, so only the top-left min(H, W) square of a non-square image survives; the crop
  box is SAM's XYWH bbox as [x, y, x + w, y + h], whose right and bottom edges PIL leaves out. A
  mask one pixel wide, on which Text2Seg fails (an empty crop), gets a one-pixel crop here.

CLIP ViT-B/16 embeds all crops of a batch in one pass, and each crop is scored against the prompt:

- `softmax_over = "texts"` (default, the contract of this project): softmax over the prompt and the
  `negative_texts` ("background"), at CLIP's logit scale 100; the prompt's probability is the score.
  A crop passes when it is more likely the prompt than anything else (`score_threshold` 0.5).
- `softmax_over = "masks"`: Text2Seg's retrieval form (`retriev`), a softmax of the x100 prompt
  similarities across all of the image's crops; Text2Seg keeps crops above 0.05 (set
  `score_threshold = 0.05` to reproduce it).
  Some crop always wins there, so a defect-free image is rarely left empty.

The union of the passing masks is the prediction (none passing, or no proposals: an empty mask, OK).
The image score is the best crop's probability. Greyscale images are replicated to RGB first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np

from fmtest.data.departures import Departure, unless_equal
from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models import clip
from fmtest.pipelines.base import PipelineContext, Prediction
from fmtest.pipelines.options import (
    require_at_least_one,
    require_choice,
    require_unit_interval,
    table,
)
from fmtest.pipelines.sam_base import ClipSamPipeline, SamOptions
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")

SOFTMAX_AXES = ("texts", "masks")
CROPS = ("mask_box", "text2seg")


def mask_crop(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The mask's bounding box cut from the image with the pixels outside the mask black; None if empty."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return image_rgb[box] * mask[box][:, :, None].astype(np.uint8)


def text2seg_crop(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The crop Text2Seg's `segment_image(image, mask).crop(convert_box_xywh_to_xyxy(bbox))` makes; None if empty.

    Its canvas is (height, width)-swapped, so only the cut-out's top-left min(H, W) square is on it
    and the rest of the crop is black; SAM's bbox spans min..max, and PIL's crop leaves the max row
    and column out (kept at one pixel where that would leave nothing).
    """
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    top, left = int(rows.min()), int(cols.min())
    height, width = max(int(rows.max()) - top, 1), max(int(cols.max()) - left, 1)
    side = min(mask.shape)
    crop = np.zeros((height, width, 3), dtype=np.uint8)
    kept = (slice(top, min(top + height, side)), slice(left, min(left + width, side)))
    cut = image_rgb[kept] * mask[kept][:, :, None].astype(np.uint8)
    crop[: cut.shape[0], : cut.shape[1]] = cut
    return crop


def prompt_probabilities(crop_features: torch.Tensor, text_features: torch.Tensor, softmax_over: str) -> np.ndarray:
    """(N,) probability that each crop shows text 0 (the prompt); unit (N, D) crops, unit (T, D) texts."""
    logits = clip.LOGIT_SCALE * crop_features @ text_features.T
    if softmax_over == "texts":
        probs = logits.softmax(dim=1)[:, 0]
    else:
        probs = logits[:, 0].softmax(dim=0)
    return probs.float().cpu().numpy()


@dataclass(frozen=True)
class GeneratorOptions:
    """SamAutomaticMaskGenerator settings a suite may change; Text2Seg sets only points_per_side."""

    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7


@dataclass(frozen=True)
class SamClipOptions(GeneratorOptions, SamOptions):
    """`[pipelines.sam_clip]`."""

    score_threshold: float = 0.5
    softmax_over: str = "texts"
    negative_texts: tuple[str, ...] = ("background",)
    clip_batch_size: int = 32
    clip_checkpoint: str | None = None
    crop: str = "mask_box"


TEXT2SEG_POINTS_PER_SIDE = 10  # the argument of Text2Seg's only published predict_CLIP call


class SamClip(ClipSamPipeline):
    name = "sam_clip"
    options_type = SamClipOptions
    study_source = "Text2Seg `Text2Seg.predict_CLIP` and `retriev` (text2seg/text2seg.py, text2seg/utils.py)"

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        options = cls.read_options(context.options)
        found = unless_equal("crop scoring", options.softmax_over, "masks",
                             'set by softmax_over: "texts" asks of each crop whether it is the prompt rather than '
                             "a negative text; Text2Seg's retriev ranks an image's crops against each other")
        found += unless_equal("crop threshold", options.score_threshold, 0.05,
                              "set by score_threshold; Text2Seg keeps crops scoring above 0.05")
        found.append(Departure("point grid", f"points_per_side = {options.points_per_side}",
                               f"an argument of predict_CLIP; Text2Seg's only published call passes "
                               f"{TEXT2SEG_POINTS_PER_SIDE}, the study does not say",
                               "set by points_per_side", kind="unstated"))
        defaults = GeneratorOptions()
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            found += unless_equal(f"SAM {name}", getattr(options, name), getattr(defaults, name),
                                  f"set by {name}; Text2Seg keeps SamAutomaticMaskGenerator's default")
        found += unless_equal("crop", options.crop, "text2seg",
                              'set by crop: "mask_box" shows CLIP the whole mask, where Text2Seg\'s swapped '
                              "canvas blacks out what lies beyond the shorter side of a non-square image")
        return found + super().departures(context)

    @classmethod
    def check_options(cls, options: SamClipOptions) -> None:
        require_choice(cls.name, "crop", options.crop, CROPS)
        require_choice(cls.name, "softmax_over", options.softmax_over, SOFTMAX_AXES)
        require_unit_interval(cls.name, score_threshold=options.score_threshold)
        if options.softmax_over == "texts" and not options.negative_texts:
            raise ConfigError('softmax_over = "texts" needs at least one negative_texts', table(cls.name))
        require_at_least_one(cls.name, points_per_side=options.points_per_side,
                             clip_batch_size=options.clip_batch_size)

    @cached_property
    def text_features(self) -> torch.Tensor:
        """Prompt first, then the negatives, as plain texts (Text2Seg uses no prompt ensemble here)."""
        return self.encoder.encode_texts([self.context.prompt, *self.options.negative_texts])

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        images, keys = self.embedded_images(samples)
        engine = self.engine
        generator = {f.name: getattr(self.options, f.name) for f in fields(GeneratorOptions)}
        cut = text2seg_crop if self.options.crop == "text2seg" else mask_crop
        proposals = []  # per image: the non-empty masks and their crops
        for image, key in zip(images, keys, strict=True):
            masks, crops = [], []
            for record in engine.automatic_masks(image, key, **generator):
                crop = cut(image, record["segmentation"])
                if crop is not None:
                    masks.append(record["segmentation"])
                    crops.append(crop)
            proposals.append((masks, crops))
        all_crops = [crop for _, crops in proposals for crop in crops]
        features = self.encoder.encode_images(all_crops, batch_size=self.options.clip_batch_size)
        predictions, start = [], 0
        for image, (masks, crops) in zip(images, proposals, strict=True):
            union = np.zeros(image.shape[:2], dtype=bool)
            score = 0.0
            if masks:
                probs = prompt_probabilities(features[start:start + len(crops)], self.text_features,
                                             self.options.softmax_over)
                start += len(crops)
                for mask, prob in zip(masks, probs, strict=True):
                    if prob > self.options.score_threshold:
                        union |= mask
                score = float(probs.max())
            predictions.append(Prediction.from_mask(union, score=score))
        return predictions
