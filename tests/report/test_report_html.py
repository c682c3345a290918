import dataclasses
import html as htmllib
import json
import re

import numpy as np
import pytest

from fmtest.imaging.overlay import overlay_thumbnail
from fmtest.report.html import render_html, write_html
from fmtest.report.html_case_charts import image_outcome, worst_first
from fmtest.run.guardrails import Finding
from fmtest.verdict.results import (
    BaselineComparison,
    CaseResult,
    ImageResult,
    LayerManifest,
    LevelRow,
    MetricChange,
    Risk,
    Robustness,
    RunConfig,
    RunResults,
    Thumbnail,
)

EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def thumb(image_id):
    image = np.full((32, 32), 0.5, np.float32)
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    return Thumbnail(image_id, overlay_thumbnail(image, mask, mask), f"{image_id} iou 0.40")


@pytest.fixture
def run():
    seg = CaseResult("padim-satsim", "padim", "satsim", "segmentation", "failed",
                     "iou 0.410 [0.350, 0.470] < threshold 0.60",
                     metrics={"iou": 0.41, "iou_ci_low": 0.35, "iou_ci_high": 0.47, "f2": 0.8, "n_images": 3,
                              "n_defective": 2},
                     thresholds={"iou": 0.6, "f2": 0.8},
                     images=[ImageResult("test/void/003", "s", "NOK", "NOK", 0.93, 0.52),
                             ImageResult("test/void/004", "s", "NOK", "OK", 0.1, 0.0),
                             ImageResult("test/good/001", "s", "OK", "NOK", 0.7, None)],
                     thumbnails=[thumb("test/void/003"), Thumbnail("bad", 'AAAA"><script>alert(2)</script>')],
                     model_sha256="abc123",
                     robustness=Robustness("blur", 2, [LevelRow("blur", 2, flip_rate=0.1, delta_iou=-0.05,
                                                                delta_f2=-0.02, false_alarm_rate=0.03, slip_rate=0.01,
                                                                outcome="failed")]),
                     baseline=BaselineComparison("compared", "compared with the baseline", 0.02, changes={
                         "iou": MetricChange(baseline=0.5, current=0.41, delta=-0.09, ci_low=-0.12, ci_high=-0.05,
                                             regressed=True)}),
                     data_quality=[Finding("duplicate", "test/void/003", EVIL)])
    cls = CaseResult("gemini_basic-mvtec", "gemini_basic", "mvtec", "classification", "passed",
                     metrics={"f2": 0.99, "f2_ci_low": 0.97, "f2_ci_high": 1.0},
                     thresholds={"f2": 0.8},
                     images=[ImageResult("m/1", "s", "NOK", "NOK", reasoning=EVIL),
                             ImageResult("m/2", "s", "OK", "NOK", error="unparseable answer")],
                     risk=Risk(slip_rate=0.03, slip_rate_ci_low=0.01, slip_rate_ci_high=0.08, false_alarm_rate=0.02,
                               false_alarm_rate_ci_low=0.01, false_alarm_rate_ci_high=0.05,
                               defectives_needed_for_target=299, target_slip_rate=0.01,
                               recall_at_false_alarm_budget=0.7, false_alarm_budget=0.01,
                               auroc_threshold_free_not_a_factory_figure=0.97),
                     usage={"input_tokens": 1200, "cost_usd": 0.5}, invalid_answers=1)
    skip = CaseResult("sam_clip-satsim", "sam_clip", "satsim", "segmentation", "skipped",
                      f"weights missing {EVIL}")
    robust = CaseResult("padim-satsim-blur", "padim", "satsim", "robustness", "passed",
                        metrics={"flip_rate": 0.05, "delta_iou": -0.01}, thresholds={"max_flip_rate": 0.1,
                                                                                     "max_metric_drop": 0.05},
                        robustness=Robustness("blur", 2, [LevelRow("blur", 2, flip_rate=0.05)]))
    return RunResults(cases=[seg, cls, skip, robust], created="2026-11-22T18:00:00Z", git_commit="deadbeef",
                      environment={"python": "3.11.7", "torch": "2.14.1"}, config=RunConfig(config_file="suites/fmtest.toml"))


