"""`supervised`: the study's supervised reference, ImageNet CNN features + an MLP fitted on labelled images.

The study set a pre-trained ResNet feature extractor with an MLP on top beside the zero-shot models
(IndustrialSAT F2 0.82, stratified five-fold cross-validation). Here:

- features: the global-average-pooled last stage of torchvision's ImageNet ResNet-50 when its
  checkpoint `resnet50-0676ba61.pth` is in the weights folder, else of the EfficientNet-Lite0 that
  ships in a pip package (`backbone = "auto"`; "resnet50" or "efficientnet_lite0" force one). The
  model id starts with the backbone's name, so the results say which ran. Whole images are resized
  to `input_size` (no crop) and each image's vector is computed once per process.
- classifier: scikit-learn's MLPClassifier (one hidden layer of `hidden_units`, L2 `alpha`, seeded)
  on standardised features; an image is NOK when its NOK probability reaches `decision_threshold`.

Unlike every other pipeline it learns from defective images: `fit` needs labelled OK and NOK
images, so `cross_validation_folds = 5` tells the evaluation to score it by stratified five-fold
cross-validation over the labelled images (`fmtest.data.folds.stratified_folds`), one fitted
instance per fold, each image predicted by the fold that did not train on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from fmtest.data.departures import NOT_PUBLISHED, Departure
from fmtest.data.sample import NOK, OK, Sample, SampleSet
from fmtest.errors import ConfigError, DataError, MissingWeights
from fmtest.models import imagenet_cnn, registry
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.options import (
    parse_options,
    require_at_least_one,
    require_choice,
    require_unit_interval,
)

BACKBONES = ("auto", *imagenet_cnn.POOLED_BACKBONES)


@dataclass(frozen=True)
class SupervisedOptions:
    """`[pipelines.supervised]`."""

    backbone: str = "auto"
    input_size: int = 224
    hidden_units: int = 256
    alpha: float = 1e-4
    max_iter: int = 500
    decision_threshold: float = 0.5
    seed: int = 0


class Supervised(Pipeline):
    name = "supervised"
    task = "classification"
    batch_size = 32
    options_type = SupervisedOptions
    cross_validation_folds: ClassVar[int] = 5
    study_source = ("the paper (no code published): a pre-trained ResNet feature extractor + MLP, stratified "
                    "five-fold cross-validation")

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.options = self.read_options(context.options)
        self._classifier = None

    @classmethod
    def read_options(cls, options: Mapping[str, object]) -> SupervisedOptions:
        options = parse_options(SupervisedOptions, cls.name, options)
        require_choice(cls.name, "backbone", options.backbone, BACKBONES)
        require_at_least_one(cls.name, input_size=options.input_size, hidden_units=options.hidden_units,
                             max_iter=options.max_iter)
        require_unit_interval(cls.name, decision_threshold=options.decision_threshold)
        if options.alpha < 0:
            raise ConfigError(f"alpha must not be negative, got {options.alpha}", f"[pipelines.{cls.name}]")
        return options

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        options = cls.read_options(context.options)
        if options.backbone == "resnet50":
            registry.require(imagenet_cnn.RESNET50_KEY, context.weights_dir)
        else:
            from fmtest.models import efficientnet

            efficientnet.weights_path()

    @classmethod
    def resolved_backbone(cls, options: SupervisedOptions, weights_dir) -> str:
        """The backbone that runs: "auto" takes ResNet-50 when its checkpoint is present (or injected)."""
        if options.backbone != "auto":
            return options.backbone
        try:
            registry.require(imagenet_cnn.RESNET50_KEY, weights_dir)
        except MissingWeights:
            return "efficientnet_lite0"
        return "resnet50"

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        """The study names a pre-trained ResNet + MLP and five stratified folds, nothing more."""
        o = cls.read_options(context.options)
        if cls.resolved_backbone(o, context.weights_dir) == "resnet50":
            backbone = Departure("backbone", "ResNet-50, torchvision's ImageNet weights (IMAGENET1K_V1)",
                                 "a pre-trained ResNet (depth and weights not published)",
                                 "the most widely used ImageNet ResNet", kind="unstated")
        else:
            backbone = Departure("backbone", "EfficientNet-Lite0 (ImageNet), not a ResNet", "a pre-trained ResNet",
                                 "no resnet50-0676ba61.pth in the weights folder (`fmtest weights download "
                                 "resnet50_imagenet`), or backbone = \"efficientnet_lite0\"", comparable=False)
        return [backbone,
                Departure("input", f"whole image squashed to {o.input_size} x {o.input_size} (pixel-area shrink), "
                          "pooled last stage", NOT_PUBLISHED,
                          "ImageNet's input size; no crop, so a defect at the border stays in view", kind="unstated"),
                Departure("MLP", f"one hidden layer of {o.hidden_units}, L2 {o.alpha:g}, NOK at p >= "
                          f"{o.decision_threshold:g}", "an MLP (size and training not published)",
                          "a small MLP on standardised features; scikit-learn's defaults otherwise", kind="unstated")]

    @cached_property
    def backbone(self) -> str:
        """The backbone that runs: "auto" takes ResNet-50 when its checkpoint is present (or injected)."""
        return self.resolved_backbone(self.options, self.context.weights_dir)

    @property
    def features(self) -> imagenet_cnn.PooledFeatures:
        return imagenet_cnn.pooled_features(self.backbone, self.context.weights_dir, self.context.device,
                                            self.options.input_size)

    @property
    def model_id(self) -> str:
        """Read from the checkpoint file (hashed once per process): a cached rerun builds no network."""
        return f"{self.backbone}:{imagenet_cnn.pooled_model_id(self.backbone, self.context.weights_dir)}"

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        """Fit the MLP on labelled training images, which must hold both OK and NOK ones."""
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        n_nok = train.n_defective
        if n_nok == 0 or n_nok == len(train):
            raise DataError(f"{self.name} learns from labelled OK and NOK images, but the {len(train)} training "
                            f"images of {self.context.dataset!r} hold {n_nok} NOK; it is scored by "
                            f"{self.cross_validation_folds}-fold cross-validation over labelled images")
        x = np.concatenate([self.features(batch) for batch in train.batches(self.batch_size)])
        y = np.array([label == NOK for label in train.labels])
        classifier = make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(self.options.hidden_units,), alpha=self.options.alpha,
            max_iter=self.options.max_iter, random_state=self.options.seed))
        self._classifier = classifier.fit(x, y)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        if self._classifier is None:
            raise RuntimeError(f"{self.name}: predict() called before fit()")
        nok_probability = self._classifier.predict_proba(self.features(samples))[:, 1]
        return [Prediction(label=NOK if p >= self.options.decision_threshold else OK, score=float(p))
                for p in nok_probability]
