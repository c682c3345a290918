import pytest

from fmtest.metrics.specs import format_value
from fmtest.report.terminal import render_scoreboard
from fmtest.verdict.gates import gates, image_counts, main_metric
from fmtest.verdict.results import (
    BaselineComparison,
    CaseResult,
    ImageResult,
    LevelRow,
    MetricChange,
    Robustness,
    RunResults,
)


def seg_case(case_id="saa_plus-mvtec", outcome="failed", iou=0.52, **kw):
    pipeline, dataset = case_id.split("-")
    return CaseResult(case_id, pipeline, dataset, "segmentation", outcome,
                      metrics={"iou": iou, "iou_ci_low": 0.47, "iou_ci_high": 0.57, "f2": 0.91,
                               "n_images": 329, "n_defective": 76},
                      thresholds={"iou": 0.6, "f2": 0.8}, **kw)


def cls_case(case_id="gemini_basic-mvtec", outcome="passed"):
    pipeline, dataset = case_id.split("-")
    return CaseResult(case_id, pipeline, dataset, "classification", outcome,
                      metrics={"f2": 0.99, "f2_ci_low": 0.97, "f2_ci_high": 1.0, "recall": 0.4},
                      thresholds={"f2": 0.8, "recall": 0.5},
                      images=[ImageResult("a", "s", "NOK", "NOK"), ImageResult("b", "s", "OK", "OK"),
                              ImageResult("c", "s", "OK", "NOK")])


def skipped(case_id, reason):
    pipeline, dataset = case_id.split("-")
    return CaseResult(case_id, pipeline, dataset, "segmentation", "skipped", reason)


@pytest.fixture
def run():
    return RunResults(
        cases=[seg_case(), cls_case(),
               CaseResult("reference_diff-elpv", "reference_diff", "elpv", "classification", "error",
                          "DataError: labels.csv: column 'label' missing\ntraceback line"),
               skipped("gdino_sam-satsim", "weights missing: groundingdino_swint_ogc.pth"),
               skipped("gdino_sam-mvtec", "weights missing: groundingdino_swint_ogc.pth"),
               skipped("gemini_refined-satsim", "GEMINI_API_KEY not set")],
        created="2026-11-22T18:00:00Z", git_commit="1a2b3c4d5e6f")


def row_of(text, case_id):
    return next(line for line in text.splitlines() if line.startswith(case_id))


def test_rows_show_main_metric_interval_threshold_counts_and_outcome(run):
    text = render_scoreboard(run, width=120)
    seg = row_of(text, "saa_plus-mvtec")
    assert "iou 0.520 [0.470,0.570]" in seg and "0.60" in seg and "329/76" in seg
    assert seg.rstrip().endswith("FAIL")
    cls = row_of(text, "gemini_basic-mvtec")
    assert "f2 0.990 [0.970,1.000]" in cls and cls.rstrip().endswith("PASS")
    assert "3/1" in cls  # counted from the per-image rows when metrics lack n_images
    assert "recall 0.400<0.50" in text  # a missed secondary gate is marked
    assert "f2 0.910>=0.80" in text
    assert row_of(text, "reference_diff-elpv").rstrip().endswith("ERROR")
    assert "column 'label' missing" in text and "traceback line" not in text
    assert "commit 1a2b3c4d5e" in text.splitlines()[0]


def test_skipped_cases_grouped_by_reason_after_the_table(run):
    lines = render_scoreboard(run, width=120).splitlines()
    start = lines.index("skipped (3):")
    assert not any(line.startswith("gdino_sam") for line in lines[:start])
    block = "\n".join(lines[start:])
    assert "gdino_sam-satsim, gdino_sam-mvtec: weights missing: groundingdino_swint_ogc.pth" in block
    assert "gemini_refined-satsim: GEMINI_API_KEY not set" in block


def test_final_count_line(run):
    assert render_scoreboard(run).splitlines()[-1] == "6 cases: 1 failed, 1 passed, 1 error, 3 skipped"


