"""Segment Anything: the official architectures, checkpoint loading, and one shared engine per process.

Every SAM pipeline (gdino_sam, sam_clip, clip_surgery_sam, saa_plus) asks `sam_engine(...)` for the
engine, so the model is loaded once and each image is encoded once: the engine keeps an LRU of image
embeddings keyed by how the encoder ran (`EncoderSettings.embedding_key`) and the caller's image key
(the Sample's sha256), bounded in MiB, and restores them into the upstream `SamPredictor` instead of
re-running the ViT encoder. `engine.configured(settings)` gives a view of the same engine (same
model, same cache) whose encoder runs with other settings (bf16, SDPA attention, batch size,
torch.compile; see `fmtest.models.sam_encoder`).

The registry's official file is used unless a pipeline names its own file (`sam_checkpoint`): any state
dict of a SAM_VARIANTS architecture, fine-tuned or not, whose variant is read from its tensor shapes and
whose sha256 becomes the model id (`registry.identify`).

Tests inject a random-weight model without touching any file:

    with registry.inject("sam_vit_h", SamEngine(tests.tiny_models.build_tiny_sam(), model_id="tiny-random")):
        ...  # sam_engine(...) returns this engine; check_available passes

A Sam model built from a config not listed in `SAM_VARIANTS` can be registered there together with
a `registry.WEIGHTS` entry named `sam_<variant>`; that entry makes the pipelines accept the variant
(`fmtest.models.sam_variants`, which checks for checkpoints without importing segment_anything),
and `sam_engine` then loads it through the same path.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.build_sam import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l
from segment_anything.modeling import Sam

from fmtest.errors import DataError
from fmtest.models import registry
from fmtest.models.precision import autocast
from fmtest.models.sam_encoder import EncoderSettings, build_encoder
from fmtest.models.sam_variants import weight_key

REFERENCE_ENCODER = EncoderSettings()  # segment_anything's own encoder path, float32

# Official configurations, built by the upstream package (random init; weights loaded by us).
SAM_VARIANTS: dict[str, Callable[[], Sam]] = {"vit_h": build_sam_vit_h, "vit_l": build_sam_vit_l,
                                              "vit_b": build_sam_vit_b}


def load_sam_weights(sam: Sam, checkpoint: Path) -> Sam:
    """Load a SAM state-dict file into `sam` with errors that name the file."""
    registry.load_into(sam, registry.load_state_dict(checkpoint), checkpoint)
    return sam.eval()


def build_sam(variant: str, checkpoint: Path | None = None) -> Sam:
    """An official SAM ("vit_h", "vit_l", "vit_b"); random weights unless `checkpoint` is given."""
    try:
        builder = SAM_VARIANTS[variant]
    except KeyError:
        raise DataError(f"unknown SAM variant {variant!r}; known: {', '.join(SAM_VARIANTS)}") from None
    sam = builder().eval()
    return load_sam_weights(sam, checkpoint) if checkpoint is not None else sam


@dataclass(frozen=True)
class _Embedding:
    features: torch.Tensor  # (1, 256, E, E) float32 on the engine's device
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


@dataclass
class _EngineState:
    """What every view of one engine shares: the embedding LRU, the built encoders, the count of encodings."""

    cache: OrderedDict[tuple[str, str], _Embedding] = field(default_factory=OrderedDict)
    cached_bytes: int = 0
    encoders: dict[str, torch.nn.Module] = field(default_factory=dict)
    images_encoded: int = 0


def _check_rgb_uint8(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"SAM needs an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}; "
                        "convert with fmtest.data.io.to_rgb_uint8")


class SamEngine:
    """One Sam model + an LRU of image embeddings keyed by (encoder settings, image sha256), shared by
    every SAM pipeline; `cache_mib` bounds the embeddings kept (a ViT-H embedding is 4 MiB)."""

    def __init__(self, sam: Sam, model_id: str, device: str = "cpu", cache_mib: float = 2048,
                 settings: EncoderSettings = REFERENCE_ENCODER):
        self.sam = sam.to(device).eval()
        self.model_id = model_id
        self.device = device
        self.cache_mib = cache_mib
        self.settings = settings
        self._state = _EngineState()
        self._predictor = SamPredictor(self.sam)

    def configured(self, settings: EncoderSettings) -> SamEngine:
        """This engine with its encoder run under `settings`: same model, embedding cache and counts."""
        if settings == self.settings:
            return self
        view = copy.copy(self)
        view.settings = settings
        return view

    @property
    def images_encoded(self) -> int:
        """Images that went through the ViT encoder, all views of this engine together."""
        return self._state.images_encoded

    def clear_embeddings(self) -> None:
        """Drop every cached embedding (all views): frees their memory; later calls encode again."""
        self._state.cache.clear()
        self._state.cached_bytes = 0

    # --- embeddings -----------------------------------------------------------------------------

    def _cache_key(self, key: str) -> tuple[str, str]:
        return self.settings.embedding_key, key

    def _encoder(self) -> torch.nn.Module:
        encoders = self._state.encoders
        name = self.settings.embedding_key
        if name not in encoders:
            encoders[name] = build_encoder(self.sam.image_encoder, self.settings)
        return encoders[name]

    @torch.no_grad()
    def embed(self, images_rgb: Sequence[np.ndarray], keys: Sequence[str]) -> None:
        """Encode the images not yet cached, `settings.batch_size` at a time through the ViT encoder."""
        todo = [(img, k) for img, k in zip(images_rgb, keys, strict=True) if self._cache_key(k) not in self._state.cache]
        todo = list({k: (img, k) for img, k in todo}.values())  # the same image twice is encoded once
        transform = self._predictor.transform
        batch_size = self.settings.batch_size
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            inputs, sizes = [], []
            for image, _ in chunk:
                _check_rgb_uint8(image)
                resized = torch.as_tensor(transform.apply_image(image), device=self.device)
                resized = resized.permute(2, 0, 1).contiguous()[None]
                sizes.append((tuple(image.shape[:2]), tuple(resized.shape[-2:])))
                inputs.append(self.sam.preprocess(resized))
            with autocast(self.device, self.settings.precision):
                features = self._encoder()(torch.cat(inputs)).float()
            self._state.images_encoded += len(chunk)
            for (_, key), feat, (original, input_size) in zip(chunk, features, sizes, strict=True):
                self._store(self._cache_key(key), _Embedding(feat[None].clone(), original, input_size))

    def _store(self, cache_key: tuple[str, str], embedding: _Embedding) -> None:
        state = self._state
        if cache_key in state.cache:
            state.cached_bytes -= state.cache[cache_key].nbytes
        state.cache[cache_key] = embedding
        state.cache.move_to_end(cache_key)
        state.cached_bytes += embedding.nbytes
        while state.cached_bytes > self.cache_mib * 2**20 and len(state.cache) > 1:
            _, evicted = state.cache.popitem(last=False)
            state.cached_bytes -= evicted.nbytes

    def _embedding(self, image_rgb: np.ndarray, key: str) -> _Embedding:
        cache_key = self._cache_key(key)
        if cache_key not in self._state.cache:
            self.embed([image_rgb], [key])
        self._state.cache.move_to_end(cache_key)
        return self._state.cache[cache_key]

    def _load(self, predictor: SamPredictor, image_rgb: np.ndarray, key: str) -> SamPredictor:
        emb = self._embedding(image_rgb, key)
        predictor.reset_image()
        predictor.features = emb.features
        predictor.original_size = emb.original_size
        predictor.input_size = emb.input_size
        predictor.is_image_set = True
        return predictor

    def image_embedding(self, image_rgb: np.ndarray, key: str) -> torch.Tensor:
        """(1, 256, E, E) encoder output; E = 64 for the official 1024-pixel models."""
        return self._embedding(image_rgb, key).features

    def predictor(self, image_rgb: np.ndarray, key: str) -> SamPredictor:
        """The upstream predictor with this image set; the encoder runs only on a cache miss."""
        return self._load(self._predictor, image_rgb, key)

    # --- prompts -> masks -------------------------------------------------------------------------

    def masks_from_boxes(self, image_rgb: np.ndarray, key: str,
                         boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mask per box, exactly as SamPredictor.predict(box=..., multimask_output=False), one box at a time,
        as SAA+ decodes them (a batched decoder call rounds differently and flips pixels whose logit is near
        zero; `masks_from_boxes_batched` is the batched call Text2Seg makes)."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        h, w = image_rgb.shape[:2]
        if len(boxes) == 0:
            return np.zeros((0, h, w), dtype=bool), np.zeros(0, dtype=np.float32)
        predictor = self.predictor(image_rgb, key)
        masks = np.empty((len(boxes), h, w), dtype=bool)
        scores = np.empty(len(boxes), dtype=np.float32)
        for i, box in enumerate(boxes):
            m, s, _ = predictor.predict(box=box, multimask_output=False)
            masks[i], scores[i] = m[0], s[0]
        return masks, scores

    def masks_from_boxes_batched(self, image_rgb: np.ndarray, key: str,
                                 boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mask per box from one decoder call with every box, exactly as Text2Seg and Grounded-SAM call
        `SamPredictor.predict_torch(boxes=..., multimask_output=False)` (float32 boxes). The batch is the image's
        own boxes, so the masks are a function of the image alone, whatever else the run does."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        h, w = image_rgb.shape[:2]
        if len(boxes) == 0:
            return np.zeros((0, h, w), dtype=bool), np.zeros(0, dtype=np.float32)
        predictor = self.predictor(image_rgb, key)
        transformed = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, device=self.device), (h, w))
        with torch.inference_mode():
            masks, scores, _ = predictor.predict_torch(point_coords=None, point_labels=None, boxes=transformed,
                                                       multimask_output=False)
        return masks[:, 0].cpu().numpy().astype(bool), scores[:, 0].float().cpu().numpy()

    def masks_from_points(self, image_rgb: np.ndarray, key: str, points_xy: np.ndarray,
                          point_labels: np.ndarray, multimask: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Masks for one prompt made of several points (label 1 foreground, 0 background).

        (1,H,W) with `multimask=False`, SAM's three candidates (3,H,W) otherwise; plus their scores.
        """
        h, w = image_rgb.shape[:2]
        points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        if len(points) == 0:
            return np.zeros((0, h, w), dtype=bool), np.zeros(0, dtype=np.float32)
        predictor = self.predictor(image_rgb, key)
        masks, scores, _ = predictor.predict(point_coords=points, point_labels=np.asarray(point_labels),
                                             multimask_output=multimask)
        return masks.astype(bool), scores.astype(np.float32)

    def automatic_masks(self, image_rgb: np.ndarray, key: str, **generator_options) -> list[dict]:
        """SamAutomaticMaskGenerator records for the image, reusing the cached whole-image embedding."""
        _check_rgb_uint8(image_rgb)
        generator = _EngineMaskGenerator(self, image_rgb, key, **generator_options)
        return generator.generate(image_rgb)