def case_payloads(document):
    """The per-case JSON the page renders from, keyed by the case id of its <details>."""
    found = re.findall(r"<details class='case [^']*' id='([^']*)' data-index='(\d+)'.*?"
                       r"<script type='application/json' id='fm-case-data-\2'>(.*?)</script>", document, re.DOTALL)
    return {htmllib.unescape(case_id): json.loads(body) for case_id, _, body in found}


def test_matrix_has_a_cell_per_case_coloured_by_outcome(run):
    document = render_html(run)
    for case in run.cases[:3]:
        assert f"<td class='cell o-{case.outcome}' data-case='{case.id}'>" in document
    # robustness cases are summed up in their pair's cell, linking to their row of the robustness matrix
    assert ("<a class='sub o-passed' href='#fm-rob-padim-satsim'><span class='badge'>PASS</span> robustness 0/1 "
            "failed</a>") in document
    assert "id='fm-rob-padim-satsim'" in document
    assert "iou 0.410" in document and "[0.350, 0.470]" in document and "threshold 0.60" in document
    assert "n=3 (2 NOK)" in document
    assert document.count("class='cell empty'") == 3  # pairs that were not run (2 pipelines x 3 datasets - 3)
    assert "regressed: iou" in document


def test_header_shows_run_commit_and_versions(run):
    document = render_html(run)
    assert "2026-11-22T18:00:00Z" in document and "deadbeef" in document
    assert "torch <code>2.14.1</code>" in document


def test_model_text_is_escaped_everywhere(run):
    document = render_html(run)
    assert "<script>alert" not in document and "<img src=x" not in document
    assert document.count("<script") == len(run.cases) + 1  # the data blocks and the page's own script
    payloads = case_payloads(document)
    assert len(payloads) == 4
    detail = payloads["padim-satsim"]["detail_html"]
    assert "<script>" not in detail and htmllib.escape(EVIL) in detail
    assert "bad: thumbnail unreadable" in detail  # an invalid base64 payload is not put in an attribute
    columns, rows = payloads["gemini_basic-mvtec"]["columns"], payloads["gemini_basic-mvtec"]["rows"]
    reasoning = {row[columns.index("id")]: row[columns.index("reasoning")] for row in rows}
    assert reasoning["m/1"] == EVIL  # intact, set as text


def test_details_carry_metrics_extras_and_thumbnails(run):
    payloads = case_payloads(render_html(run, history_links={"padim-satsim": "history.html#padim-satsim"}))
    seg = payloads["padim-satsim"]["detail_html"]
    for text in ("Regression against the baseline", "REGRESSED", "Robustness", "blur", "Data quality",
                 "Worst images", "abc123", "history.html#padim-satsim",
                 "<span class='badge o-failed'>below</span>"):
        assert text in seg, text
    assert re.search(r"<img src='data:image/png;base64,[A-Za-z0-9+/=]+' alt='test/void/003 iou 0.40'>", seg)
    cls = payloads["gemini_basic-mvtec"]["detail_html"]
    assert "Risk at the operating point" in cls
    assert "0.030 [0.010, 0.080]" in cls and "0.020 [0.010, 0.050]" in cls and "0.700" in cls
    assert "slip rate ci low" not in cls  # folded into the slip rate row
    assert "threshold-free, not a factory figure" in cls
    target_row = re.search(r"<tr><th scope='row' title='target_slip_rate'>target slip rate</th>.*?</tr>", cls).group(0)
    assert "share of defective" not in target_row  # a setting, not a measured rate
    assert "input tokens" in cls and "1 model answer was unusable" in cls


