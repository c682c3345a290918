"""Regression gate against a baseline run, with hand-built results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmtest import __version__
from fmtest.errors import ConfigError, DataError
from fmtest.report.results_file import read_json, write_json
from fmtest.verdict.regression import (
    compare_to_baseline,
    format_regression,
    format_summary,
    incompatibility,
    recorded_comparisons,
)
from fmtest.verdict.results import CaseResult, ImageResult, RunResults
from fmtest.verdict.scoring import score_images


def _case(case_id: str, labels, predicted, ious=None, *, shas=None, with_images: bool = True) -> CaseResult:
    """A case whose metrics are computed from its per-image records, as the evaluation layer does."""
    n = len(labels)
    shas = shas or [f"sha{i}" for i in range(n)]
    ious = list(ious) if ious is not None else [None] * n
    images = [ImageResult(id=f"img{i:03d}", sha256=shas[i], label=labels[i], predicted=predicted[i], iou=ious[i])
              for i in range(n)]
    scored = any(v is not None for v, lab in zip(ious, labels) if lab == "NOK")
    metrics = score_images(images, task="segmentation" if scored else "classification", n_resamples=200, seed=0)
    pipeline, dataset = case_id.split("-")
    return CaseResult(id=case_id, pipeline=pipeline, dataset=dataset, task="segmentation",
                      metrics=metrics, images=images if with_images else [], dataset_fingerprint="fp-" + dataset)


def _run(*cases: CaseResult, version: str = __version__) -> RunResults:
    return RunResults(cases=list(cases), fmtest_version=version)


N_GOOD, N_BAD = 40, 40
BOOT = {"n_resamples": 1000, "seed": 0}
LABELS = ["OK"] * N_GOOD + ["NOK"] * N_BAD
RNG = np.random.default_rng(0)
BASE_IOU = np.concatenate([np.ones(N_GOOD), RNG.uniform(0.5, 0.8, N_BAD)])


def test_paired_iou_drop_outside_noise_fails_with_a_clear_message():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU)
    worse = BASE_IOU.copy()
    worse[N_GOOD:] -= RNG.uniform(0.05, 0.09, N_BAD)  # every defective image a little worse
    comparison = compare_to_baseline(_run(_case("padim-satsim", LABELS, LABELS, worse)), _run(base), 0.02, **BOOT)["padim-satsim"]
    assert comparison.status == "compared" and comparison.paired and comparison.regressed
    iou = comparison.metrics["iou"]
    assert iou.delta == pytest.approx(worse[N_GOOD:].mean() - BASE_IOU[N_GOOD:].mean())
    assert iou.ci_high < 0 and iou.significant  # the interval of the change excludes 0
    assert iou.ci_low <= iou.delta <= iou.ci_high
    message = format_regression(comparison)
    assert message.startswith(f"iou dropped {-iou.delta:.3f} ({iou.baseline:.3f} -> {iou.current:.3f}), tolerance 0.02;")
    assert "paired bootstrap 95% CI of the change [" in message and message.endswith("outside noise")
    assert not comparison.metrics["f2"].regressed  # labels unchanged
    case = _case("padim-satsim", LABELS, LABELS, worse)
    comparison.record(case)
    changes = case.baseline.changes
    assert changes["iou"].regressed is True and changes["f2"].regressed is False
    assert case.baseline.status == "compared" and case.baseline.regressed


def test_drop_beyond_tolerance_but_within_noise_still_fails_and_says_so():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU)
    noisy = BASE_IOU.copy()
    swing = np.where(np.arange(N_BAD) % 2 == 0, 0.4, -0.47)  # large per-image swings, small mean drop
    noisy[N_GOOD:] = np.clip(noisy[N_GOOD:] + swing, 0, 1)
    comparison = compare_to_baseline(_run(_case("padim-satsim", LABELS, LABELS, noisy)), _run(base), 0.02, **BOOT)["padim-satsim"]
    iou = comparison.metrics["iou"]
    assert iou.regressed and iou.delta < -0.02
    assert iou.ci_low < 0 < iou.ci_high and iou.significant is False
    assert "within noise" in format_regression(comparison)


def test_change_within_tolerance_passes():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU)
    close = BASE_IOU.copy()
    close[N_GOOD:] -= 0.01
    comparison = compare_to_baseline(_run(_case("padim-satsim", LABELS, LABELS, close)), _run(base), 0.02, **BOOT)["padim-satsim"]
    assert comparison.status == "compared" and not comparison.regressed
    assert comparison.metrics["iou"].delta == pytest.approx(-0.01)
    assert "no metric dropped" in format_regression(comparison)


def test_paired_f2_drop_from_missed_defects():
    base = _case("gemini_basic-mvtec", LABELS, LABELS)
    missed = LABELS[:N_GOOD] + ["OK"] * 15 + ["NOK"] * (N_BAD - 15)  # 15 defects now slip
    comparison = compare_to_baseline(_run(_case("gemini_basic-mvtec", LABELS, missed)), _run(base), 0.02, **BOOT)
    f2 = comparison["gemini_basic-mvtec"].metrics["f2"]
    assert f2.baseline == 1.0 and f2.current < 0.8 and f2.regressed
    assert f2.ci_high < 0 and f2.significant
    recall = comparison["gemini_basic-mvtec"].metrics["recall"]
    assert recall.regressed and recall.ci_high < 0 and recall.significant  # every gated metric gets its paired interval
    assert "recall dropped 0.375 (1.000 -> 0.625), tolerance 0.02; paired bootstrap 95% CI of the change" in \
        format_regression(comparison["gemini_basic-mvtec"])


def test_more_false_alarms_is_a_regression():
    base = _case("padim-elpv", LABELS, LABELS)
    alarms = ["NOK"] * 10 + LABELS[10:]
    comparison = compare_to_baseline(_run(_case("padim-elpv", LABELS, alarms)), _run(base), 0.02, **BOOT)["padim-elpv"]
    far = comparison.metrics["false_alarm_rate"]
    assert far.delta == pytest.approx(0.25) and far.regressed
    assert "false_alarm_rate rose 0.250 (0.000 -> 0.250)" in format_regression(comparison)


def test_improvement_is_not_a_regression():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU)
    better = BASE_IOU.copy()
    better[N_GOOD:] = np.minimum(better[N_GOOD:] + 0.1, 1)
    comparison = compare_to_baseline(_run(_case("padim-satsim", LABELS, LABELS, better)), _run(base), 0.02, **BOOT)
    iou = comparison["padim-satsim"].metrics["iou"]
    assert not comparison["padim-satsim"].regressed and iou.delta > 0.05 and iou.ci_low > 0


def test_unpaired_when_the_baseline_has_no_per_image_results():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU, with_images=False)
    worse = BASE_IOU.copy()
    worse[N_GOOD:] -= 0.1
    comparison = compare_to_baseline(_run(_case("padim-satsim", LABELS, LABELS, worse)), _run(base), 0.02, **BOOT)["padim-satsim"]
    assert comparison.status == "compared" and not comparison.paired and comparison.regressed
    assert comparison.metrics["iou"].ci_low is None and comparison.metrics["iou"].significant is None
    assert "unpaired comparison (the baseline has no per-image results): no noise estimate" in format_regression(comparison)
    assert "unpaired" in comparison.message


def test_new_and_vanished_cases_are_reported_not_compared():
    base = _run(_case("padim-satsim", LABELS, LABELS, BASE_IOU), _case("sam_clip-satsim", LABELS, LABELS, BASE_IOU))
    cur = _run(_case("padim-satsim", LABELS, LABELS, BASE_IOU), _case("padim-elpv", LABELS, LABELS))
    comparisons = compare_to_baseline(cur, base, 0.02, **BOOT)
    assert {k: c.status for k, c in comparisons.items()} == {
        "padim-satsim": "compared", "padim-elpv": "new", "sam_clip-satsim": "vanished"}
    assert not any(c.regressed for c in comparisons.values())
    summary = format_summary(comparisons)
    assert "1 compared, 1 new, 1 vanished" in summary and "vanished: sam_clip-satsim" in summary


def test_the_run_summary_reads_what_each_case_recorded_instead_of_comparing_again():
    worse = BASE_IOU.copy()
    worse[N_GOOD:] -= 0.2
    base = _run(_case("padim-satsim", LABELS, LABELS, BASE_IOU), _case("sam_clip-satsim", LABELS, LABELS, BASE_IOU))
    cur = _run(_case("padim-satsim", LABELS, LABELS, worse), _case("padim-elpv", LABELS, LABELS))
    computed = compare_to_baseline(cur, base, 0.02, **BOOT)
    for case in cur.cases:
        computed[case.id].record(case)
    recorded = recorded_comparisons(cur, base)
    assert format_summary(recorded) == format_summary(computed)
    assert recorded["padim-satsim"].regressed and recorded["padim-satsim"].metrics["iou"].ci_high < 0
    assert format_regression(recorded["padim-satsim"]) == format_regression(computed["padim-satsim"])


def test_changed_image_hashes_mean_dataset_changed():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU)
    shas = [f"sha{i}" for i in range(len(LABELS))]
    shas[3] = "different"
    cur = _case("padim-satsim", LABELS, LABELS, BASE_IOU - 0.2, shas=shas)
    comparison = compare_to_baseline(_run(cur), _run(base), 0.02, **BOOT)["padim-satsim"]
    assert comparison.status == "dataset_changed" and not comparison.metrics and not comparison.regressed
    assert "1 image(s) with different content (sha256)" in comparison.message
    assert "dataset changed" in format_summary({"padim-satsim": comparison})


def test_added_images_and_changed_labels_mean_dataset_changed():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU)
    relabelled = ["NOK"] + LABELS[1:] + ["OK"]
    cur = _case("padim-satsim", relabelled, relabelled, list(BASE_IOU) + [1.0])
    message = compare_to_baseline(_run(cur), _run(base), 0.02, **BOOT)["padim-satsim"].message
    assert "1 image(s) added" in message and "1 label(s) changed" in message


def test_dataset_fingerprint_used_when_per_image_results_are_missing():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU, with_images=False)
    cur = _case("padim-satsim", LABELS, LABELS, BASE_IOU, with_images=False)
    cur.dataset_fingerprint = "another"
    comparison = compare_to_baseline(_run(cur), _run(base), 0.02, **BOOT)["padim-satsim"]
    assert comparison.status == "dataset_changed" and "fp-satsim -> another" in comparison.message


def test_baseline_of_another_major_or_unknown_version_is_incompatible():
    cur = _run(_case("padim-satsim", LABELS, LABELS, BASE_IOU))
    for version in ("unknown", "99.0.0"):
        base = _run(_case("padim-satsim", LABELS, LABELS, BASE_IOU - 0.3), version=version)
        comparison = compare_to_baseline(cur, base, 0.02, **BOOT)["padim-satsim"]
        assert comparison.status == "incompatible" and not comparison.regressed
        assert version in comparison.message and "rerun the baseline" in comparison.message
    assert incompatibility(_run(version=__version__)) is None


def test_baseline_for_other_datasets_says_so():
    base = _run(_case("padim-mvtec", LABELS, LABELS, BASE_IOU))
    comparisons = compare_to_baseline(_run(_case("padim-satsim", LABELS, LABELS, BASE_IOU)), base, 0.02, **BOOT)
    assert "made for other datasets or pipelines" in format_summary(comparisons)


def test_non_numeric_baseline_metric_is_incompatible_not_a_crash():
    base = _case("padim-satsim", LABELS, LABELS, BASE_IOU)
    base.metrics["iou"] = "0.6"
    comparison = compare_to_baseline(_run(_case("padim-satsim", LABELS, LABELS, BASE_IOU)), _run(base), 0.02, **BOOT)
    assert comparison["padim-satsim"].status == "incompatible" and "iou" in comparison["padim-satsim"].message
    base.metrics = None  # a file whose case holds "metrics": null
    comparison = compare_to_baseline(_run(_case("padim-satsim", LABELS, LABELS, BASE_IOU)), _run(base), 0.02, **BOOT)
    assert comparison["padim-satsim"].status == "incompatible" and "no metrics" in comparison["padim-satsim"].message


def test_skipped_case_has_nothing_to_compare():
    skipped = CaseResult(id="gdino_sam-satsim", pipeline="gdino_sam", dataset="satsim", task="segmentation",
                         outcome="skipped")
    base = _case("gdino_sam-satsim", LABELS, LABELS, BASE_IOU)
    comparison = compare_to_baseline(_run(skipped), _run(base), 0.02, **BOOT)["gdino_sam-satsim"]
    assert comparison.status == "compared" and not comparison.metrics
    assert "nothing to compare (this run: skipped)" in comparison.message


def test_negative_tolerance_is_a_config_error():
    with pytest.raises(ConfigError, match="tolerance"):
        compare_to_baseline(_run(), _run(), -0.1, **BOOT)


def test_a_baseline_file_round_trips_and_an_unreadable_one_is_named(tmp_path):
    path = tmp_path / "results.json"
    write_json(_run(_case("padim-satsim", LABELS, LABELS, BASE_IOU)), path)
    assert read_json(path).case("padim-satsim").metrics["iou"] == pytest.approx(BASE_IOU[N_GOOD:].mean())

    old = tmp_path / "old.json"  # an older layout: cases keyed by name, images without hashes
    old.write_text(json.dumps({"fmtest_version": "0.0.3", "cases": [
        {"name": "padim-satsim", "metrics": {"iou": 0.5}, "images": [{"id": "a", "label": "OK"}]}]}))
    with pytest.raises(DataError) as err:
        read_json(old)
    assert str(old) in str(err.value) and "fmtest 0.0.3" in str(err.value) and "rerun" in str(err.value)

    with pytest.raises(DataError, match="not a JSON results file"):
        (tmp_path / "broken.json").write_text("{")
        read_json(tmp_path / "broken.json")
