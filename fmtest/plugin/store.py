"""Finished cases of a run, kept where every pytest-xdist worker writes and the controller reads."""

from __future__ import annotations

import json
from pathlib import Path

from fmtest.config.settings import Settings
from fmtest.report.results_file import results_json
from fmtest.util.fsutil import atomic_write
from fmtest.verdict.results import CaseResult

TASK_ORDER = {"segmentation": 0, "classification": 1, "comparison": 2, "robustness": 3}


class ResultStore:
    """Finished cases as one JSON file each in a folder shared by all pytest-xdist workers.

    Each case is written the moment it finishes, so an interrupted or crashed run still reports
    every case that completed.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, result: CaseResult) -> None:
        atomic_write(self.directory / f"{result.id}.json", results_json(result, indent=None))

    def load_all(self) -> list[CaseResult]:
        cases = []
        for path in self.directory.glob("*.json"):
            cases.append(CaseResult.from_dict(json.loads(path.read_text())))
        return cases


def order_key(settings: Settings):
    """Stable report order: task, then dataset and pipeline as the user listed them."""
    d_index = {d: i for i, d in enumerate(settings.datasets)}
    p_index = {p: i for i, p in enumerate(settings.config.pipeline_names())}

    def key(c: CaseResult):
        return (TASK_ORDER.get(c.task, 9), d_index.get(c.dataset, 99), p_index.get(c.pipeline, 99), c.id)

    return key