@pytest.mark.parametrize("width", [80, 100, 120])
def test_fits_the_terminal_width(run, width):
    run.cases.append(seg_case("clip_surgery_sam-industrialsat_with_a_very_long_name", "passed", 0.8))
    text = render_scoreboard(run, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "recall 0.400<0.50" in text  # other gates never silently dropped, wrapped instead


def test_regression_flag_shown():
    case = seg_case(outcome="failed", baseline=BaselineComparison("compared", "", 0.02, changes={
        "iou": MetricChange(baseline=0.6, current=0.52, delta=-0.08, ci_low=-0.1, ci_high=-0.05, regressed=True),
        "f2": MetricChange(baseline=0.9, current=0.91, delta=0.01, ci_low=-0.01, ci_high=0.03, regressed=False)}))
    text = render_scoreboard(RunResults(cases=[case]))
    assert "REGRESSED iou -0.080" in text and "REGRESSED f2" not in text


def test_robustness_case_reads_max_thresholds_as_upper_bounds():
    case = CaseResult("padim-satsim-blur", "padim", "satsim", "robustness", "failed",
                      metrics={"flip_rate": 0.2, "delta_iou": -0.01, "slip_rate": 0.3},
                      thresholds={"max_flip_rate": 0.1, "max_metric_drop": 0.05, "max_slip_rate": 0.5})
    by_name = {g.name: g for g in gates(case)}
    assert by_name["max_flip_rate"].metric == "flip_rate" and by_name["max_flip_rate"].upper
    assert not by_name["max_flip_rate"].met(0.2) and by_name["max_slip_rate"].met(0.3)
    assert by_name["max_metric_drop"].metric is None  # a setting: no metric of that name is recorded
    assert main_metric(case) == "flip_rate"


def rob_case(pipeline, dataset, perturbation, flip, outcome="passed", message=None, gate_level=1.0):
    return CaseResult(f"{pipeline}-{dataset}-{perturbation}", pipeline, dataset, "robustness", outcome, message,
                      metrics={"flip_rate": flip, "delta_iou": -0.01, "delta_f2": float("nan")},
                      thresholds={"max_flip_rate": 0.1, "max_metric_drop": 0.05},
                      robustness=Robustness(perturbation, gate_level, [LevelRow(perturbation, gate_level, flip_rate=flip,
                                                                                outcome=outcome)]))


PERTURBATIONS = ("brightness", "contrast", "gamma", "gaussian_noise", "blur", "jpeg", "gain_offset", "translate",
                 "rotate")


@pytest.fixture
def robust_run(run):
    run.cases += [rob_case("saa_plus", "mvtec", p, 0.01 * i, gate_level=i + 1) for i, p in enumerate(PERTURBATIONS)]
    run.cases[-5] = rob_case("saa_plus", "mvtec", "blur", 0.25, "failed", "25.0% of verdicts flip at blur=1 "
                                                                            "(tolerance 10.0%)")
    run.cases += [rob_case("gemini_basic", "mvtec", "blur", 0.0, gate_level=2.0),
                  CaseResult("gemini_basic-mvtec-jpeg", "gemini_basic", "mvtec", "robustness", "error",
                             "RuntimeError: perturbed images came back in another order\ntraceback")]
    return run


def test_robustness_cases_as_a_pipeline_by_perturbation_grid(robust_run):
    text = render_scoreboard(robust_run, width=200)
    lines = text.splitlines()
    assert not any(line.startswith("saa_plus-mvtec-") for line in lines)  # not one row per robustness case
    start = next(i for i, line in enumerate(lines) if line.startswith("robustness: flip rate at the gated level"))
    assert "flip rate <= 0.10, metric drop <= 0.050" in lines[start]
    assert lines[start + 1].split() == ["pipeline-dataset", *PERTURBATIONS]
    # the gated level per column; blur's two cases were gated at different levels, so none is claimed
    assert lines[start + 2].split() == ["@1", "@2", "@3", "@4", "@6", "@7", "@8", "@9"]
    grid = "\n".join(lines[start:])
    saa = row_of(grid, "saa_plus-mvtec ")
    assert saa.split()[1:] == ["0.000", "PASS", "0.010", "PASS", "0.020", "PASS", "0.030", "PASS", "0.250", "FAIL",
                               "0.050", "PASS", "0.060", "PASS", "0.070", "PASS", "0.080", "PASS"]
    gemini = row_of(grid, "gemini_basic-mvtec ")
    assert gemini.split()[1:] == ["-", "-", "-", "-", "0.000", "PASS", "ERROR", "-", "-", "-"]
    assert "  saa_plus-mvtec-blur: 25.0% of verdicts flip at blur=1 (tolerance 10.0%)" in lines
    assert "  gemini_basic-mvtec-jpeg: RuntimeError: perturbed images came back in another order" in lines
    assert lines[-1] == "17 cases: 2 failed, 10 passed, 2 error, 3 skipped"


@pytest.mark.parametrize("width", [60, 80, 120])
def test_robustness_grid_wraps_its_columns_to_the_width(robust_run, width):
    lines = render_scoreboard(robust_run, width=width).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("robustness:"))
    grid = lines[start:-1]
    assert max(len(line) for line in grid) <= width
    headers = [line.split()[1:] for line in grid if line.startswith("pipeline-dataset")]
    assert [name for block in headers for name in block] == list(PERTURBATIONS)  # every column, once, in order
    assert len(headers) > 1 if width < 120 else True
    assert sum(line.startswith("saa_plus-mvtec ") for line in grid) == len(headers)  # row label in every block


def test_only_skipped_cases():
    text = render_scoreboard(RunResults(cases=[skipped("sam_clip-satsim", "")]))
    assert "sam_clip-satsim: no reason given" in text
    assert text.splitlines()[-1] == "1 case: 1 skipped"


