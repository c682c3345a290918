"""CLIP Surgery + SAM (Text2Seg's "CLIPS" pipeline, after the CLIP Surgery paper's SAM demo).

CS-ViT-B/16 turns the prompt into a patch similarity map with the redundant feature removed (the
prompt-ensemble embedding of the empty string, as Text2Seg does; `redundant_texts` may name others,
whose mean embedding is used). The map is smoothed by bilinear downsampling (factor 2) and min-max
normalized; the patches at or above `point_threshold` (0.8) become positive SAM points, as many of
the lowest patches become negative points (at most half the patches each), placed at patch centres
in original image coordinates. SAM answers the point set with a single mask (`multimask_output=False`,
as Text2Seg), which is the prediction. No point (a flat map) gives an empty mask.

Text2Seg's code (`predict_CLIPS`, text2seg/text2seg.py, which the study ran) differs from the
CLIP Surgery paper's definitions in three places; each is an option whose Text2Seg value the study
preset sets:
- `clip_input = "text2seg"` (default "clip"): CLIP sees GroundingDINO's resized, ImageNet-normalised
  tensor normalised again with CLIP's mean/std (`fmtest.models.clip_surgery.text2seg_clip_input`);
- `token_norm = "across_tokens"` (default "per_token"): tokens divided by their norm along the token
  axis instead of each token by its own;
- `point_coords = "integer"` (default "exact"): CLIP Surgery's `similarity_map_to_points` truncates
  each point to whole pixels (computed in float32, as its torch code does).

Note the threshold is relative to the image's own map: the top patch always passes, so a defect-free
image still gets points and usually a mask; the study saw this segment sub-component geometry. The
image score is the largest raw surgery similarity (a continuous anomaly score for risk figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fmtest.data.departures import Departure, unless_equal
from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models.clip_surgery import (
    CLIP_INPUTS,
    SURGERY_DEPTH,
    TOKEN_NORMS,
    ClipSurgery,
)
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
F = lazy_module("torch.nn.functional")

POINT_COORDS = ("exact", "integer")


def similarity_points(grid_similarity: torch.Tensor, image_hw: tuple[int, int], threshold: float = 0.8,
                      downsample: int = 2, integer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """SAM point prompts from one (gh, gw) similarity grid: ((2n, 2) x/y points, (2n,) labels 1 then 0).

    n = min(#patches >= threshold after min-max normalization, #patches // 2); empty for a flat map.
    `integer`: each coordinate truncated to a whole pixel after float32 arithmetic, as CLIP Surgery's
    `similarity_map_to_points` does.
    """
    gh, gw = grid_similarity.shape
    h, w = max(gh // downsample, 1), max(gw // downsample, 1)
    smooth = F.interpolate(grid_similarity[None, None].float(), size=(h, w), mode="bilinear",
                           align_corners=False).flatten()
    span = smooth.max() - smooth.min()
    if not torch.isfinite(span) or span <= 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    normalized = (smooth - smooth.min()) / span
    n = min(int((normalized >= threshold).sum()), normalized.numel() // 2)
    order = torch.argsort(normalized, stable=True).cpu().numpy()
    chosen = np.concatenate([order[len(order) - n:], order[:n]])
    height, width = image_hw
    if integer:
        x = np.floor(np.minimum((chosen % w + 0.5).astype(np.float32) * np.float32(width / w), width - 1))
        y = np.floor(np.minimum((chosen // w + 0.5).astype(np.float32) * np.float32(height / h), height - 1))
    else:
        x = np.minimum((chosen % w + 0.5) * width / w, width - 1)
        y = np.minimum((chosen // w + 0.5) * height / h, height - 1)
    labels = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    return np.stack([x, y], axis=1), labels


@dataclass(frozen=True)
class ClipSurgerySamOptions(SamOptions):
    """`[pipelines.clip_surgery_sam]`, with the paper's defaults."""

    point_threshold: float = 0.8
    downsample: int = 2
    redundant_texts: tuple[str, ...] = ("",)
    negative_points: bool = True
    surgery_depth: int = SURGERY_DEPTH
    clip_checkpoint: str | None = None
    clip_input: str = "clip"
    token_norm: str = "per_token"
    point_coords: str = "exact"


class ClipSurgerySam(ClipSamPipeline):
    name = "clip_surgery_sam"
    options_type = ClipSurgerySamOptions
    study_source = "Text2Seg `Text2Seg.predict_CLIPS` (text2seg/text2seg.py) on CLIP Surgery's clip/clip.py"

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        o = cls.read_options(context.options)
        found = unless_equal("CLIP input", o.clip_input, "text2seg",
                             'set by clip_input: "clip" gives CLIP its own pre-processing, where Text2Seg normalises '
                             "GroundingDINO's ImageNet-normalised tensor a second time")
        found += unless_equal("token norm", o.token_norm, "across_tokens",
                              'set by token_norm: "per_token" takes cosine similarities as the CLIP Surgery paper '
                              "defines them; Text2Seg divides by the norm along the token axis")
        found += unless_equal("point coordinates", o.point_coords, "integer",
                              'set by point_coords: "exact" prompts SAM at the patch centres; CLIP Surgery\'s code '
                              "truncates them to whole pixels")
        found += unless_equal("point threshold", o.point_threshold, 0.8, "set by point_threshold; Text2Seg's t=0.8")
        found += unless_equal("map downsampling", o.downsample, 2, "set by downsample; CLIP Surgery's default 2")
        found += unless_equal("redundant text", o.redundant_texts, ("",),
                              "set by redundant_texts; Text2Seg subtracts the empty string's ensemble")
        if not o.negative_points:
            found.append(Departure("negative points", "none", "as many as positive ones",
                                   "set by negative_points = false"))
        found += unless_equal("surgery depth", o.surgery_depth, SURGERY_DEPTH,
                              "set by surgery_depth; CS-ViT-B/16 has the dual path in its last 6 blocks")
        return found + super().departures(context)

    @classmethod
    def check_options(cls, options: ClipSurgerySamOptions) -> None:
        require_choice(cls.name, "clip_input", options.clip_input, CLIP_INPUTS)
        require_choice(cls.name, "token_norm", options.token_norm, TOKEN_NORMS)
        require_choice(cls.name, "point_coords", options.point_coords, POINT_COORDS)
        require_unit_interval(cls.name, point_threshold=options.point_threshold)
        require_at_least_one(cls.name, downsample=options.downsample, surgery_depth=options.surgery_depth)
        if not options.redundant_texts:
            raise ConfigError('redundant_texts needs at least one text ("" is the paper\'s)', table(cls.name))

    @cached_property
    def surgery(self) -> ClipSurgery:
        return ClipSurgery(self.encoder, depth=self.options.surgery_depth)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        images, keys = self.embedded_images(samples)
        o = self.options
        similarity = self.surgery.patch_similarity(images, [self.context.prompt],
                                                   redundant_texts=list(o.redundant_texts), batch_size=self.batch_size,
                                                   clip_input=o.clip_input, token_norm=o.token_norm)
        engine = self.engine
        predictions = []
        for image, key, grid in zip(images, keys, similarity[:, 0], strict=True):
            points, labels = similarity_points(grid, image.shape[:2], o.point_threshold, o.downsample,
                                               integer=o.point_coords == "integer")
            if not self.options.negative_points:
                points, labels = points[labels == 1], labels[labels == 1]
            mask = np.zeros(image.shape[:2], dtype=bool)
            if len(points):
                masks, _ = engine.masks_from_points(image, key, points, labels)
                mask = masks[0]
            predictions.append(Prediction.from_mask(mask, score=float(grid.max())))
        return predictions