def test_max_thresholds_bound_their_metric(run):
    robust = case_payloads(render_html(run))["padim-satsim-blur"]["detail_html"]
    assert re.search(r"title='flip_rate'>flip rate</th><td class='num'>0.050</td><td class='num'></td>"
                     r"<td class='num'>&le; 0.10</td><td><span class='badge o-passed'>meets", robust)
    # the metric drop it allows judges each metric change at the gated level, as the verdict does
    assert re.search(r"title='delta_iou'>\u0394 IoU</th><td class='num'>-0.010</td><td class='num'></td>"
                     r"<td class='num'>&ge; -0.05</td><td><span class='badge o-passed'>meets", robust)


def test_a_robustness_ladder_shows_value_tolerance_and_result_per_level_and_a_skip_only_its_reason():
    levels = [LevelRow("blur", 0.5, flip_rate=0.0, delta_iou=0.0), LevelRow("blur", 1.0, flip_rate=0.05, delta_iou=-0.01),
              LevelRow("blur", 2.0, flip_rate=0.25, delta_iou=-0.2)]
    judged = CaseResult("padim-satsim-blur", "padim", "satsim", "robustness", "passed",
                        metrics={"flip_rate": 0.05, "delta_iou": -0.01, "level": 1.0},
                        thresholds={"max_flip_rate": 0.1, "max_metric_drop": 0.05},
                        robustness=Robustness("blur", 1.0, levels))
    skipped = dataclasses.replace(judged, id="padim-satsim-jpeg", outcome="skipped",
                                  message="not meaningful: the unperturbed run finds 0.0% of the defects",
                                  robustness=Robustness("jpeg", 1.0, levels))
    document = render_html(RunResults(cases=[judged, skipped]))
    ladder = case_payloads(document)["padim-satsim-blur"]["detail_html"]
    ladder = ladder[ladder.index("<table class='ladder'>"):]
    assert "flip rate <span class='note'>(&le; 0.10)</span>" in ladder and "(&ge; -0.05)" in ladder
    rows = re.findall(r"<tr( class=gated)?><th scope='row' class='num'>([\d.]+)</th>(.*?)</tr>", ladder)
    assert [(severity, bool(gated)) for gated, severity, _ in rows] == [("0.5", False), ("1", True), ("2", False)]
    assert "PASS</span> gated" in rows[1][2]
    assert "not gated" in rows[2][2] and "PASS" not in rows[2][2]  # 0.25 > 0.10 there, but that level is not judged
    assert "beyond the tolerance; this level is not gated" in rows[2][2]
    cell = rob_cell(document, "padim-satsim-jpeg").group(2)
    assert "skipped: not meaningful" in cell and "flip" not in cell and "0.05" not in cell
    summary = re.search(r"<details class='case o-skipped' id='padim-satsim-jpeg'.*?</summary>", document).group(0)
    assert "flip rate" not in summary and "not meaningful" in summary
    detail = case_payloads(document)["padim-satsim-jpeg"]["detail_html"]
    assert "not meaningful" in detail and "<table class='ladder'>" not in detail and "flip rate" not in detail


def test_image_rows_are_data_not_dom(run):
    document = render_html(run)
    assert "test/void/004" not in document.split("<script type='application/json'")[0]
    seg = case_payloads(document)["padim-satsim"]
    assert seg["columns"] == ["id", "label", "predicted", "outcome", "score", "iou"]
    assert [r[3] for r in seg["rows"]] == ["slip", "false alarm", "correct"]  # worst first
    cls = case_payloads(document)["gemini_basic-mvtec"]
    assert "iou" not in cls["columns"] and {"reasoning", "error"} <= set(cls["columns"])


def test_self_contained(run, tmp_path):
    out = tmp_path / "sub" / "scoreboard.html"
    write_html(run, out)
    document = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", document)
    assert "<link" not in document and "@import" not in document
    assert "<style>" in document and "function renderCase" in document