def test_helpers():
    assert main_metric(seg_case()) == "iou" and main_metric(cls_case()) == "f2"
    odd = CaseResult("x-y", "x", "y", "anomaly", thresholds={"auroc": 0.9})
    assert main_metric(odd) == "auroc"
    assert image_counts(seg_case()) == (329, 76)
    assert format_value(float("nan")) == "n/a" and format_value(None) == "n/a" and format_value(0.12345) == "0.123"
    assert format_value(90.0) == "90" and format_value(1.0) == "1.000"  # counts stored as floats read as counts


@pytest.mark.parametrize("width", [60, 80, 120])
def test_a_case_id_is_never_cut_its_row_wraps(width):
    long_ids = ["toy_empty_versus_the_toy_threshold-toy", "clip_surgery_sam-industrialsat_with_a_very_long_name"]
    text = render_scoreboard(RunResults(cases=[seg_case(i, "passed") for i in ["saa_plus-mvtec", *long_ids]]),
                             width=width)
    assert "~" not in text
    lines = text.splitlines()
    for case_id in long_ids:
        at = lines.index(case_id) if case_id in lines else next(i for i, ln in enumerate(lines) if ln.startswith(case_id))
        figures = lines[at] if lines[at] != case_id else lines[at + 1]
        assert "iou 0.520" in figures and figures.rstrip().endswith("PASS")  # its figures right with it


def departure(name, comparable=True):
    from fmtest.data.departures import Departure
    return Departure(name, f"fmtest's {name}", "the study's", "why", comparable=comparable)


def test_a_study_case_shows_the_published_number_and_its_departures_by_name():
    case = seg_case("sam_clip-mvtec", study={"iou": 0.05},
                    departures=[departure("point grid"), departure("CLIP precision")])
    faithful = seg_case("gdino_sam-mvtec", study={"iou": 0.13})
    text = render_scoreboard(RunResults(cases=[case, faithful]), width=200)
    assert "study 0.05; departs: point grid, CLIP precision" in row_of(text, "sam_clip-mvtec")
    assert "study 0.13, as published" in row_of(text, "gdino_sam-mvtec")
    assert "docs/FIDELITY.md" in text.splitlines()[-2]  # where each departure's reason is


def test_another_backbone_than_the_studys_is_shown_and_the_study_number_is_not():
    backbone = departure("backbone", comparable=False)
    study = CaseResult("supervised-industrialsat", "supervised", "industrialsat", "classification", "failed",
                       metrics={"f2": 0.65}, thresholds={"f2": 0.8}, study={"f2": 0.82},
                       departures=[backbone, departure("input")])
    elsewhere = CaseResult("supervised-elpv", "supervised", "elpv", "classification", "failed",
                           metrics={"f2": 0.65}, thresholds={"f2": 0.8}, departures=[backbone])
    text = render_scoreboard(RunResults(cases=[study, elpv := elsewhere]), width=200)
    assert "0.82" not in text
    assert "not comparable with the study (backbone fmtest's backbone); departs: input" in row_of(text, study.id)
    assert "backbone fmtest's backbone" in row_of(text, elpv.id)


def test_counts_read_as_whole_numbers_in_every_column():
    case = CaseResult("toy_empty-vs-toy_threshold-toy", "toy_empty", "toy", "comparison", "failed",
                      metrics={"delta_iou": -1.0, "new_slips": 4.0}, thresholds={"delta_iou": -0.05,
                                                                                 "max_new_slips": 0.0})
    text = render_scoreboard(RunResults(cases=[case]), width=200)
    assert "new_slips 4>0" in text and "4.0" not in text and "0.00" not in text.replace("-0.05", "")


def test_result_words_are_painted_in_their_outcomes_colour(robust_run):
    robust_run.cases.append(rob_case("padim", "satsim", "blur", 0.5, "skipped", "not meaningful"))
    text = render_scoreboard(robust_run, width=200, paint=lambda word, outcome: f"<{outcome}>{word}</>")
    assert row_of(text, "saa_plus-mvtec").rstrip().endswith("<failed>FAIL</>")
    assert row_of(text, "gemini_basic-mvtec").rstrip().endswith("<passed>PASS</>")
    grid = text[text.index("robustness:"):]
    assert "<failed>0.250 FAIL</>" in grid and "<error>ERROR</>" in grid


def test_a_skipped_robustness_case_shows_no_number(robust_run):
    robust_run.cases.append(rob_case("padim", "satsim", "blur", 0.5, "skipped", "not meaningful: recall 0.0%"))
    grid = render_scoreboard(robust_run, width=200)
    row = row_of(grid[grid.index("robustness:"):], "padim-satsim ")
    assert "SKIP" in row and "0.5" not in row
    assert "padim-satsim-blur: not meaningful: recall 0.0%" in grid


def test_data_quality_counts_read_in_the_right_number():
    from fmtest.report.terminal import data_quality_line
    from fmtest.run.guardrails import Finding

    findings = [Finding("alignment_failure", f"t/{i}", "quality 0.1") for i in range(13)]
    findings.append(Finding("check_skipped", None, "no reference"))
    case = seg_case("padim-toy", data_quality=findings)
    assert data_quality_line(RunResults(cases=[case])) == "data quality, toy: 13 alignment failures, 1 check skipped"
