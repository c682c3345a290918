"""The per-image JSON lines (`--fm-samples`) and the CSV scoreboard (`--fm-csv`) as pure functions of the results."""

from __future__ import annotations

import csv
import io
import json
import math

from fmtest.report.samples import samples_jsonl
from fmtest.report.scoreboard_csv import scoreboard_csv
from fmtest.verdict.results import CaseResult, ImageResult, RunResults


def _results() -> RunResults:
    vlm = CaseResult(id="gemini-toy", pipeline="gemini", dataset="toy", task="classification", outcome="failed",
                     message="=SUM(A1) f2 below", metrics={"f2": 0.5, "f2_ci_low": 0.2, "f2_ci_high": 0.8},
                     thresholds={"f2": 0.8, "max_false_alarm_rate": 0.1},
                     images=[ImageResult("a", "s", "NOK", "OK", score=math.nan, reasoning="looks clean"),
                             ImageResult("b", "s", "OK", "NOK", error="HTTP 503", group="g1")])
    skipped = CaseResult(id="padim-toy", pipeline="padim", dataset="toy", task="segmentation", outcome="skipped")
    return RunResults(cases=[vlm, skipped])


def test_one_line_per_image_with_the_answer_and_null_for_what_is_missing():
    lines = [json.loads(line) for line in samples_jsonl(_results()).splitlines()]
    assert lines == [
        {"case": "gemini-toy", "pipeline": "gemini", "dataset": "toy", "task": "classification", "image": "a",
         "label": "NOK", "prediction": "OK", "score": None, "iou": None, "reasoning": "looks clean"},
        {"case": "gemini-toy", "pipeline": "gemini", "dataset": "toy", "task": "classification", "image": "b",
         "label": "OK", "prediction": "NOK", "score": None, "iou": None, "group": "g1", "error": "HTTP 503"}]


def test_csv_has_a_row_per_case_with_interval_and_threshold():
    rows = list(csv.reader(io.StringIO(scoreboard_csv(_results()))))
    assert rows[0] == ["id", "pipeline", "dataset", "task", "outcome", "f2", "f2_ci_low", "f2_ci_high",
                       "threshold_f2", "message"]  # false_alarm_rate is not recorded: not a column
    assert rows[1] == ["gemini-toy", "gemini", "toy", "classification", "failed", "0.5", "0.2", "0.8", "0.8",
                       "'=SUM(A1) f2 below"]  # a spreadsheet does not run the message as a formula
    assert rows[2] == ["padim-toy", "padim", "toy", "segmentation", "skipped", "", "", "", "", ""]