def test_image_outcome():
    assert image_outcome(ImageResult("a", "", "NOK", "OK")) == "slip"
    assert image_outcome(ImageResult("a", "", "OK", "NOK")) == "false alarm"
    assert image_outcome(ImageResult("a", "", "OK", "OK")) == "correct"
    assert image_outcome(ImageResult("a", "", "NOK", "NOK", error="timeout")) == "error"


def test_failed_cases_listed_first():
    cases = [CaseResult(f"p{i}-d", f"p{i}", "d", "classification", o)
             for i, o in enumerate(["passed", "skipped", "failed", "error"])]
    order = re.findall(r"<details class='case o-(\w+)'", render_html(RunResults(cases=cases)))
    assert order == ["failed", "error", "passed", "skipped"]


# --------------------------------------------------------------------------- robustness, risk, data quality

LADDER = (0.5, 1.0, 2.0)


def robustness_case(pipeline, dataset, perturbation, flips, delta_iou=(None,) * 3, delta_f2=(0.0,) * 3,
                    outcome="passed", message=None):
    """Shaped like Session.invariance's result: gated (middle) level in metrics, every level in its ladder."""
    nan = float("nan")
    rows = [LevelRow(perturbation, level, flip_rate=f, delta_iou=nan if d_iou is None else d_iou, delta_f2=d_f2,
                     false_alarm_rate=0.0, slip_rate=0.0)
            for level, f, d_iou, d_f2 in zip(LADDER, flips, delta_iou, delta_f2, strict=True)]
    rows[1].outcome = outcome
    metrics = {"flip_rate": rows[1].flip_rate, "delta_iou": rows[1].delta_iou, "delta_f2": rows[1].delta_f2,
               "false_alarm_rate": 0.0, "slip_rate": 0.0}
    return CaseResult(f"{pipeline}-{dataset}-{perturbation}", pipeline, dataset, "robustness", outcome, message,
                      metrics=metrics, thresholds={"max_flip_rate": 0.1, "max_metric_drop": 0.05},
                      robustness=Robustness(perturbation, LADDER[1], rows))


@pytest.fixture
def robust_run(tmp_path):
    """Two pipelines x two perturbations, one pair missing; written and read back so NaN arrives as null."""
    from fmtest.report.results_file import read_json, write_json

    cases = [robustness_case("padim", "satsim", "blur", (0.02, 0.1, 0.3), (-0.01, -0.05, -0.2), (0.0, -0.02, -0.1),
                             "failed", "flip rate 0.100 ... iou drops 0.050"),
             robustness_case("padim", "satsim", "jpeg", (0.0, 0.0, 0.01), (0.0, 0.01, -0.01)),
             robustness_case("gemini_basic", "mvtec", "blur", (0.0, 0.04, 0.05), delta_f2=(0.0, -0.03, -0.04)),
             CaseResult("padim-satsim", "padim", "satsim", "segmentation", "passed", metrics={"iou": 0.7})]
    write_json(RunResults(cases=cases), tmp_path / "r.json")
    return read_json(tmp_path / "r.json")


def rob_cell(document, case_id):
    return re.search(rf"<td class='cell o-(\w+)' data-case='{re.escape(case_id)}'><a href='#{re.escape(case_id)}'"
                     r"[^>]*>(.*?)</a></td>", document)


def plot_svg(document, case_id):
    figure = re.search(rf"<figure class='rob-figure o-\w+' data-case='{re.escape(case_id)}'>(.*?)</figure>", document)
    return figure.group(1)


def series_points(svg, key):
    found = re.search(rf"<g class='series s-[\w]+' data-key='{key}'><polyline points='([^']*)'/>", svg)
    return None if found is None else [tuple(map(float, p.split(","))) for p in found.group(1).split()]


