import html as htmllib
import json
import re

import numpy as np
import pytest

from fmtest.report.html import image_outcome, render_html, write_html
from fmtest.report.overlay import overlay_thumbnail
from fmtest.report.results import CaseResult, ImageResult, RunResults, Thumbnail

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
                     extra={"robustness": [{"perturbation": "blur", "level": 2, "flip_rate": 0.1, "delta_iou": -0.05,
                                            "delta_f2": -0.02, "false_alarm_rate": 0.03, "slip_rate": 0.01,
                                            "outcome": "failed"}],
                            "regression": {"iou": {"baseline": 0.5, "current": 0.41, "delta": -0.09, "ci_low": -0.12,
                                                   "ci_high": -0.05, "regressed": True}},
                            "data_quality": [{"kind": "duplicate", "image_id": "test/void/003", "detail": EVIL}],
                            "custom_section": {"answer": 42}})
    cls = CaseResult("gemini_basic-mvtec", "gemini_basic", "mvtec", "classification", "passed",
                     metrics={"f2": 0.99, "f2_ci_low": 0.97, "f2_ci_high": 1.0},
                     thresholds={"f2": 0.8},
                     images=[ImageResult("m/1", "s", "NOK", "NOK", reasoning=EVIL),
                             ImageResult("m/2", "s", "OK", "NOK", error="unparseable answer")],
                     extra={"risk": {"slip_rate": 0.03, "slip_rate_ci_low": 0.01, "slip_rate_ci_high": 0.08,
                                     "false_alarm_rate": [0.01, 0.05], "defectives_needed_for_1pct": 299,
                                     "target_slip_rate": 0.01, "recall_at_false_alarm": {"value": 0.7, "ci_low": 0.5,
                                                                                         "ci_high": 0.85},
                                     "auroc_threshold_free_not_a_factory_figure": 0.97},
                            "usage": {"input_tokens": 1200, "cost_usd": 0.5}, "invalid_answers": 1})
    skip = CaseResult("sam_clip-satsim", "sam_clip", "satsim", "segmentation", "skipped",
                      f"weights missing {EVIL}")
    robust = CaseResult("padim-satsim-blur", "padim", "satsim", "robustness", "passed",
                        metrics={"flip_rate": 0.05, "delta_iou": -0.01}, thresholds={"max_flip_rate": 0.1,
                                                                                     "max_metric_drop": 0.05},
                        extra={"robustness": [{"perturbation": "blur", "level": 2, "flip_rate": 0.05,
                                               "outcome": "passed"}]})
    return RunResults(cases=[seg, cls, skip, robust], created="2026-11-22T18:00:00Z", git_commit="deadbeef",
                      environment={"python": "3.11.7", "torch": "2.14.1"}, config={"thresholds": {"iou": 0.6}})


def case_payloads(document):
    """The per-case JSON the page renders from, keyed by the case id of its <details>."""
    found = re.findall(r"<details class='case [^']*' id='([^']*)' data-index='(\d+)'.*?"
                       r"<script type='application/json' id='fm-case-data-\2'>(.*?)</script>", document, re.S)
    return {htmllib.unescape(case_id): json.loads(body) for case_id, _, body in found}


def test_matrix_has_a_cell_per_case_coloured_by_outcome(run):
    document = render_html(run)
    for case in run.cases[:3]:
        assert f"<td class='cell o-{case.outcome}' data-case='{case.id}'>" in document
    # the robustness case shares padim-satsim's cell as a linked badge; the cell shows the worse outcome
    assert "<a class='sub o-passed' href='#padim-satsim-blur'" in document and "</span> blur</a>" in document
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
    rows = payloads["gemini_basic-mvtec"]["rows"]
    assert rows[0][payloads["gemini_basic-mvtec"]["columns"].index("reasoning")] == EVIL  # intact, set as text


def test_details_carry_metrics_extras_and_thumbnails(run):
    payloads = case_payloads(render_html(run, history_links={"padim-satsim": "history.html#padim-satsim"}))
    seg = payloads["padim-satsim"]["detail_html"]
    for text in ("Regression against the baseline", "REGRESSED", "Robustness", "blur", "Data quality",
                 "Custom section", "answer", "Worst images", "abc123", "history.html#padim-satsim",
                 "<span class='badge o-failed'>below</span>"):
        assert text in seg, text
    assert re.search(r"<img src='data:image/png;base64,[A-Za-z0-9+/=]+' alt='test/void/003 iou 0.40'>", seg)
    cls = payloads["gemini_basic-mvtec"]["detail_html"]
    assert "Risk at the operating point" in cls
    assert "0.030 [0.010, 0.080]" in cls and "[0.010, 0.050]" in cls and "0.700 [0.500, 0.850]" in cls
    assert "slip rate ci low" not in cls  # folded into the slip rate row
    assert "threshold-free, not a factory figure" in cls
    target_row = re.search(r"<tr><th scope='row'>target slip rate</th>.*?</tr>", cls).group(0)
    assert "share of defective" not in target_row  # a setting, not a measured rate
    assert "input tokens" in cls and "1 model answer(s) could not be parsed" in cls


def test_max_thresholds_bound_their_metric(run):
    robust = case_payloads(render_html(run))["padim-satsim-blur"]["detail_html"]
    assert re.search(r"flip_rate</th><td class='num'>0.050</td><td class='num'></td><td class='num'>&le; 0.10</td>"
                     r"<td><span class='badge o-passed'>meets", robust)
    assert re.search(r"max_metric_drop</th>.*?0.050</td><td class='note'>setting", robust)


def test_image_rows_are_data_not_dom(run):
    document = render_html(run)
    assert "test/void/004" not in document.split("<script type='application/json'")[0]
    seg = case_payloads(document)["padim-satsim"]
    assert seg["columns"] == ["id", "label", "predicted", "outcome", "score", "iou"]
    assert [r[3] for r in seg["rows"]] == ["correct", "slip", "false alarm"]
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
