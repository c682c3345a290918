"""The results file: typed sections written by one function and read back by one, and a file of the earlier
format (sections in an untyped `extra`, rules flat in `config`) still read, migrated."""

from __future__ import annotations

import json

import pytest
from fakes import FILES

from fmtest.errors import DataError
from fmtest.report.results_file import read_json, results_json, write_json
from fmtest.verdict.results import RESULTS_FORMAT, LevelRow, Risk, RunResults

V1 = FILES / "results_v1.json"


def test_a_file_of_the_earlier_format_is_read_with_every_section_typed():
    results = read_json(V1)
    assert results.format == RESULTS_FORMAT and results.created == "2026-12-02T10:00:00Z"
    rules = results.config.rules
    assert rules.thresholds_for("reference_diff-satsim")["iou"] == 0.1 and rules.baseline_tolerance == 0.05
    assert (rules.bootstrap_resamples, rules.seed, rules.risk.target_slip_rate) == (500, 3, 0.02)
    assert results.config.shard == "1/2" and results.config.prompts == {"satsim": "defect"}

    seg, pair, robust = results.cases
    assert isinstance(seg.risk, Risk) and 0 <= seg.risk.slip_rate <= 1 and seg.cache.hits + seg.cache.predicted > 0
    assert seg.study == {"iou": 0.13} and seg.usage == {"prompt_tokens": 12.0}
    assert seg.baseline.status == "compared" and seg.baseline.changes["iou"].regressed and seg.baseline.regressed
    assert seg.data_quality[0].kind == "near_duplicate" and seg.image_layers.folder.endswith("reference_diff-satsim")
    assert seg.shard.positions == (0, 2, 4) and seg.train_scores
    assert pair.comparison.reference.case == "gdino_sam-satsim" and pair.comparison.candidate.pipeline == "sam_ft"
    assert pair.comparison.image_changes[0].change == "new_slips" and pair.comparison.tolerance == 0.02
    assert robust.robustness.perturbation == "blur" and robust.robustness.gate_level == 1.0
    assert [type(r) for r in robust.robustness.levels] == [LevelRow, LevelRow]
    assert robust.robustness.levels[1].outcome == "failed"


def test_written_and_read_back_the_results_are_the_same(tmp_path):
    results = read_json(V1)
    write_json(results, tmp_path / "again.json")
    again = read_json(tmp_path / "again.json")
    assert again == results
    assert json.loads((tmp_path / "again.json").read_text())["format"] == RESULTS_FORMAT
    assert results_json(again) == results_json(results)


def test_unknown_keys_are_ignored_and_a_newer_format_is_refused_naming_the_file(tmp_path):
    data = json.loads(results_json(read_json(V1)))
    data["cases"][0]["a_section_of_a_newer_fmtest"] = {"x": 1}
    data["something_new"] = True
    (tmp_path / "newer_keys.json").write_text(json.dumps(data))
    assert read_json(tmp_path / "newer_keys.json").cases[0].id == "reference_diff-satsim"
    data["format"] = RESULTS_FORMAT + 1
    (tmp_path / "newer.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"newer.json: results format {RESULTS_FORMAT + 1} is newer than this fmtest"):
        read_json(tmp_path / "newer.json")


@pytest.mark.parametrize("content, problem", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text"), (b"{", "not a JSON results file"),
    (b"[1, 2]", "not an fmtest results file"), (b'{"cases": [{"bogus": 1}]}', "cannot read these results"),
])
def test_a_file_that_is_not_results_is_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as err:
        read_json(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_folder_given_as_a_results_file_is_named(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_json(tmp_path)


def test_results_without_a_timestamp_have_an_unknown_time_not_now():
    assert RunResults.from_dict({"cases": []}).created == ""