class _KeyedPredictor(SamPredictor):
    """A SamPredictor whose set_image reads the engine's embedding cache.

    The automatic generator calls set_image once per crop; the full-image crop maps to the caller's
    key (so the embedding is shared with other pipelines), other crops to a key derived from it.
    """

    def __init__(self, engine: SamEngine, image_rgb: np.ndarray, key: str):
        super().__init__(engine.sam)
        self._engine, self._image, self._key = engine, image_rgb, key

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if image_format != "RGB":
            image = image[..., ::-1]
        if image.shape == self._image.shape and np.array_equal(image, self._image):
            key = self._key
        else:
            key = f"{self._key}/crop/{hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]}"
        self._engine._load(self, np.ascontiguousarray(image), key)


class _EngineMaskGenerator(SamAutomaticMaskGenerator):
    def __init__(self, engine: SamEngine, image_rgb: np.ndarray, key: str, **options):
        super().__init__(engine.sam, **options)
        self.predictor = _KeyedPredictor(engine, image_rgb, key)


# --- the process-wide engine -----------------------------------------------------------------------


@lru_cache(maxsize=8)
def _parameter_shapes(builder: Callable[[], Sam]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a builder's state dict, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in builder().state_dict().items()}


def infer_variant(state: dict[str, torch.Tensor], path: Path) -> str:
    """The SAM_VARIANTS entry whose parameter names and shapes the state dict has exactly.

    The candidates are built on the meta device (no memory, a fraction of a second for ViT-H), so any
    variant registered in SAM_VARIANTS is recognised the same way as the official ones.
    """
    shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
    differences = {}
    for variant, builder in SAM_VARIANTS.items():
        expected = _parameter_shapes(builder)
        if expected == shapes:
            return variant
        differences[variant] = sorted(
            [f"{k} missing" for k in expected.keys() - shapes.keys()]
            + [f"{k} unexpected" for k in shapes.keys() - expected.keys()]
            + [f"{k} {shapes[k]} vs {expected[k]}" for k in expected.keys() & shapes.keys() if shapes[k] != expected[k]])
    closest = min(differences, key=lambda v: len(differences[v]))
    raise DataError(f"tensor shapes match no SAM architecture ({', '.join(SAM_VARIANTS)}); closest is {closest} "
                    f"with {len(differences[closest])} differences (e.g. {'; '.join(differences[closest][:2])})", path)


def sam_engine(weights_dir: Path | None, device: str, variant: str = "vit_h") -> SamEngine:
    """The registry's SAM for this process: an injected one (tests), else the official checkpoint, loaded once."""
    key = weight_key(variant)
    injected = registry.injected(key)
    if injected is not None:
        return injected  # type: ignore[return-value]
    return _load_engine(registry.resolve(key, weights_dir).resolve(), device, variant)


def custom_sam_engine(checkpoint: Path, device: str, variant: str | None = None) -> SamEngine:
    """The SAM in a user's file (`sam_checkpoint`), fine-tuned or not, loaded once per process.

    The architecture is read from the tensor shapes; a `variant` the user stated must agree with them.
    """
    return _load_engine(Path(checkpoint).resolve(), device, variant)


@lru_cache(maxsize=4)
def _load_engine(path: Path, device: str, variant: str | None) -> SamEngine:
    if not path.is_file():
        raise DataError("SAM checkpoint file not found", path)
    sha = registry.identify(path, "sam_checkpoint")
    state = registry.load_state_dict(path)
    found = infer_variant(state, path)
    if variant is not None and variant != found:
        raise DataError(f"holds a SAM {found}, but sam_variant = {variant!r}", path)
    sam = SAM_VARIANTS[found]().eval()
    registry.load_into(sam, state, path)
    return SamEngine(sam.eval(), model_id=sha, device=device)