def test_robustness_matrix_shows_which_perturbation_breaks_which_pipeline(robust_run):
    document = render_html(robust_run)
    section = document[document.index("<h2 id='fm-robustness'>"):document.index("<h3>Metric vs severity")]
    assert re.findall(r"<th scope='col'>(\w+)<span class='gate-level'>gated at severity 1</span>", section) == ["blur", "jpeg"]
    assert re.findall(r"<tr id='fm-rob-([\w-]+)'>", section) == ["padim-satsim", "gemini_basic-mvtec"]
    outcome, body = rob_cell(section, "padim-satsim-blur").groups()
    assert outcome == "failed" and "FAIL" in body and "flip 0.100" in body
    assert "\u0394 IoU -0.050" in body  # the worse of the two metric changes at the gate
    outcome, body = rob_cell(section, "gemini_basic-mvtec-blur").groups()
    assert outcome == "passed" and "flip 0.040" in body and "\u0394 F2 -0.030" in body and "IoU" not in body
    assert "\u0394 F2 +0.000" in rob_cell(section, "padim-satsim-jpeg").group(2)  # IoU rose +0.010, F2 stayed
    assert section.count("class='cell empty'") == 1  # gemini_basic-mvtec was not run under jpeg
    assert "flip rate &le; 0.10, metric drop &le; 0.050" in section


def test_severity_plot_marks_gate_and_tolerances_where_the_data_lie(robust_run):
    svg = plot_svg(render_html(robust_run), "padim-satsim-blur")
    flips, ious, f2s = (series_points(svg, k) for k in ("flip_rate", "delta_iou", "delta_f2"))
    assert len(flips) == len(ious) == len(f2s) == 3
    gate_x = float(re.search(r"<line class='gate' data-level='1' x1='([\d.]+)'", svg).group(1))
    assert flips[1][0] == gate_x  # the gated (middle) level sits on the gate line
    assert flips[0][0] < flips[1][0] < flips[2][0]
    tol_flip = float(re.search(r"<line class='tol tol-flip' [^>]*y1='([\d.]+)'", svg).group(1))
    tol_drop = float(re.search(r"<line class='tol tol-drop' [^>]*y1='([\d.]+)'", svg).group(1))
    assert flips[1][1] == tol_flip and ious[1][1] == tol_drop  # both sit exactly on their tolerance
    assert flips[2][1] < tol_flip and ious[2][1] > tol_drop  # beyond tolerance: above / below the line
    assert re.search(r"aria-label='blur, levels 0.5, 1, 2: flip rate 0.020, 0.100, 0.300; \u0394 IoU -0.010", svg)


def test_severity_plot_leaves_out_metrics_that_do_not_apply(robust_run):
    svg = plot_svg(render_html(robust_run), "gemini_basic-mvtec-blur")  # classification: delta_iou is null
    assert series_points(svg, "delta_iou") is None
    assert len(series_points(svg, "flip_rate")) == 3 and len(series_points(svg, "delta_f2")) == 3


def test_plot_rows_wait_in_templates_and_collapse_when_many(robust_run, monkeypatch):
    import fmtest.report.html_robustness as report_robustness

    document = render_html(robust_run)
    rows = re.findall(r"<details class='rob-plots'( open)? data-pipeline='(\w+)'[^>]*><summary>(.*?)</summary>"
                      r"<template>(.*?)</template></details>", document)
    assert [(r[0], r[1]) for r in rows] == [(" open", "padim"), (" open", "gemini_basic")]
    assert "1 of 2 perturbations fail" in rows[0][2] and rows[0][3].count("<svg class='rob-plot'") == 2
    monkeypatch.setattr(report_robustness, "PLOTS_OPEN_LIMIT", 2)
    assert "<details class='rob-plots' open" not in render_html(robust_run)


