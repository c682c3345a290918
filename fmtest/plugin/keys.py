"""What the plugin's modules keep in pytest's stash: one definition each, shared by the hooks and the reports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fmtest.plugin.hooks import FmRun  # noqa: F401  (named in the keys' types)
    from fmtest.verdict.results import CaseResult  # noqa: F401

RUN_KEY = pytest.StashKey["FmRun"]()  # the process's run, built on first need
RESULTS_DIR_KEY = pytest.StashKey[Path]()  # the controller's folder for every process's finished cases
PLANNED_KEY = pytest.StashKey[list]()  # case ids the session collected, to name the unfinished ones
RESULT_KEY = pytest.StashKey["CaseResult"]()  # the case a test item evaluated, for its final outcome
