"""`anomalib`: a model a team trained with anomalib, as the model under test.

    [pipelines.my_patchcore]
    uses = "anomalib"
    checkpoint = "models/patchcore.ckpt"   # relative to the suite config
    model = "Patchcore"                    # a .ckpt does not record its anomalib class

Formats, by the file's suffix:
- `.ckpt`: the Lightning checkpoint anomalib's Engine writes. It is read with `weights_only` (no code runs from
  the file) through the class `model` names (an `anomalib.models` class: Patchcore, Padim, EfficientAd, ...);
  a backbone's weights come from the checkpoint, never from a download (`pre_trained = False`).
- `.pt`: anomalib's torch export (`engine.export(model, "torch")`), a pickle of the whole model: loading it runs
  code from the file, so it needs `trust_remote_code = true`, as anomalib's TorchInferencer needs
  TRUST_REMOTE_CODE=1.
- `.xml` with its `.bin`: an OpenVINO export, where openvino is installed. The exported graph ends in anomalib's
  post-processing, so only normalised outputs exist: the score is anomalib's normalised score (clamped to
  [0, 1]), the mask its `pred_mask` resized (nearest) to the image, and there is no score map to view. It runs
  at `openvino_precision` (default f32, where OpenVINO's CPU default is bf16 on CPUs that have it: answers
  would then depend on the machine). anomalib's export resizes without antialiasing (an ONNX limit), so on
  images larger than the model's input its answers can differ from the checkpoint's.

A Lightning checkpoint or torch export runs as anomalib's Engine.predict does, one image at a time: the model's
pre-processing transform, its torch model (raw image score and anomaly map at the model's input size), the map
resized (bilinear) to the image, then the model's own post-processor, which normalises and thresholds. So
- `score` is the model's raw image score: anomalib's normalised score is clamped to [0, 1] and would tie the
  most anomalous images in the scoreboard's ranking figures;
- with `threshold = "model"` (default) the label is the post-processor's `pred_label` (its image threshold) and
  the mask its `pred_mask` (its pixel threshold) on a flagged image, empty on an image it passes; the score map
  is its normalised map over its normalised pixel threshold, so 1.0 is the mask's edge;
- with `threshold = "calibrate"` fmtest sets both thresholds instead, as quantiles (`image_quantile`,
  `pixel_quantile`) of the raw scores and map values of the dataset's good training images, all of them (the
  model learned elsewhere): for a checkpoint without thresholds (anomalib sets them on a validation set that
  holds defective images), or to hold several models to one false-alarm rate. Those images should be ones the
  model was not trained on, or the thresholds come out too low.

The model id is the checkpoint's sha256 (an OpenVINO model's: of its .xml and .bin together), so the results
name the file that produced them and the prediction cache follows the file.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np

from fmtest.data.sample import NOK, OK, Sample, SampleSet
from fmtest.errors import ConfigError, DataError, Unavailable
from fmtest.models import registry
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.calibration import Thresholds
from fmtest.pipelines.options import (
    parse_options,
    require_choice,
    require_unit_interval,
    table,
)
from fmtest.util.extras import installed, require_sdks
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")

FORMATS = {".ckpt": "Lightning checkpoint", ".pt": "torch export", ".pth": "torch export", ".xml": "OpenVINO model"}
THRESHOLDS = ("model", "calibrate")
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")
# Pre-processing steps that keep the whole image in view: the anomaly map can be laid back onto the image.
_WHOLE_IMAGE_TRANSFORMS = {"Compose", "Resize", "Normalize", "ToDtype", "ToImage", "ToPureTensor",
                           "ConvertImageDtype", "Grayscale", "RGB"}


@dataclass(frozen=True)
class AnomalibOptions:
    """`[pipelines.anomalib]` and its variants."""

    checkpoint: str | None = None  # .ckpt, .pt (torch export) or .xml (OpenVINO); relative to the suite config
    model: str | None = None  # the anomalib.models class of a .ckpt ("Patchcore", "Padim", ...)
    threshold: str = "model"  # "model": the checkpoint's own thresholds; "calibrate": fmtest's, on good train images
    image_quantile: float = 0.99  # calibrate: of the good training images' scores
    pixel_quantile: float = 0.999  # calibrate: of their map values
    trust_remote_code: bool = False  # a torch export is a pickle: loading it runs code from the file
    openvino_precision: str = "f32"  # OpenVINO's inference precision; its CPU default is bf16 where the CPU has it


@dataclass(frozen=True)
class ModelAnswer:
    """What the model says about one image, maps at the image's size."""

    score: float  # its image score (raw; normalised for OpenVINO)
    anomaly_map: np.ndarray  # its anomaly map (raw; normalised for OpenVINO), float32
    flagged: bool | None  # its own decision, None when it has no thresholds
    mask: np.ndarray | None  # its own pixel decision
    score_map: np.ndarray | None  # its normalised map in units of its pixel threshold


