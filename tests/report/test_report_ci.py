"""CI outputs: the Markdown scoreboard, the flat metrics file (JSON for DVC, OpenMetrics for GitLab),
and `publish`, which must never let one failing output take the others down."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import numpy as np
import pytest

from fmtest.report.markdown import (
    HEADER,
    append_markdown,
    failing_images,
    render_markdown,
    write_markdown,
)
from fmtest.report.metrics_file import (
    case_metrics,
    render_openmetrics,
    write_metrics_file,
)
from fmtest.report.publish import publish
from fmtest.verdict.results import (
    BaselineComparison,
    CaseResult,
    ImageResult,
    MetricChange,
    RunResults,
)


def seg_case(outcome="failed", **sections):
    images = [ImageResult("good/ok.png", "s1", "OK", "OK"), ImageResult("void/slip_a.png", "s2", "NOK", "OK"),
              ImageResult("good/alarm.png", "s3", "OK", "NOK"), ImageResult("void/slip_b.png", "s4", "NOK", "OK"),
              ImageResult("void/hit.png", "s5", "NOK", "NOK", iou=0.4),
              ImageResult("void/broken.png", "s6", "NOK", "NOK", error="timeout")]
    return CaseResult("padim-satsim", "padim", "satsim", "segmentation", outcome, "iou below",
                      metrics={"iou": 0.166, "iou_ci_low": 0.126, "iou_ci_high": 0.207, "f2": 0.9,
                               "f2_ci_low": math.nan, "false_alarm_rate": 0.08, "n_images": 90.0,
                               "n_defective": np.int64(30), "images_per_second": np.float32(12.5)},
                      thresholds={"iou": 0.6, "f2": 0.8, "max_false_alarm_rate": 0.05}, images=images, **sections)


@pytest.fixture
def results():
    regression = BaselineComparison("compared", "compared with the baseline", 0.02, changes={
        "iou": MetricChange(baseline=0.2, current=0.166, delta=-0.034, regressed=True),
        "f2": MetricChange(baseline=0.89, current=0.9, delta=0.01, regressed=False)})
    return RunResults(cases=[
        seg_case(baseline=regression),
        CaseResult("reference_diff-elpv", "reference_diff", "elpv", "classification", "passed",
                   metrics={"f2": 0.85, "f2_ci_low": 0.81, "f2_ci_high": 0.9}, thresholds={"f2": 0.8}),
        CaseResult("reference_diff-mvtec", "reference_diff", "mvtec", "segmentation", "error",
                   "DataError: labels.csv | line 3: unknown label\ntraceback"),
        CaseResult("sam_clip-satsim", "sam_clip", "satsim", "segmentation", "skipped",
                   "needs segment_anything: pip install 'fmtest[sam]'"),
        CaseResult("gdino_sam-satsim", "gdino_sam", "satsim", "segmentation", "skipped",
                   "needs segment_anything: pip install 'fmtest[sam]'"),
    ], created="2026-11-29T10:00:00Z", git_commit="0123456789abcdef")


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]


def test_markdown_puts_the_verdict_failures_and_regressions_first_then_one_row_per_case(results):
    text = render_markdown(results)
    assert text.startswith("### fmtest: 🔴 FAIL: 5 cases, 1 failed, 1 error, 1 passed, 2 skipped")
    assert "commit `0123456789`" in text
    head = text[:text.index("| case |")]
    assert "- 🔴 `padim-satsim` FAIL: iou below" in head
    assert "- 🟣 `reference_diff-mvtec` ERROR: DataError: labels.csv \\| line 3: unknown label" in head
    assert "traceback" not in text
    assert "**Regressions against the baseline:**\n\n- `padim-satsim` iou 0.200 → 0.166 (-0.034)" in head
    header, separator, *rows = table_rows(text)
    assert header == [h for h in HEADER if h != "study"] and set(separator) == {"---"}  # no study case: no column
    assert [r[0] for r in rows] == ["`padim-satsim`", "`reference_diff-elpv`", "`reference_diff-mvtec`"]  # one each
    padim, elpv, error = rows
    assert padim[1:4] == ["🔴 FAIL", "IoU **0.166 [0.126, 0.207]** 🔴", "≥ 0.60"]
    # the other gates in the same row, each with its own threshold; a max_ threshold is an upper limit
    assert padim[4] == "F2 0.900 ≥ 0.80<br>false-alarm rate **0.080** 🔴 ≤ 0.05"
    assert padim[5] == "**-0.034** regressed"
    assert elpv[1:6] == ["🟢 PASS", "F2 0.850 [0.810, 0.900]", "≥ 0.80", "", ""]
    assert error[1:3] == ["🟣 ERROR", "not judged"]


def test_a_candidates_new_slips_are_named_before_the_table():
    from fmtest.verdict.results import CaseRef, Comparison, ImageChange

    pair = CaseResult("sam_ft-vs-gdino_sam-satsim", "sam_ft", "satsim", "comparison", "failed", "new_slips 2 > 0",
                      comparison=Comparison(CaseRef("sam_ft-satsim", "sam_ft", "failed"),
                                            CaseRef("gdino_sam-satsim", "gdino_sam", "passed"), 0.02,
                                            [ImageChange("void/7.png", "new_slips", "NOK", "OK", "NOK"),
                                             ImageChange("good/2.png", "new_false_alarms", "OK", "NOK", "OK"),
                                             ImageChange("void/9.png", "new_slips", "NOK", "OK", "NOK")]))
    text = render_markdown(RunResults(cases=[pair]))
    head = text[:text.index("| case |")]
    assert "- **new slips** of `sam_ft-satsim` against `gdino_sam-satsim`: `void/7.png`, `void/9.png`" in head
    assert "- **new false alarms** of `sam_ft-satsim` against `gdino_sam-satsim`: `good/2.png`" in head


def test_a_study_case_row_names_its_departures_and_links_the_table_of_reasons():
    from fmtest.data.departures import Departure

    case = seg_case("passed", study={"iou": 0.52}, departures=[Departure("binarisation", "calibrated", "none", "a gate "
                                                                         "needs a mask")])
    text = render_markdown(RunResults(cases=[case]))
    header, _, row, *_ = table_rows(text)
    assert row[header.index("study")] == "[study 0.52; departs: binarisation](#departures-from-the-study)"
    fidelity = text[text.index("#### Departures from the study"):]
    assert "| `padim-satsim` | binarisation | calibrated | none | a gate needs a mask |" in fidelity


def test_failing_images_slips_first_then_false_alarms_then_errors(results):
    case = results.cases[0]
    assert [i.id for i in failing_images(case)] == ["void/slip_a.png", "void/slip_b.png", "good/alarm.png",
                                                    "void/broken.png"]
    cell = table_rows(render_markdown(results))[2][-1]
    assert cell == ("slip: `void/slip_a.png`, `void/slip_b.png`; false alarm: `good/alarm.png`; "
                    "error: `void/broken.png`")
    case.images += [ImageResult(f"void/miss_{i}.png", "s", "NOK", "OK") for i in range(4)]
    assert table_rows(render_markdown(results))[2][-1].endswith("`void/miss_2.png` (+3 more)")


def test_skipped_cases_are_grouped_by_reason_in_a_collapsed_block(results):
    text = render_markdown(results)
    block = text[text.index("<details>"):text.index("</details>")]
    assert "<summary>2 skipped</summary>" in block
    assert "- `sam_clip-satsim`, `gdino_sam-satsim`: needs segment_anything: pip install 'fmtest[sam]'" in block


def test_markdown_file_is_written_and_the_job_summary_appended(results, tmp_path):
    target = tmp_path / "out" / "board.md"
    write_markdown(results, target)
    assert target.read_text() == render_markdown(results)
    summary = tmp_path / "summary.md"
    summary.write_text("## Build\nok\n")
    append_markdown(results, summary)
    text = summary.read_text()
    assert text.startswith("## Build\nok\n") and text.endswith(render_markdown(results) + "\n")


def test_metrics_file_is_a_nested_dict_of_finite_plain_numbers(results, tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics_file(results, path)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-finite {c} in the metrics file"))
    assert list(data) == ["padim-satsim", "reference_diff-elpv"]  # no numbers, no entry
    padim = data["padim-satsim"]
    assert "f2_ci_low" not in padim  # NaN left out
    assert padim["n_images"] == 90 and isinstance(padim["n_images"], int)
    assert padim["n_defective"] == 30 and padim["images_per_second"] == 12.5
    assert padim["iou"] == 0.166
    # DVC flattens nested keys with "." and compares numbers: every leaf must be a number at depth two
    for case, metrics in data.items():
        assert isinstance(case, str) and all(type(v) in (int, float) for v in metrics.values())


def test_metrics_file_as_openmetrics_for_a_txt_path(results, tmp_path):
    path = tmp_path / "metrics.txt"
    write_metrics_file(results, path)
    text = path.read_text()
    assert text == render_openmetrics(results) and text.endswith("# EOF\n")
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{case="[^"]*"\} -?[0-9.e+-]+$')
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples and all(sample.match(line) for line in samples), samples
    assert 'fmtest_iou{case="padim-satsim"} 0.166' in samples
    assert 'fmtest_n_images{case="padim-satsim"} 90' in samples
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(families) == len(set(families))  # each family once, its samples together
    assert sum(len(m) for m in case_metrics(results).values()) == len(samples)


def test_publish_writes_each_output_and_reports_a_failing_one(results, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    summary = tmp_path / "summary.md"
    lines = publish(results, markdown=blocker / "board.md", step_summary=summary, metrics=tmp_path / "m.json")
    assert lines[0].startswith(f"fmtest: warning: Markdown scoreboard not written to {blocker / 'board.md'}")
    assert lines[1:] == [f"GitHub job summary: {summary}", f"metrics file: {tmp_path / 'm.json'}"]
    assert summary.read_text().startswith("### fmtest: ") and (tmp_path / "m.json").is_file()


def test_openmetrics_file_parses_with_the_reference_parser(results):
    parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    samples = {(f.name, s.labels["case"]): s.value
               for f in parser.text_string_to_metric_families(render_openmetrics(results)) for s in f.samples}
    assert samples[("fmtest_iou", "padim-satsim")] == 0.166
    assert samples[("fmtest_f2", "reference_diff-elpv")] == 0.85


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None, reason="needs dvc and git on PATH")
def test_dvc_metrics_diff_reads_the_json_file(results, tmp_path):
    def sh(*args):
        return subprocess.run(args, cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics.json\n")
    write_metrics_file(results, tmp_path / "metrics.json")
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    results.cases[0].metrics["iou"] = 0.2
    write_metrics_file(results, tmp_path / "metrics.json")
    diff = json.loads(sh("dvc", "metrics", "diff", "--json"))
    assert diff["metrics.json"]["padim-satsim.iou"] == {"old": 0.166, "new": 0.2, "diff": pytest.approx(0.034)}
