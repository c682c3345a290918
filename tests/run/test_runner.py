"""runner: settings precedence, case planning, per-group fitting, robustness scoring."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import toy_fmtest
from fakes import TESTS, make_mvtec
from toy_fmtest import Toy

from fmtest.config.settings import Settings, resolve_settings
from fmtest.config.suite import parse_config
from fmtest.errors import ConfigError
from fmtest.pipelines.base import Pipeline, Prediction
from fmtest.plugin.session import Session
from fmtest.run.plan import Case, plan_cases

RECORDING = {"pipelines": {"recording": {"class": f"{__name__}:RecordingFit"}}}


def _settings(**kw) -> Settings:
    """The settings of a run with `raw` as its config (the toy classes declared in it), without a prediction cache
    unless `cache_dir` is given."""
    config = parse_config(toy_fmtest.merge_tables(toy_fmtest.toy_tables(), kw.pop("raw", {})))
    base = resolve_settings({"no-cache": True, "device": "cpu"}.get, TESTS)
    return dataclasses.replace(base, **{"config": config, "datasets": ["toy"], "pipelines": ["toy_threshold"], **kw})


def test_command_line_beats_environment_beats_config(tmp_path, monkeypatch):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "fmtest.toml").write_text('weights = "w_from_file"\ndevice = "cpu"\n')
    options = {"weights": None}
    settings = resolve_settings(lambda n: options.get(n), tmp_path)
    assert settings.weights_dir == tmp_path / "suites" / "w_from_file"  # relative to the config file
    monkeypatch.setenv("FMTEST_WEIGHTS", "/env/w")
    assert resolve_settings(lambda n: options.get(n), tmp_path).weights_dir == Path("/env/w")
    options["weights"] = "cli_w"
    assert resolve_settings(lambda n: options.get(n), tmp_path).weights_dir == tmp_path / "cli_w"
    options["device"] = "tpu"
    with pytest.raises(ConfigError, match=r"--fm-device=tpu: accepted: "):
        resolve_settings(lambda n: options.get(n), tmp_path)


def test_missing_data_root_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data root .*nope is not a folder"):
        resolve_settings(lambda n: {"data-root": "nope", "device": "cpu"}.get(n), tmp_path)


def test_labels_only_datasets_put_segmentation_pipelines_under_classification():
    settings = _settings(datasets=["satsim", "elpv"], pipelines=["padim", "gemini_basic"])
    seg = [c.id for c in plan_cases(settings, "segmentation")]
    cls = [c.id for c in plan_cases(settings, "classification")]
    assert seg == ["padim-satsim"]
    assert cls == ["gemini_basic-satsim", "padim-elpv", "gemini_basic-elpv"]
    assert [c.task for c in plan_cases(settings, "any")] == ["segmentation", "classification",
                                                            "classification", "classification"]


class RecordingFit(Pipeline):
    """Remembers what each instance was fitted on; predicts empty masks."""

    name, task = "recording", "segmentation"
    fits: list = []

    def fit(self, train, reference):
        RecordingFit.fits.append((sorted({i.split("/")[0] for i in train.ids}), reference.id))

    def predict(self, samples):
        import numpy as np

        return [Prediction.from_mask(np.zeros(s.image.shape[:2], bool)) for s in samples]


def test_each_mvtec_category_is_fitted_on_its_own_images_and_reference(tmp_path, monkeypatch):
    make_mvtec(tmp_path, categories=("carpet", "grid"), n_train=3, n_good=2, n_defective=2)
    RecordingFit.fits = []
    settings = _settings(datasets=["mvtec"], pipelines=["recording"], data_root=tmp_path,
                         raw={**RECORDING, "datasets": {"mvtec": {"categories": ["carpet", "grid"]}}})
    result = Session(settings, progress=False).case(Case("recording", "mvtec", "segmentation"))
    assert RecordingFit.fits == [(["carpet"], "carpet/train/good/000"), (["grid"], "grid/train/good/000")]
    assert result.metrics["n_images"] == 8  # pooled over both categories


def test_fitting_is_skipped_when_every_prediction_is_cached(tmp_path, monkeypatch):
    RecordingFit.fits = []
    settings = _settings(pipelines=["recording"], cache_dir=tmp_path / "cache", raw=RECORDING)
    Session(settings, progress=False).case(Case("recording", "toy", "segmentation"))
    assert len(RecordingFit.fits) == 1
    again = Session(settings, progress=False).case(Case("recording", "toy", "segmentation"))
    assert len(RecordingFit.fits) == 1 and again.cache.hits == 10 and again.cache.predicted == 0


ROBUST = {"robustness": {"perturbations": ["brightness"], "ladders": {"brightness": [0.05, 0.1, 0.35]},
                         "gate_level": 2, "max_flip_rate": 0.1}}


def test_a_model_that_always_answers_ok_is_not_called_robust():
    """It never flips, so a flip-rate gate alone would pass it: its clean recall marks it meaningless."""
    evaluator = Session(_settings(pipelines=["toy_empty"], raw=ROBUST), progress=False)
    result = evaluator.invariance(Case("toy_empty", "toy", "segmentation"), "brightness")
    assert [row.flip_rate for row in result.robustness.levels] == [0.0, 0.0, 0.0]
    assert result.id == "toy_empty-toy-brightness" and result.task == "robustness"
    assert result.outcome == "skipped" and result.metrics["clean_recall"] == 0.0
    assert result.message.startswith("not meaningful: the unperturbed run finds 0.0% of the defects, below the "
                                     "floor 80.0% ([robustness] min_clean_recall)")


def test_the_recall_floor_follows_the_config():
    raw = {"robustness": {**ROBUST["robustness"], "min_clean_recall": 0.0}}
    evaluator = Session(_settings(pipelines=["toy_empty"], raw=raw), progress=False)
    assert evaluator.invariance(Case("toy_empty", "toy", "segmentation"), "brightness").outcome == "passed"


def test_a_brittle_pipeline_is_caught_at_the_gated_severity():
    evaluator = Session(_settings(raw=ROBUST), progress=False)
    result = evaluator.invariance(Case("toy_threshold", "toy", "segmentation"), "brightness")
    rows = result.robustness.levels
    assert rows[0].flip_rate == 0.0  # a small drift leaves the fixed threshold alone
    assert rows[2].flip_rate >= 0.5 and rows[2].false_alarm_rate > 0.5  # background crosses it
    # the flips are good parts turned NOK: new false alarms, not new slips
    assert rows[2].new_false_alarms == 6 * rows[2].new_false_alarm_rate > 0 and rows[2].new_slips == 0
    assert rows[2].clean_recall == 1.0 and rows[2].clean_false_alarm_rate == 0.0
    assert result.outcome == "failed"
    assert "of verdicts flip at brightness=0.35 (tolerance 10.0%)" in result.message


def test_a_pipeline_that_learns_from_labels_is_scored_by_cross_validation():
    toy_fmtest.ToyLearned.seen.clear()
    evaluator = Session(_settings(pipelines=["toy_learned"]), progress=False)
    result = evaluator.case(Case("toy_learned", "toy", "segmentation"))
    folds = toy_fmtest.ToyLearned.seen
    assert len(folds) == 2
    for fitted_on, predicted in folds:
        assert fitted_on.isdisjoint(predicted) and fitted_on | predicted == set(Toy().test.ids)
    assert {i.id for i in result.images} == set(Toy().test.ids)  # every image, each once
    assert set(result.breakdown) == {"toy/fold1", "toy/fold2"}
    assert [r["n_defective"] for r in result.breakdown.values()] == [2.0, 2.0]  # stratified
    assert result.metrics["f2"] == 1.0


def test_every_metric_a_case_records_has_a_spec():
    """Renderers and gates read fmtest.metrics.specs: a metric without a spec would be shown and
    judged by guesswork."""
    from fmtest.metrics.specs import spec

    evaluator = Session(_settings(raw=ROBUST), progress=False)
    case = Case("toy_threshold", "toy", "segmentation")
    recorded = set(evaluator.case(case).metrics) | set(evaluator.invariance(case, "brightness").metrics)
    assert recorded >= {"iou", "f2", "flip_rate", "delta_iou"}
    assert [name for name in recorded if spec(name) is None] == []


def test_guardrail_findings_are_attached_and_kept_beside_the_cache(tmp_path, monkeypatch):
    raw = {"datasets": {"toy": {"leak_train_image": True}}, "guardrails": {"alignment": False}}
    settings = _settings(raw=raw, cache_dir=tmp_path)
    result = Session(settings, progress=False).case(Case("toy_threshold", "toy", "segmentation"))
    leaks = [f for f in result.data_quality if f.kind == "near_duplicate"]
    assert [f.image_id for f in leaks] == ["test/000"]

    import fmtest.run.guardrails

    monkeypatch.setattr(fmtest.run.guardrails, "check_data_quality", lambda *a, **k: pytest.fail("recomputed"))
    again = Session(settings, progress=False).case(Case("toy_threshold", "toy", "segmentation"))
    assert again.data_quality == result.data_quality


def test_guardrails_can_be_switched_off_per_dataset():
    raw = {"datasets": {"toy": {"leak_train_image": True}}, "guardrails": {"toy": {"enabled": False}}}
    result = Session(_settings(raw=raw), progress=False).case(Case("toy_threshold", "toy", "segmentation"))
    assert result.data_quality == []


def test_a_robustness_subset_holds_both_labels_in_the_test_sets_share():
    """Toy's first ids are its 14 good images: the first 10 would hold no defective and judge nothing."""
    raw = {"robustness": {**ROBUST["robustness"], "n_images": 10},
           "datasets": {"toy": {"n_good": 14, "n_defective": 6}}}
    result = Session(_settings(raw=raw), progress=False).invariance(Case("toy_threshold", "toy", "segmentation"),
                                                                   "brightness")
    assert result.metrics["clean_recall"] == 1.0  # defined: the subset holds defective images
    from fmtest.data.shards import stratified_subset

    chosen = stratified_subset(Toy(n_good=14, n_defective=6).test, 10)
    assert [r.label for r in chosen].count("NOK") == 3 and len(chosen) == 10  # 6 of 20 -> 3 of 10
    assert stratified_subset(Toy(n_good=14, n_defective=1).test, 3) and \
        {r.label for r in stratified_subset(Toy(n_good=14, n_defective=1).test, 3)} == {"OK", "NOK"}


def test_a_robustness_subset_too_small_for_its_gate_is_refused_when_the_config_loads():
    from fmtest.config.suite import parse_config
    from fmtest.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[robustness\] n_images = 8: too few images to judge; one flipped "
                                          r"verdict would be 12.5%, above max_flip_rate 10.0%.*at least 10"):
        parse_config({"robustness": {"n_images": 8}})
    parse_config({"robustness": {"n_images": 8, "max_flip_rate": 0.125}})  # one flip within the tolerance