class Anomalib(Pipeline):
    name = "anomalib"
    task = "segmentation"
    batch_size = 8
    options_type = AnomalibOptions
    sdk_modules: ClassVar[tuple[str, ...]] = ("anomalib",)

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options: AnomalibOptions = self.read_options(context.options)
        self.thresholds: Thresholds | None = None

    @classmethod
    def read_options(cls, options: Mapping[str, object]) -> AnomalibOptions:
        o = parse_options(AnomalibOptions, cls.name, options)
        require_choice(cls.name, "threshold", o.threshold, THRESHOLDS)
        require_choice(cls.name, "openvino_precision", o.openvino_precision, OPENVINO_PRECISIONS)
        require_unit_interval(cls.name, image_quantile=o.image_quantile, pixel_quantile=o.pixel_quantile)
        if o.checkpoint is not None and Path(o.checkpoint).suffix not in FORMATS:
            raise ConfigError(f"checkpoint = {o.checkpoint!r}: anomalib models are read from "
                              f"{', '.join(FORMATS)} files ({', '.join(dict.fromkeys(FORMATS.values()))})",
                              table(cls.name))
        if o.checkpoint is not None and Path(o.checkpoint).suffix == ".ckpt" and not o.model:
            raise ConfigError(f"checkpoint = {o.checkpoint!r} is a Lightning checkpoint, which does not record "
                              "its anomalib class: set model = \"Patchcore\" (or Padim, EfficientAd, ...)",
                              table(cls.name))
        return o

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        options = cls.read_options(context.options)
        require_sdks(cls.sdk_modules, cls.name)
        if options.checkpoint is None:
            raise Unavailable(f"{cls.name} needs the model to test: set checkpoint = \"<file>\" (an anomalib "
                              f".ckpt, torch export .pt or OpenVINO .xml) in {table(cls.name)}")
        path = cls.checkpoint_path(context, options)
        if path.suffix == ".xml" and not installed("openvino"):
            raise Unavailable(f"{path} is an OpenVINO model; openvino is not installed: pip install openvino")

    @classmethod
    def checkpoint_path(cls, context: PipelineContext, options: AnomalibOptions) -> Path:
        """The named file, relative to the suite config's folder; ConfigError when it is not there."""
        path = Path(options.checkpoint).expanduser()
        path = path if path.is_absolute() else context.suite_dir / path
        for needed in [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]:
            if not needed.is_file():
                raise ConfigError(f"checkpoint = {options.checkpoint!r}: {needed} does not exist", table(cls.name))
        return path

    @cached_property
    def path(self) -> Path:
        return self.checkpoint_path(self.context, self.options)

    @cached_property
    def model_id(self) -> str:
        """Hashed once: an instance keeps naming the file it was set up with."""
        if self.path.suffix == ".xml":
            return registry.combined_id(registry.file_sha256(self.path),
                                        registry.file_sha256(self.path.with_suffix(".bin")))
        return registry.file_sha256(self.path)

    @cached_property
    def model(self) -> _TorchModel | _OpenVinoModel:
        if self.path.suffix == ".xml":
            return _OpenVinoModel(self.path, self.options.openvino_precision)
        return _TorchModel(self._load_module(), self.path, self.context.device)

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        """`threshold = "model"`: check the checkpoint has its thresholds; "calibrate": set fmtest's."""
        if self.options.threshold == "model":
            self.model.require_thresholds()
            return
        good = train.filter(lambda ref: ref.label == OK)
        if not len(good):
            raise DataError(f"{self.name}: threshold = \"calibrate\" needs defect-free training images, found none",
                            self.context.dataset)
        answers = [self.model.answer(s.image) for batch in good.batches(self.batch_size) for s in batch]
        self.thresholds = Thresholds.from_good([a.score for a in answers], [a.anomaly_map for a in answers],
                                               self.options.image_quantile, self.options.pixel_quantile,
                                               f"{self.path} on {self.context.dataset}")

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        predictions = []
        for sample in samples:
            answer = self.model.answer(sample.image)
            if self.options.threshold == "calibrate":
                if self.thresholds is None:
                    raise RuntimeError("Anomalib.predict called before fit")
                predictions.append(self.thresholds.predict(answer.score, answer.anomaly_map))
            elif not np.isfinite(answer.score) or not np.isfinite(answer.anomaly_map).all():
                predictions.append(Prediction.failed(f"non-finite anomaly score from {self.path.name}"))
            elif answer.flagged is None:  # its post-processor gave no OK/NOK: never a silent pass
                predictions.append(Prediction.failed(f"{self.path.name} gave no OK/NOK answer"))
            else:
                mask = answer.mask if answer.flagged else np.zeros(answer.anomaly_map.shape, bool)
                predictions.append(Prediction(label=NOK if answer.flagged else OK, score=answer.score, mask=mask,
                                              score_map=answer.score_map))
        return predictions

    def _load_module(self):
        """The anomalib module (pre-processor, torch model, post-processor) from a .ckpt or a torch export."""
        with warnings.catch_warnings():  # anomalib's own imports warn about its deprecations: nothing a user can do
            warnings.simplefilter("ignore", FutureWarning)
            from anomalib.models import AnomalibModule

        if self.path.suffix == ".ckpt":
            cls = _model_class(self.options.model, self.name)
            overrides = {key: False for key in ("pre_trained", "evaluator", "visualizer")
                         if key in inspect.signature(cls.__init__).parameters}
            try:
                return cls.load_from_checkpoint(self.path, map_location="cpu", **overrides)
            except Exception as e:  # Lightning and torch raise many types; each means "not this model's file"
                raise DataError(f"not an anomalib {cls.__name__} checkpoint ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:300]})", self.path) from None
        if not self.options.trust_remote_code:
            raise ConfigError(f"{self.path} is an anomalib torch export, a pickle that runs code from the file "
                              "when loaded: set trust_remote_code = true if you trust its source, or give the "
                              "Lightning .ckpt (read without running code) with model = \"<class>\"",
                              table(self.name))
        try:
            module = torch.load(self.path, map_location="cpu", weights_only=False)["model"]  # trusted above
        except Exception as e:  # unpickling fails in many ways; all mean "not a torch export"
            raise DataError(f"not an anomalib torch export ({type(e).__name__}: {str(e).splitlines()[0][:300]})",
                            self.path) from None
        if not isinstance(module, AnomalibModule):
            raise DataError(f"holds a {type(module).__name__}, not an anomalib model", self.path)
        return module