def test_no_robustness_section_without_robustness_cases(run):
    run.cases = [c for c in run.cases if c.task != "robustness"]
    document = render_html(run)
    assert "<h2 id='fm-robustness'>" not in document and "<details class='rob-plots'" not in document
    assert "<h2 id='fm-data-quality'>" in document and "<h2 id='fm-risk'>" in document


def test_robustness_names_are_escaped():
    case = robustness_case(EVIL, "satsim", "blur", (0.0, 0.0, 0.0), outcome="error", message=EVIL)
    case.robustness.perturbation = EVIL
    case.robustness.levels[0].perturbation = EVIL
    document = render_html(RunResults(cases=[case]))
    assert "<script>alert" not in document and "<img src=x" not in document


def test_risk_overview_lists_factory_figures_per_case():
    risk = Risk(slip_rate=0.03, slip_rate_ci_low=0.01, slip_rate_ci_high=0.08, slip_rate_upper_95=0.07,
                false_alarm_rate=0.02, false_alarm_rate_ci_low=0.005, false_alarm_rate_ci_high=0.06,
                target_slip_rate=0.01, defectives_needed_for_target=299, n_defective=76,
                verdict="this test set has 76: NOT enough", auroc_threshold_free_not_a_factory_figure=0.97,
                false_alarm_budget=0.01, recall_at_false_alarm_budget=0.8, false_alarm_rate_at_budget_threshold=0.012)
    enough = dataclasses.replace(risk, n_defective=400, slip_rate=None, auroc_threshold_free_not_a_factory_figure=None,
                                 recall_at_false_alarm_budget=None, false_alarm_budget=None)
    cases = [CaseResult("padim-satsim", "padim", "satsim", "segmentation", risk=risk, train_scores=[0.1] * 40),
             CaseResult("gemini_basic-mvtec", "gemini_basic", "mvtec", "classification", risk=enough),
             CaseResult("padim-satsim-blur", "padim", "satsim", "robustness")]
    document = render_html(RunResults(cases=cases))
    table = re.search(r"<table class='risk' id='fm-risk-table'>(.*?)</table>", document).group(1)
    assert "<th class=num>AUROC (threshold-free)</th>" in table
    rows = dict(re.findall(r"<tr data-case='([\w-]+)'>(.*?)</tr>", table))
    assert list(rows) == ["padim-satsim", "gemini_basic-mvtec"]  # cases without a risk table are left out
    cells = re.findall(r"<td[^>]*><span>(.*?)</span></td>", rows["padim-satsim"])
    assert cells[:3] == ["0.030 [0.010, 0.080]", "0.070", "0.020 [0.005, 0.060]"]
    assert cells[3].startswith("76 / 299") and "slip &lt; 1.0%" in cells[3]
    assert "<b>NOT</b> enough defectives" in cells[4] and "title='this test set has 76" in cells[4]
    assert "o-" not in cells[4]  # a flag, not an outcome colour: no case passes or fails by it
    assert cells[5].startswith("0.800") and "threshold from 40 good training images for a 1.0% budget" in cells[5]
    assert "on good test parts it flagged 1.2%" in cells[5] and "budget missed" in cells[5]
    assert cells[6] == "0.970"
    cells = re.findall(r"<td[^>]*><span>(.*?)</span></td>", rows["gemini_basic-mvtec"])
    assert cells[0].startswith("n/a") and ">enough defectives<" in cells[4]
    assert "n/a" in cells[5] and cells[6] == "n/a"


