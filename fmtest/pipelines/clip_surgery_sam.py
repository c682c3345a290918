"""CLIP Surgery + SAM (Text2Seg's "CLIPS" pipeline, after the CLIP Surgery paper's SAM demo).

CS-ViT-B/16 turns the prompt into a patch similarity map with the redundant feature removed (the
prompt-ensemble embedding of the empty string, as Text2Seg does; `redundant_texts` may name others,
whose mean embedding is used). The map is smoothed by bilinear downsampling (factor 2) and min-max
normalized; the patches at or above `point_threshold` (0.8) become positive SAM points, as many of
the lowest patches become negative points (at most half the patches each), placed at patch centres
in original image coordinates. SAM answers the point set with a single mask (`multimask_output=False`,
as Text2Seg), which is the prediction. No point (a flat map) gives an empty mask.

Note the threshold is relative to the image's own map: the top patch always passes, so a defect-free
image still gets points and usually a mask; the study saw this segment sub-component geometry. The
image score is the largest raw surgery similarity (a continuous anomaly score for risk figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError
from fmtest.models.clip_surgery import SURGERY_DEPTH, ClipSurgery
from fmtest.pipelines.base import Prediction
from fmtest.pipelines.options import require_at_least_one, require_unit_interval, table
from fmtest.pipelines.sam_base import ClipSamPipeline, SamOptions


def similarity_points(grid_similarity: torch.Tensor, image_hw: tuple[int, int], threshold: float = 0.8,
                      downsample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """SAM point prompts from one (gh, gw) similarity grid: ((2n, 2) x/y points, (2n,) labels 1 then 0).

    n = min(#patches >= threshold after min-max normalization, #patches // 2); empty for a flat map.
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


class ClipSurgerySam(ClipSamPipeline):
    name = "clip_surgery_sam"
    options_type = ClipSurgerySamOptions

    @classmethod
    def check_options(cls, options: ClipSurgerySamOptions) -> None:
        require_unit_interval(cls.name, point_threshold=options.point_threshold)
        require_at_least_one(cls.name, downsample=options.downsample, surgery_depth=options.surgery_depth)
        if not options.redundant_texts:
            raise ConfigError('redundant_texts needs at least one text ("" is the paper\'s)', table(cls.name))

    @cached_property
    def surgery(self) -> ClipSurgery:
        return ClipSurgery(self.encoder, depth=self.options.surgery_depth)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        images, keys = self.embedded_images(samples)
        similarity = self.surgery.patch_similarity(images, [self.context.prompt],
                                                   redundant_texts=list(self.options.redundant_texts),
                                                   batch_size=self.batch_size)
        engine = self.engine
        predictions = []
        for image, key, grid in zip(images, keys, similarity[:, 0], strict=True):
            points, labels = similarity_points(grid, image.shape[:2], self.options.point_threshold,
                                               self.options.downsample)
            if not self.options.negative_points:
                points, labels = points[labels == 1], labels[labels == 1]
            mask = np.zeros(image.shape[:2], dtype=bool)
            if len(points):
                masks, _ = engine.masks_from_points(image, key, points, labels)
                mask = masks[0]
            predictions.append(Prediction.from_mask(mask, score=float(grid.max())))
        return predictions