def _model_class(name: str, pipeline: str):
    """The anomalib.models class `name` names (case and underscores ignored: "efficient_ad" is EfficientAd)."""
    import anomalib.models

    known = sorted(anomalib.models.list_models(case="pascal"))
    by_key = {k.lower(): k for k in known}
    match = by_key.get(name.replace("_", "").lower())
    if match is None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"model = {name!r} is not an anomalib model{hint}; known: {', '.join(known)}",
                          table(pipeline))
    return getattr(anomalib.models, match)


def _rgb_tensor(image: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1]: anomalib reads images as RGB, a grey image with its value in each channel."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"anomalib models need an HxW or HxWx3 image, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def _to_image_size(tensor: torch.Tensor, shape: tuple[int, int], mode: str) -> np.ndarray:
    """A model-resolution map (any leading singleton dims) resized to `shape`."""
    plane = tensor.reshape(tensor.shape[-2:]).float()[None, None]
    if mode == "nearest":
        return F.interpolate(plane, size=shape, mode="nearest")[0, 0].cpu().numpy()
    return F.interpolate(plane, size=shape, mode="bilinear", align_corners=False)[0, 0].cpu().numpy()


class _TorchModel:
    """An anomalib module run as Engine.predict runs it: transform, torch model, then its post-processor."""

    def __init__(self, module, path: Path, device: str):
        self.path = path
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.transform = module.pre_processor.transform if module.pre_processor is not None else None
        steps = self.transform.transforms if type(self.transform).__name__ == "Compose" else [self.transform]
        names = [type(t).__name__ for t in steps if t is not None]
        cropping = [name for name in names if name not in _WHOLE_IMAGE_TRANSFORMS]
        if cropping:
            raise DataError(f"the model's pre-processing ({', '.join(cropping)}) does not keep the whole image in "
                            "view, so its anomaly map cannot be laid back onto the image; fmtest reads models "
                            "whose pre-processor resizes and normalises only", path)

    def require_thresholds(self) -> None:
        post = self.module.post_processor
        if post is None or not getattr(post, "enable_thresholding", False) \
                or torch.isnan(post.image_threshold) or torch.isnan(post.pixel_threshold):
            raise DataError("the model holds no image and pixel thresholds (anomalib sets them on a validation set "
                            "that has defective images): set threshold = \"calibrate\" to let fmtest set them on "
                            "good training images", self.path)

    def answer(self, image: np.ndarray) -> ModelAnswer:
        with torch.no_grad():
            return self._answer(image)

    def _answer(self, image: np.ndarray) -> ModelAnswer:
        from anomalib.data import InferenceBatch

        shape = image.shape[:2]
        x = _rgb_tensor(image).to(self.device)
        if self.transform is not None:
            x = self.transform(x)
        raw = self.module.model(x)
        if raw.anomaly_map is None:
            raise DataError("the model gives no anomaly map; fmtest's anomalib pipeline scores models that "
                            "localise defects", self.path)
        model_map = raw.anomaly_map.reshape(raw.anomaly_map.shape[-2:]).float()
        score = float(raw.pred_score.reshape(-1)[0]) if raw.pred_score is not None else float(model_map.max())
        anomaly_map = _to_image_size(model_map, shape, "bilinear")
        post = self.module.post_processor
        flagged = mask = score_map = None
        if post is not None:
            decided = post(InferenceBatch(pred_score=torch.tensor([score], device=self.device),
                                          anomaly_map=torch.from_numpy(anomaly_map).to(self.device)[None, None]))
            if decided.pred_label is not None and decided.pred_label.dtype == torch.bool:
                flagged = bool(decided.pred_label.reshape(-1)[0])
                mask = decided.pred_mask.reshape(shape).cpu().numpy()
                unit = max(float(post.normalized_pixel_threshold), 1e-12)
                score_map = (decided.anomaly_map.reshape(shape).float() / unit).cpu().numpy()
        return ModelAnswer(score, anomaly_map, flagged, mask, score_map)