def test_data_quality_listed_once_per_dataset():
    duplicate = Finding("duplicate", "test/void/003", EVIL)
    cases = [CaseResult("padim-satsim", "padim", "satsim", "segmentation",
                        data_quality=[duplicate, Finding("check_skipped", None, "no reference image")]),
             CaseResult("sam-satsim", "sam", "satsim", "segmentation", data_quality=[duplicate]),
             CaseResult("padim-mvtec", "padim", "mvtec", "segmentation",
                        data_quality=[Finding("empty_mask", "x/1", "NOK, empty")]),
             CaseResult("padim-elpv", "padim", "elpv", "classification", data_quality=[])]
    document = render_html(RunResults(cases=cases))
    section = document[document.index("<h2 id='fm-data-quality'>"):document.index("<h2>Cases</h2>")]
    blocks = dict(re.findall(r"<details class='dq' data-dataset='(\w+)' open>(.*?)</details>", section))
    assert list(blocks) == ["satsim", "mvtec"]  # elpv had no findings
    satsim_rows = re.findall(r"<tr><td>(.*?)</td><td><code>(.*?)</code></td><td>(.*?)</td></tr>", blocks["satsim"])
    assert satsim_rows == [("duplicate", "test/void/003", htmllib.escape(EVIL)),
                           ("check_skipped", "(dataset)", "no reference image")]
    assert "2 findings (1 duplicate, 1 check_skipped)" in blocks["satsim"]
    assert "1 finding (1 empty_mask)" in blocks["mvtec"]
    assert "<script>alert" not in section


# --------------------------------------------------------------------------- drill-down: order, verdicts, viewer

def scored_case(images=None, breakdown=None, **sections):
    images = images or [ImageResult("good/1", "s", "OK", "OK", 0.10), ImageResult("good/2", "s", "OK", "OK", 0.20),
                        ImageResult("good/3", "s", "OK", "NOK", 0.62), ImageResult("void/1", "s", "NOK", "NOK", 0.90, 0.7),
                        ImageResult("void/2", "s", "NOK", "NOK", 0.80, 0.2), ImageResult("void/3", "s", "NOK", "OK", 0.30, 0.0),
                        ImageResult("void/4", "s", "NOK", "OK", 0.05, 0.0)]
    return CaseResult("padim-satsim", "padim", "satsim", "segmentation", "failed", metrics={"iou": 0.3, "f2": 0.7},
                      thresholds={"iou": 0.6, "f2": 0.8}, images=images, breakdown=breakdown or {}, **sections)


def test_images_are_ordered_worst_first():
    ordered = [i.id for i in worst_first(scored_case().images)]
    # slips (most confidently passed first), false alarms, then lowest IoU, images without IoU last
    assert ordered == ["void/4", "void/3", "good/3", "void/2", "void/1", "good/1", "good/2"]
    errors = [ImageResult("e", "s", "NOK", "NOK", error="timeout"), ImageResult("f", "s", "OK", "NOK", 0.9)]
    assert [i.id for i in worst_first(errors)] == ["f", "e"]


def test_confusion_matrix_counts_and_filters():
    detail = case_payloads(render_html(RunResults(cases=[scored_case()])))["padim-satsim"]["detail_html"]
    cells = dict(re.findall(r"<td class='num cm-cell[^']*' data-outcome='([\w ]+)'[^>]*><b>(\d+)</b>", detail))
    assert cells == {"passed": "2", "false alarm": "1", "slip": "2", "found": "2"}
    assert "66.7%" in detail and "50.0%" in detail  # share of each true class


def histogram(case):
    detail = case_payloads(render_html(RunResults(cases=[case])))[case.id]["detail_html"]
    return re.search(r"<svg class='histogram'.*?</svg>(<p class='note'>[^<]*</p>)?", detail).group(0)


def test_score_histogram_shows_good_and_defective_parts_and_where_the_verdict_switches():
    svg = histogram(scored_case())
    titles = re.findall(r"<rect class='bar (h-ok|h-nok)'[^>]*><title>[^:]*: (\d+) images?</title>", svg)
    assert sum(int(n) for css, n in titles if css == "h-ok") == 3
    assert sum(int(n) for css, n in titles if css == "h-nok") == 4
    # no threshold recorded: every NOK verdict scores above every OK verdict, so it switches between 0.30 and 0.62
    assert "verdict switches here: between 0.300 and 0.620" in svg and "class='threshold'" in svg
    mixed = scored_case(images=[ImageResult("a", "s", "OK", "NOK", 0.2), ImageResult("b", "s", "NOK", "OK", 0.9)])
    assert "class='threshold'" not in histogram(mixed) and "No operating threshold" in histogram(mixed)
    verdicts_only = scored_case(images=[ImageResult("a", "s", "OK", "OK")])
    detail = case_payloads(render_html(RunResults(cases=[verdicts_only])))["padim-satsim"]["detail_html"]
    assert "no scores, only verdicts" in detail and "<svg class='histogram'" not in detail


