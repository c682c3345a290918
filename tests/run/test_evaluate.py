"""evaluate + finish: per-image rows, the checks on a pipeline's answers, threshold verdicts (minimum and
max_ thresholds), cache use, risk, and an unjudgeable case's withheld figures."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from toy_fmtest import Toy, ToyEmpty, ToyMapped, ToyThreshold

from fmtest.config.suite import SuiteConfig
from fmtest.errors import PipelineError
from fmtest.pipelines.base import PipelineContext
from fmtest.run.cache import PredictionCache
from fmtest.run.evaluate import Part, collect_case, predict_all
from fmtest.run.plan import Case
from fmtest.verdict.finish import finish_case
from fmtest.verdict.gates import threshold_failures
from fmtest.verdict.results import CaseResult, ImageResult
from fmtest.verdict.scoring import risk_summary


def _rules(thresholds):
    return replace(SuiteConfig().rules, thresholds=thresholds, bootstrap_resamples=200)


def _case(pipeline_cls, thresholds, **kw):
    case = Case(pipeline_cls.name, "toy", "segmentation")
    parts = [Part.of(pipeline_cls(PipelineContext(dataset="toy")), group) for group in Toy().groups()]
    return finish_case(collect_case(case, parts, progress=False, **kw), _rules(thresholds))


def test_perfect_pipeline_passes_with_exact_metrics():
    result = _case(ToyThreshold, {"iou": 0.6, "f2": 0.8})
    assert result.outcome == "passed" and result.message is None
    assert result.metrics["iou"] == pytest.approx(1.0) and result.metrics["f2"] == pytest.approx(1.0)
    assert result.metrics["n_images"] == 10 and result.metrics["n_defective"] == 4
    assert [i.iou for i in result.images if i.label == "NOK"] == [1.0] * 4
    assert len(result.thumbnails) == 8


def test_failure_message_gives_value_interval_and_threshold():
    result = _case(ToyEmpty, {"iou": 0.6})
    assert result.outcome == "failed"
    assert result.message.startswith("iou = 0.000 (95% CI [0.000, 0.000]) is below the threshold 0.600")
    # the worst images strip starts with the missed defects
    assert result.thumbnails[0].caption.endswith("NOK -> OK, IoU 0.00")


def test_max_thresholds_are_upper_limits():
    r = CaseResult(id="x", pipeline="p", dataset="d", task="classification",
                   metrics={"false_alarm_rate": 0.08, "f2": 0.9}, thresholds={"max_false_alarm_rate": 0.05, "f2": 0.8})
    assert threshold_failures(r) == ["false_alarm_rate = 0.080 is above the maximum 0.050"]
    r.metrics["false_alarm_rate"] = 0.05
    assert threshold_failures(r) == []
    r.metrics["f2"] = math.nan
    assert threshold_failures(r) == ["f2 = n/a is below the threshold 0.800"]


def test_thresholds_for_metrics_a_case_lacks_are_not_applied():
    result = _case(ToyThreshold, {"iou": 0.6, "max_false_alarm_rate": 0.1, "auprc": 0.9})
    assert set(result.thresholds) == {"iou", "max_false_alarm_rate"}


def test_predict_all_uses_the_cache_and_times_only_real_predictions(tmp_path):
    calls = []

    class Counting(ToyThreshold):
        def predict(self, samples):
            calls.append(len(samples))
            return super().predict(samples)

    pipeline, cache = Counting(PipelineContext(dataset="toy")), PredictionCache(tmp_path)
    timing: dict = {}
    first = list(predict_all(pipeline, Toy().test, cache=cache, progress=False, timing=timing))
    assert sum(calls) == 10 and timing["images"] == 10 and not any(hit for *_, hit in first)
    timing = {}
    second = list(predict_all(pipeline, Toy().test, cache=cache, progress=False, timing=timing))
    assert sum(calls) == 10 and timing == {} and all(hit for *_, hit in second)
    assert all(np.array_equal(a[1].mask, b[1].mask) for a, b in zip(first, second))


def test_pipeline_returning_a_wrong_size_mask_is_reported():
    class Wrong(ToyThreshold):
        def predict(self, samples):
            return [type(p)(label=p.label, mask=p.mask[:-1]) for p in super().predict(samples)]

    with pytest.raises(PipelineError, match=r"toy_threshold for test/000: a \(31, 32\) mask for an image of \(32, 32\)"):
        _case(Wrong, {})


def test_pipeline_returning_a_wrong_size_score_map_is_reported():
    class Wrong(ToyMapped):
        def predict(self, samples):
            return [replace(p, score_map=p.score_map[:, :-2]) for p in super().predict(samples)]

    with pytest.raises(PipelineError, match=r"toy_mapped for test/000: a \(32, 30\) score map for an image of "
                                            r"\(32, 32\)"):
        _case(Wrong, {})


def test_region_summaries_are_recorded_for_score_maps_on_masks_and_not_for_perturbed_copies():
    mapped = _case(ToyMapped, {})
    assert all(i.region is not None and i.region.image_id == i.id for i in mapped.images)
    assert mapped.regions is not None and mapped.regions.n_regions == 4 and "au_pro" in mapped.metrics
    case = Case("toy_mapped", "toy", "segmentation")
    parts = [Part.of(ToyMapped(PipelineContext(dataset="toy")), group) for group in Toy().groups()]
    unsummarised = collect_case(case, parts, progress=False, summarise_regions=False)
    assert all(i.region is None for i in unsummarised.images)


@pytest.mark.parametrize("extra", [1, -1])
def test_a_pipeline_answering_more_or_fewer_images_than_asked_errors(extra):
    class Miscounting(ToyThreshold):
        def predict(self, samples):
            predictions = super().predict(samples)
            return predictions + predictions[:1] if extra > 0 else predictions[:-1]

    with pytest.raises(PipelineError, match=r"toy_threshold returned (9|7) predictions for 8 images"):
        _case(Miscounting, {})


@pytest.mark.parametrize("spoil, reason", [
    (lambda p: replace(p, label="maybe"), "answer 'maybe' is neither OK nor NOK"),
    (lambda p: replace(p, score=math.nan), "score nan is not a finite number"),
    (lambda p: replace(p, score=math.inf), "score inf is not a finite number"),
    (lambda p: replace(p, label="OK"), "label OK contradicts its mask, which marks 100 defect pixels"),
])
def test_an_unusable_answer_is_counted_never_read_as_ok(spoil, reason):
    """An unknown label, a NaN score, a defect mask under an OK label: each is an unusable answer, so the
    case cannot be judged (max_invalid_answer_rate 0) and shows no figure."""
    class Spoiled(ToyThreshold):
        def predict(self, samples):
            return [spoil(p) for p in super().predict(samples)]

    result = _case(Spoiled, {"iou": 0.6, "max_invalid_answer_rate": 0.0})
    assert result.outcome == "error" and reason in result.message
    spoiled = [i for i in result.images if i.error is not None]
    assert spoiled and all(i.predicted == "NOK" for i in spoiled)
    assert "iou" not in result.metrics and "f2" not in result.metrics and not result.breakdown
    assert result.metrics["invalid_answer_rate"] == len(spoiled) / 10 and result.metrics["n_images"] == 10


def test_a_defect_found_but_not_located_is_an_answer_with_no_overlap():
    """NOK with an empty mask: the part is rejected (no slip), the defect was not located (IoU 0)."""
    class Unlocated(ToyThreshold):
        def predict(self, samples):
            return [replace(p, mask=np.zeros_like(p.mask)) for p in super().predict(samples)]

    result = _case(Unlocated, {"iou": 0.6})
    defective = [i for i in result.images if i.label == "NOK"]
    assert all(i.error is None and i.predicted == "NOK" and i.iou == 0.0 for i in defective)
    assert result.outcome == "failed" and result.metrics["recall"] == 1.0 and result.metrics["iou"] == 0.0


def test_risk_summary_says_when_the_test_set_is_too_small():
    images = [ImageResult(str(i), "", "NOK" if i < 32 else "OK", "NOK" if i < 32 else "OK") for i in range(263)]
    risk = risk_summary(images, None, SuiteConfig().rules.risk)
    assert risk.slip_rate == 0.0 and risk.defectives_needed_for_target == 299
    assert risk.slip_rate_upper_95 == pytest.approx(1 - 0.05 ** (1 / 32))
    assert "NOT enough" in risk.verdict
    assert risk.auroc_threshold_free_not_a_factory_figure is None  # no scores, no AUROC


def test_thumbnails_kept_beside_the_cache_are_the_same_bytes(tmp_path, monkeypatch):
    """A warm rerun reads each worst image's PNG from the cache folder instead of drawing it: same thumbnails
    as without a cache; a damaged stored file is drawn again."""
    from fmtest.run import evaluate

    without = _case(ToyEmpty, {"iou": 0.6}).thumbnails
    with PredictionCache(tmp_path) as cache:
        cold = _case(ToyEmpty, {"iou": 0.6}, cache=cache).thumbnails
        stored = sorted((tmp_path / "thumbnails").iterdir())
        assert len(stored) == len({t.png_base64 for t in cold}) > 0
        monkeypatch.setattr(evaluate, "overlay_thumbnail", lambda *a, **k: pytest.fail("drawn again"))
        warm = _case(ToyEmpty, {"iou": 0.6}, cache=cache).thumbnails
        monkeypatch.undo()
        stored[0].write_bytes(stored[0].read_bytes()[:50])  # truncated: not a whole PNG
        damaged = _case(ToyEmpty, {"iou": 0.6}, cache=cache).thumbnails
    assert without == cold == warm == damaged
