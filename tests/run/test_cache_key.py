"""The prediction cache key covers every input a prediction depends on: change one, and a rerun predicts
again; change nothing, and a rerun predicts nothing. A remote service's failed answer is never served from
the cache; a local pipeline's is, like any answer."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import TESTS

from fmtest.config.settings import resolve_settings
from fmtest.config.suite import parse_config
from fmtest.data.base import Dataset, Group
from fmtest.data.sample import Sample, SampleRef, SampleSet
from fmtest.pipelines.base import Pipeline, Prediction
from fmtest.plugin.session import Session
from fmtest.run.plan import Case


@dataclasses.dataclass(frozen=True)
class PartsOptions:
    """`[datasets.parts]`: a setting the pipeline may learn from (it changes no image)."""

    lot: str = "A"


class Parts(Dataset):
    """Four good training images, a reference and six test images; the test sets what each one holds."""

    name = "parts"
    options_type = PartsOptions
    train_offset = 0.0  # brightness added to the training images, keeping their ids
    train_labels = "OK"
    n_train = 4
    reference_offset = 0.0

    def __init__(self):
        super().__init__(train=SampleSet([self._ref("train", i) for i in range(Parts.n_train)]),
                         test=SampleSet([self._ref("test", i) for i in range(6)]))

    @classmethod
    def from_config(cls, root, options):
        return cls()

    def _ref(self, split, i):
        defective = split == "test" and i >= 3

        def load():
            image = np.full((16, 16), 0.2 + (Parts.train_offset if split == "train" else 0.0), np.float32)
            mask = np.zeros((16, 16), bool)
            if defective:
                mask[4:8, 4:8] = True
                image[mask] = 0.9
            label = "NOK" if defective else (Parts.train_labels if split == "train" else "OK")
            return Sample(id=f"{split}/{i}", image=image, label=label, mask=mask)

        label = "NOK" if defective else (Parts.train_labels if split == "train" else "OK")
        return SampleRef(f"{split}/{i}", label, load)

    def groups(self):
        reference = Sample(id="ref", image=np.full((16, 16), 0.2 + Parts.reference_offset, np.float32), label="OK",
                           mask=np.zeros((16, 16), bool))
        return [Group(self.name, self.train, self.test, lambda: reference)]


@dataclasses.dataclass(frozen=True)
class CountingOptions:
    """`[pipelines.counting]`: the brightness that counts as a defect."""

    level: float = 0.6


class Counting(Pipeline):
    """Thresholds bright pixels; counts the test images it predicts. `fail` makes every answer a failed one."""

    name, task = "counting", "segmentation"
    options_type = CountingOptions
    predicted = 0
    fail = False

    def predict(self, samples):
        Counting.predicted += sum(s.id.startswith("test/") for s in samples)
        if Counting.fail:
            return [Prediction.failed("HTTP 503 from http://127.0.0.1:9/v1") for _ in samples]
        level = self.read_options(self.context.options).level
        return [Prediction.from_mask(s.image > level, score=float(s.image.max())) for s in samples]


RAW = {"default_datasets": ["parts"], "datasets": {"parts": {"class": "test_cache_key:Parts"}},
       "pipelines": {"counting": {"class": "test_cache_key:Counting"}}, "guardrails": {"enabled": False},
       "thresholds": {"max_invalid_answer_rate": 1.0}}


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    for name, value in (("train_offset", 0.0), ("train_labels", "OK"), ("n_train", 4), ("reference_offset", 0.0)):
        monkeypatch.setattr(Parts, name, value)
    monkeypatch.setattr(Counting, "fail", False)


def predictions_made(cache_dir: Path, raw: dict | None = None, prompt: str = "defect") -> int:
    """Run the case once in a fresh process-like session and count the test images the pipeline predicted."""
    config = parse_config({**RAW, **(raw or {}), "prompts": {"parts": prompt}}, TESTS / "fmtest.toml")
    settings = dataclasses.replace(resolve_settings({"device": "cpu"}.get, TESTS), config=config,
                                   datasets=["parts"], pipelines=["counting"], cache_dir=cache_dir)
    evaluator = Session(settings, progress=False)
    Counting.predicted = 0
    evaluator.case(Case("counting", "parts", "segmentation"))
    evaluator.close()
    return Counting.predicted


CHANGES = {
    "a training image's content, same name": lambda: setattr(Parts, "train_offset", 0.05),
    "a training label": lambda: setattr(Parts, "train_labels", "NOK"),
    "the training ids": lambda: setattr(Parts, "n_train", 3),
    "the reference image": lambda: setattr(Parts, "reference_offset", 0.05),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_what_the_pipeline_learned_from_keys_the_cache(tmp_path, change):
    assert predictions_made(tmp_path) == 6
    assert predictions_made(tmp_path) == 0  # nothing changed: everything from the cache
    CHANGES[change]()
    assert predictions_made(tmp_path) == 6


@pytest.mark.parametrize("raw,prompt", [
    ({"pipelines": {"counting": {"class": "test_cache_key:Counting"}},
      "datasets": {"parts": {"class": "test_cache_key:Parts"}}}, "a crack"),  # the prompt
])
def test_the_prompt_keys_the_cache(tmp_path, raw, prompt):
    assert predictions_made(tmp_path) == 6
    assert predictions_made(tmp_path, raw, prompt=prompt) == 6


SETTINGS = {
    "a pipeline option": {"pipelines": {"counting": {"class": "test_cache_key:Counting", "level": 0.5}}},
    "a dataset option": {"datasets": {"parts": {"class": "test_cache_key:Parts", "lot": "B"}}},
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_a_pipeline_or_dataset_option_keys_the_cache(tmp_path, setting):
    assert predictions_made(tmp_path) == 6
    assert predictions_made(tmp_path, SETTINGS[setting]) == 6
    assert predictions_made(tmp_path, SETTINGS[setting]) == 0


def test_the_prompt_files_content_keys_the_cache(tmp_path, monkeypatch):
    """Editing the prompt file under the same name changes what is asked: the predictions are made again."""
    from fmtest.pipelines.base import PipelineContext
    from fmtest.pipelines.gemini import GeminiBasic

    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    (tmp_path / "prompt.txt").write_text("Is this part defective? Answer OK or NOK.")

    def fingerprint() -> str:
        context = PipelineContext(dataset="satsim", options={"prompt_file": "prompt.txt"}, suite_dir=tmp_path)
        return GeminiBasic(context).fingerprint

    before = fingerprint()
    assert fingerprint() == before
    (tmp_path / "prompt.txt").write_text("Is there a void under the die? Answer OK or NOK.")
    assert fingerprint() != before


PIPELINE_SOURCE = """
from fmtest.pipelines.base import Pipeline, Prediction