def test_breakdown_marks_groups_below_the_case_threshold():
    breakdown = {"carpet": {"iou": 0.71, "f2": 0.9, "n_images": 40, "n_defective": 30},
                 "grid": {"iou": 0.42, "f2": 0.6, "n_images": 20, "n_defective": 12}}
    detail = case_payloads(render_html(RunResults(cases=[scored_case(breakdown=breakdown)])))[
        "padim-satsim"]["detail_html"]
    table = re.search(r"<h3>Breakdown</h3><table class='breakdown'>(.*?)</table>", detail).group(1)
    assert re.findall(r"<th scope='col'[^>]*>([^<]+)</th>", table) == ["group", "IoU", "F2", "images", "defective images"]
    rows = dict(re.findall(r"<tr><th scope='row'>(\w+)</th>(.*?)</tr>", table))
    assert "below" not in rows["carpet"] and rows["grid"].count("class='num below'") == 2
    assert "<h3>Breakdown</h3>" not in detail.split("<h3>Breakdown</h3>", 1)[1]  # not repeated as a generic extra


def test_viewer_reads_the_layer_manifest_only_when_there_is_one():
    manifest = {"folder": "scoreboard_files/padim-satsim",
                "images": {"void/1": {"image": "00000-void_1.image.png", "gt": "00000-void_1.gt.png",
                                      "reference": "reference-ab.png"},
                           "not/in/this/case": {"image": "x.png"}}}
    payload = case_payloads(render_html(RunResults(cases=[scored_case(image_layers=LayerManifest(**manifest))])))[
        "padim-satsim"]
    assert payload["layers"] == {"folder": "scoreboard_files/padim-satsim",
                                 "images": {"void/1": manifest["images"]["void/1"]}}
    detail = payload["detail_html"]
    assert "<h3>Image viewer</h3><div class='viewer'" in detail
    assert "scoreboard_files" not in detail and "Image layers" not in detail  # names travel as data, never as a section
    without = case_payloads(render_html(RunResults(cases=[scored_case()])))["padim-satsim"]
    assert without["layers"] is None and "class='viewer'" not in without["detail_html"]


def test_risk_labels_are_words_not_keys(run):
    cls = case_payloads(render_html(run))["gemini_basic-mvtec"]["detail_html"]
    risk = re.search(r"<h3>Risk at the operating point</h3>(.*?)</table>", cls).group(1)
    labels = re.findall(r"<th scope='row'[^>]*>([^<]*)</th>", risk)
    assert "AUROC (threshold-free)" in labels and "target slip rate" in labels
    assert not [text for text in labels if "_" in text or "not a factory figure" in text]


def test_robustness_plot_labels_zero_once(robust_run):
    document = render_html(robust_run)
    for case_id in ("padim-satsim-blur", "padim-satsim-jpeg", "gemini_basic-mvtec-blur"):
        ticks = re.findall(r"<text class='tick[^']*'[^>]*>([^<]*)</text>", plot_svg(document, case_id))
        assert ticks.count("0") <= 1, (case_id, ticks)
    ticks = re.findall(r"<text class='tick[^']*'[^>]*>([^<]*)</text>", plot_svg(document, "padim-satsim-jpeg"))
    assert ticks.count("0") == 1 and {"0.1", "-0.05"} <= set(ticks)  # "0": the delta panel's "no change"
