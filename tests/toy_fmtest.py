"""A toy dataset and toy pipelines for testing the plugin without models: squares on noise.

A toy suite declares them as a user declares their own classes (`[pipelines.<name>] class = "toy_fmtest:..."`,
see `toy_config`), so no test touches fmtest's registries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fmtest.data.base import Dataset
from fmtest.data.sample import Sample, SampleRef, SampleSet
from fmtest.errors import DataError, Unavailable
from fmtest.pipelines.base import Pipeline, Prediction


def _sample(split: str, index: int, defective: bool, size: int = 32) -> Sample:
    rng = np.random.default_rng(index + (1000 if split == "train" else 0))
    image = (0.2 + 0.05 * rng.standard_normal((size, size))).clip(0, 1).astype(np.float32)
    mask = np.zeros((size, size), bool)
    if defective:
        y, x = 4 + index % 8, 6 + index % 10
        mask[y : y + 10, x : x + 10] = True
        image[mask] = 0.9
    return Sample(id=f"{split}/{index:03d}", image=image, label="NOK" if defective else "OK", mask=mask)


@dataclass(frozen=True)
class ToyOptions:
    """`[datasets.toy]`: how many test images, and which faults to plant."""

    n_good: int = 6
    n_defective: int = 4
    corrupt_index: int | None = None
    leak_train_image: bool = False


class Toy(Dataset):
    name = "toy"
    options_type = ToyOptions

    def __init__(self, n_good=6, n_defective=4, corrupt_index=None, leak_train_image=False):
        self.n_good, self.n_defective, self.corrupt_index = n_good, n_defective, corrupt_index
        self.leak_train_image = leak_train_image  # test/000 is a copy of train/000: a leakage to catch

    @classmethod
    def from_config(cls, root, options):
        return cls(**options)

    def _ref(self, split, i, defective):
        def load():
            if i == self.corrupt_index:
                raise DataError("cannot identify image file (truncated?)", f"/data/toy/{split}/{i:03d}.png")
            if self.leak_train_image and (split, i) == ("test", 0):
                return Sample(id="test/000", image=_sample("train", 0, False).image, label="OK",
                              mask=np.zeros((32, 32), bool))
            return _sample(split, i, defective)

        return SampleRef(f"{split}/{i:03d}", "NOK" if defective else "OK", load)

    @property
    def test(self):
        n = self.n_good + self.n_defective
        return SampleSet([self._ref("test", i, i >= self.n_good) for i in range(n)])

    @property
    def train(self):
        return SampleSet([self._ref("train", i, False) for i in range(4)])


@dataclass(frozen=True)
class ToyThresholdOptions:
    """`[pipelines.toy_threshold]`: the brightness that counts as a defect (0.95 finds none on Toy)."""

    level: float = 0.6


class ToyThreshold(Pipeline):
    """Segments bright pixels: near-perfect on Toy at the default level."""

    name, task = "toy_threshold", "segmentation"
    options_type = ToyThresholdOptions

    def predict(self, samples):
        level = self.read_options(self.context.options).level
        return [Prediction.from_mask(s.image > level, score=float(s.image.max())) for s in samples]


class ToyMapped(ToyThreshold):
    """ToyThreshold with a score map (brightness in units of its level), as anomaly detectors give one."""

    name = "toy_mapped"

    def predict(self, samples):
        level = self.read_options(self.context.options).level
        return [Prediction.from_mask(s.image > level, score=float(s.image.max()), score_map=s.image / level)
                for s in samples]


class ToyFlakyMapped(ToyMapped):
    """ToyMapped whose answer for every third image is unusable (a local failure, cached like an answer)."""

    name = "toy_flaky_mapped"

    def predict(self, samples):
        return fail_every_third(samples, super().predict(samples), "toy failure")


class ToyNanMapped(ToyMapped):
    """ToyMapped whose score map of test/001 holds a NaN."""

    name = "toy_nan_mapped"

    def predict(self, samples):
        answers = super().predict(samples)
        for s, a in zip(samples, answers, strict=True):
            if s.id == "test/001":
                a.score_map = a.score_map.copy()
                a.score_map[0, 0] = np.nan
        return answers


REGION_SIZE = 40  # ToyRegions' images are REGION_SIZE x REGION_SIZE


def region_sample(index: int, n_good: int) -> Sample:
    """ToyRegions' test image `index`: noise, and for a defective one hand-made regions of three sizes.

    Every defective image has a 10 x 10 region (100 pixels) at 0.9; in image 1 only its top half is bright, so
    its bottom half scores like good pixels. Each has a 3 x 3 region (9 pixels), at 0.5 in images 0 and 1 (below
    ToyMapped's level 0.6: in the score map, never in the predicted mask) and at 0.9 in images 2 and 3. Image 0
    has a 6 x 6 region (36 pixels) at 0.9. So ToyMapped finds 2 of the 4 regions under 16 pixels, the one of
    16-63 pixels and the 4 of 64-255 pixels."""
    rng = np.random.default_rng(500 + index)
    image = (0.2 + 0.05 * rng.standard_normal((REGION_SIZE, REGION_SIZE))).clip(0, 0.4).astype(np.float32)
    mask = np.zeros((REGION_SIZE, REGION_SIZE), bool)
    k = index - n_good
    if k >= 0:
        mask[2:12, 2:12] = True
        image[2:7 if k == 1 else 12, 2:12] = 0.9
        mask[20:23, 20:23] = True
        image[20:23, 20:23] = 0.5 if k in (0, 1) else 0.9
        if k == 0:
            mask[28:34, 2:8] = True
            image[28:34, 2:8] = 0.9
    return Sample(id=f"test/{index:03d}", image=image, label="NOK" if k >= 0 else "OK", mask=mask)


class ToyRegions(Dataset):
    """Two good images and four with hand-made defect regions of known sizes (`region_sample`)."""

    name = "toy_regions"
    N_GOOD, N_DEFECTIVE = 2, 4

    @classmethod
    def from_config(cls, root, options):
        test = SampleSet([SampleRef(f"test/{i:03d}", "NOK" if i >= cls.N_GOOD else "OK",
                                    lambda i=i: region_sample(i, cls.N_GOOD))
                          for i in range(cls.N_GOOD + cls.N_DEFECTIVE)])
        train = SampleSet([SampleRef(f"train/{i:03d}", "OK", lambda i=i: _sample("train", i, False))
                           for i in range(4)])
        return cls(train, test)


class ToyEmpty(Pipeline):
    """Never finds anything: IoU 0, recall 0."""

    name, task = "toy_empty", "segmentation"

    def predict(self, samples):
        return [Prediction.from_mask(np.zeros(s.image.shape[:2], bool), score=0.0) for s in samples]


class ToyLearned(Pipeline):
    """Learns its intensity threshold from labelled OK and NOK images: scored by 2-fold cross-validation.

    Every instance records the ids it was fitted on and the ids it predicted, for the tests to check."""

    name, task = "toy_learned", "segmentation"
    cross_validation_folds = 2
    seen: list[tuple[set[str], set[str]]] = []

    def fit(self, train, reference):
        brightest = {s.label: [] for s in train}
        for s in train:
            brightest[s.label].append(float(s.image.max()))
        self.threshold = (np.mean(brightest["OK"]) + np.mean(brightest["NOK"])) / 2
        self.fitted_on = set(train.ids)
        self.predicted: set[str] = set()
        ToyLearned.seen.append((self.fitted_on, self.predicted))

    def predict(self, samples):
        self.predicted.update(s.id for s in samples)
        return [Prediction.from_mask(s.image > self.threshold, score=float(s.image.max())) for s in samples]


class ToyDeadApi(Pipeline):
    """Stands for an API answering every request 503: each prediction is a failed answer (label NOK)."""

    name, task = "toy_dead_api", "segmentation"
    remote_api = True

    def predict(self, samples):
        return [Prediction.failed("gave up after 2 attempt(s): HTTP 503 from http://127.0.0.1:9/v1") for _ in samples]


def fail_every_third(samples, answers: list[Prediction], error: str) -> list[Prediction]:
    """`answers`, with the answer of every image whose number is a multiple of 3 replaced by a failed one."""
    return [Prediction.failed(error) if int(s.id[-3:]) % 3 == 0 else a for s, a in zip(samples, answers, strict=True)]


class ToyFlakyApi(ToyThreshold):
    """An API that fails one image in three (503), answering the rest as ToyThreshold does."""

    name = "toy_flaky_api"
    remote_api = True

    def predict(self, samples):
        return fail_every_third(samples, super().predict(samples), "HTTP 503 from http://127.0.0.1:9/v1")


class ToyOutageWhenPerturbed(ToyThreshold):
    """An API that answers the clean images, then goes down while the perturbed copies are sent."""

    name = "toy_outage_when_perturbed"
    remote_api = True

    def predict(self, samples):
        if any("perturbation" in s.meta for s in samples):
            return [Prediction.failed("gave up after 2 attempt(s): HTTP 503 from http://127.0.0.1:9/v1")
                    for _ in samples]
        return super().predict(samples)


class ToyPaidApi(ToyThreshold):
    """An API that bills 10 tokens per image, answering as ToyThreshold does."""

    name = "toy_paid_api"
    remote_api = True

    def predict(self, samples):
        return [replace(a, usage={"prompt_tokens": 10.0}) for a in super().predict(samples)]


class ToyAlwaysNok(Pipeline):
    """Answers NOK for every image, the whole image marked: a broken model that never flips."""

    name, task = "toy_always_nok", "segmentation"

    def predict(self, samples):
        return [Prediction.from_mask(np.ones(s.image.shape[:2], bool), score=1.0) for s in samples]


class ToyTerminate(Pipeline):
    """Stands for CI stopping the job (a timeout, a cancel): SIGTERM to its own process mid-case."""

    name, task = "toy_terminate", "segmentation"

    def predict(self, samples):
        import signal
        import time

        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the signal arrives here; without a handler the process dies at once
        raise AssertionError("SIGTERM did not stop the case")


class ToyInterrupt(Pipeline):
    """Stands for a user pressing Ctrl-C in the middle of a case."""

    name, task = "toy_interrupt", "segmentation"

    def predict(self, samples):
        raise KeyboardInterrupt


class ToyCrashOnce(ToyThreshold):
    """Its process dies on the first batch it is given (once per work_dir): a Ray actor killed mid-case."""

    name = "toy_crash_once"

    def predict(self, samples):
        flag = Path(self.context.work_dir) / "crashed-once"
        if not flag.exists():
            flag.touch()
            os._exit(1)
        return super().predict(samples)


class ToyAlwaysCrash(ToyThreshold):
    """Raises on every batch: a model that cannot run on the worker."""

    name = "toy_always_crash"

    def predict(self, samples):
        raise RuntimeError("toy model exploded")


class ToyClassifier(Pipeline):
    """A classifier: NOK when the image has a bright spot. Its cases record F2, never IoU."""

    name, task = "toy_classifier", "classification"

    def predict(self, samples):
        return [Prediction("NOK" if s.image.max() > 0.6 else "OK", score=float(s.image.max())) for s in samples]


class ToyNoWeights(Pipeline):
    name, task = "toy_noweights", "segmentation"

    @classmethod
    def check_available(cls, context):
        raise Unavailable("checkpoint toy.pth not found in /nowhere; run `fmtest weights download toy`")

    def predict(self, samples):  # pragma: no cover - never reached
        raise AssertionError


TOY_PIPELINES = {"toy_threshold": "ToyThreshold", "toy_empty": "ToyEmpty", "toy_noweights": "ToyNoWeights",
                 "toy_interrupt": "ToyInterrupt", "toy_learned": "ToyLearned", "toy_dead_api": "ToyDeadApi",
                 "toy_flaky_api": "ToyFlakyApi", "toy_outage_when_perturbed": "ToyOutageWhenPerturbed",
                 "toy_always_nok": "ToyAlwaysNok", "toy_terminate": "ToyTerminate",
                 "toy_classifier": "ToyClassifier", "toy_paid_api": "ToyPaidApi", "toy_mapped": "ToyMapped",
                 "toy_flaky_mapped": "ToyFlakyMapped", "toy_nan_mapped": "ToyNanMapped"}


def toy_tables() -> dict:
    """The toy dataset and pipelines as a suite declares its own classes (no registry is touched)."""
    return {"datasets": {"toy": {"class": "toy_fmtest:Toy"}},
            "pipelines": {name: {"class": f"toy_fmtest:{cls}"} for name, cls in TOY_PIPELINES.items()}}


def toy_config(*snippets: str, base: str | None = None) -> str:
    """The toy suite's fmtest.toml: `base` (SUITE_CONFIG), then each TOML snippet merged over it (later keys win,
    tables merge), with the toy classes declared."""
    merged = merge_tables(toy_tables(), tomllib.loads(SUITE_CONFIG if base is None else base))
    for snippet in snippets:
        merged = merge_tables(merged, tomllib.loads(snippet))
    return dump_toml(merged)


def merge_tables(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = merge_tables(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dump_toml(data: dict, prefix: str = "") -> str:
    """Nested dicts of strings, numbers, booleans and lists as TOML: scalars first, then each sub-table."""
    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    lines = [f"{key(k)} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{key(k)}" if prefix else key(k)
            lines += ["", f"[{name}]", dump_toml(v, name)]
    return "\n".join(lines).strip() + "\n"


SUITES = Path(__file__).parent.parent / "suites"
SUITE_CONFIG = """
default_datasets = ["toy"]
default_pipelines = ["toy_threshold", "toy_empty"]
bootstrap_resamples = 200
[thresholds]
iou = 0.60
f2 = 0.80
[thresholds."toy_empty-toy"]
iou = 0.0
"""


COMPARE = """
[pipelines.toy_same]
uses = "toy_threshold"
[compare.toy_same]
against = "toy_threshold"
[compare.toy_empty]
against = "toy_threshold"
tolerance = 0.05
"""  # a copy of the reference and a worse candidate


def make_suite(pytester, *snippets: str, files=("test_segmentation.py", "test_classification.py")):
    """A suite folder like the shipped one (its test files copied), its fmtest.toml the toy config with
    `snippets` merged over it (`toy_config`)."""
    pytester.syspathinsert(Path(__file__).parent)
    for name in files:
        shutil.copy(SUITES / name, pytester.path / name)
    (pytester.path / "fmtest.toml").write_text(toy_config(*snippets))
    return pytester


def run_suite(suite, *args):
    """Run a toy suite in this process, without the prediction cache."""
    return suite.runpytest("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache", "-q", *args)