class Edited(Pipeline):
    name, task = "edited", "classification"

    def predict(self, samples):
        return [Prediction("OK") for _ in samples]  # EDIT
"""


def _load(path: Path, module: str, monkeypatch) -> type:
    """The module imported afresh from `path`, as a new run imports the user's file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(module, path)
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module, loaded)
    spec.loader.exec_module(loaded)
    return loaded.Edited


def test_the_pipelines_code_and_fmtests_version_key_the_cache(tmp_path, monkeypatch):
    """A user's pipeline edited between runs is predicted again (its module's source is in the key), and so is
    every pipeline under another fmtest version."""
    from fmtest.pipelines import base

    path = tmp_path / "edited_pipeline.py"
    path.write_text(PIPELINE_SOURCE)
    first = base.code_fingerprint(_load(path, "edited_pipeline", monkeypatch))
    assert base.code_fingerprint(_load(path, "edited_pipeline", monkeypatch)) == first  # the same code, the same key
    path.write_text(PIPELINE_SOURCE.replace('Prediction("OK")', 'Prediction("NOK")'))
    edited = _load(path, "edited_pipeline", monkeypatch)
    assert base.code_fingerprint(edited) != first
    monkeypatch.setattr(base, "__version__", "99.0")
    assert base.code_fingerprint.__wrapped__(edited) != base.code_fingerprint(edited)


def test_a_remote_services_failed_answer_is_predicted_again_on_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setattr(Counting, "remote_api", True)
    Counting.fail = True
    assert predictions_made(tmp_path) == 6
    Counting.fail = False
    assert predictions_made(tmp_path) == 6  # none of the failed answers was stored
    assert predictions_made(tmp_path) == 0


def test_a_local_pipelines_failed_answer_is_cached_like_any_answer(tmp_path):
    Counting.fail = True  # a local pipeline fails the same image the same way every time (cannot be aligned)
    assert predictions_made(tmp_path) == 6
    assert predictions_made(tmp_path) == 0
