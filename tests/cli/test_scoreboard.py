"""`fmtest scoreboard`: a results file's table as the run printed it, and the README check CI runs on its own
run of the default suite (verdicts, counts and cases exact; a figure within the cross-CPU bound)."""

from __future__ import annotations

import json

import pytest
from toy_fmtest import run_suite as run

from fmtest.cli import main
from fmtest.cli.scoreboard import (
    FIGURE_BOUND,
    README_END,
    README_START,
    readme_section,
    table_differences,
)
from fmtest.report.results_file import read_json
from fmtest.report.terminal import render_scoreboard


@pytest.fixture
def results(suite):
    run(suite, "--fm-results=out.json")
    return suite.path / "out.json"


def _readme(tmp_path, table: str):
    path = tmp_path / "README.md"
    path.write_text(f"# x\n\n{README_START}\n```\n{table}\n```\n{README_END}\n")
    return path


def test_the_table_is_the_runs_scoreboard_without_its_title(results, capsys):
    assert main(["scoreboard", str(results)]) == 0
    printed = capsys.readouterr().out
    full = render_scoreboard(read_json(results), width=80)
    assert printed.startswith("case ") and full.endswith(printed.rstrip("\n"))
    assert "toy_threshold-toy" in printed and "toy_empty-toy" in printed


def test_the_readme_check_passes_the_runs_own_table_and_fails_any_other_verdict(results, tmp_path, capsys):
    main(["scoreboard", str(results)])
    table = capsys.readouterr().out.rstrip("\n")
    assert main(["scoreboard", str(results), "--check-readme", str(_readme(tmp_path, table))]) == 0
    assert readme_section(_readme(tmp_path, table)) == table

    flipped = table.replace("PASS", "FAIL", 1)
    assert main(["scoreboard", str(results), "--check-readme", str(_readme(tmp_path, flipped))]) == 1
    assert "the default-run table is not this run's" in capsys.readouterr().err

    data = json.loads(results.read_text())
    data["cases"] = data["cases"][:1]  # a case missing from the run
    results.write_text(json.dumps(data))
    assert main(["scoreboard", str(results), "--check-readme", str(_readme(tmp_path, table))]) == 1


def test_a_figure_may_move_within_the_cross_cpu_bound_only():
    row = "padim-elpv  cls  f2 0.400 [0.270,0.534]  >=0.80  200/50  FAIL"
    assert table_differences(row, row.replace("0.400", f"{0.400 + FIGURE_BOUND:.3f}")) == []
    assert table_differences(row, row.replace("0.400", "0.410"))[0].startswith("line 1: a figure differs")
    assert table_differences(row, row.replace("200/50", "199/50"))  # a count is exact
    assert table_differences(row, row + "\nextra")[0] == "1 table lines documented, 2 printed"


def test_a_readme_without_the_markers_is_one_line(tmp_path, results, capsys):
    (tmp_path / "README.md").write_text("# no table\n")
    assert main(["scoreboard", str(results), "--check-readme", str(tmp_path / "README.md")]) == 2
    assert capsys.readouterr().err.startswith(f"fmtest: error: {tmp_path / 'README.md'}: no default-run table")


def test_csv_of_a_kept_run(results, capsys):
    capsys.readouterr()
    assert main(["scoreboard", "last", "--csv"]) == 0  # the run the fixture made, kept in .fmtest_runs
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("id,pipeline,dataset,task,outcome,iou,iou_ci_low,iou_ci_high,threshold_iou")
    assert [line.split(",")[:5] for line in lines[1:]] == [
        ["toy_threshold-toy", "toy_threshold", "toy", "segmentation", "passed"],
        ["toy_empty-toy", "toy_empty", "toy", "segmentation", "failed"]]