class _OpenVinoModel:
    """An anomalib OpenVINO export: pre- and post-processing are inside the graph, as anomalib's OpenVINOInferencer."""

    def __init__(self, path: Path, precision: str):
        import openvino as ov

        self.path = path
        core = ov.Core()
        try:
            self.compiled = core.compile_model(core.read_model(path, path.with_suffix(".bin")), "CPU",
                                               {"INFERENCE_PRECISION_HINT": precision})
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for unreadable or foreign files
            raise DataError(f"not a readable OpenVINO model ({str(e).splitlines()[0][:300]})", path) from None
        names = {name for output in self.compiled.outputs for name in output.get_names()}
        if not {"pred_score", "anomaly_map"} <= names:
            raise DataError(f"not an anomalib export: outputs {', '.join(sorted(names))}, expected pred_score "
                            "and anomaly_map", path)
        self.has_thresholds = {"pred_label", "pred_mask"} <= names

    def require_thresholds(self) -> None:
        if not self.has_thresholds:
            raise DataError("the exported model has no pred_label and pred_mask outputs (no thresholds): set "
                            "threshold = \"calibrate\"", self.path)

    def answer(self, image: np.ndarray) -> ModelAnswer:
        shape = image.shape[:2]
        result = self.compiled(_rgb_tensor(image).numpy())
        outputs = {name: torch.from_numpy(np.asarray(result[output]))
                   for output in self.compiled.outputs for name in output.get_names()}
        score = float(outputs["pred_score"].reshape(-1)[0])
        anomaly_map = _to_image_size(outputs["anomaly_map"], shape, "bilinear")
        if not self.has_thresholds:
            return ModelAnswer(score, anomaly_map, None, None, None)
        flagged = bool(outputs["pred_label"].reshape(-1)[0])
        mask = _to_image_size(outputs["pred_mask"], shape, "nearest") > 0.5
        return ModelAnswer(score, anomaly_map, flagged, mask, None)
