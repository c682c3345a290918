"""The runs folder: every run's JSON results kept, one file per run, so runs can be listed and compared later.

A stored run's file is `<id>.json` in the folder (`--fm-runs-dir`), where the id is the run's time and short
commit (`20261203T104512Z-ab12cd3`): ids sort as the runs were made. A run is named by its id (or a unique
start of it), `last` (the newest), `last~N` (N before the newest), or a git branch (`main`: the newest run
recorded on that branch; `main~1` the one before). The file holds exactly what `--fm-results` writes
(`fmtest.report.results_file`), written atomically.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fmtest.config.settings import stored_run_name
from fmtest.errors import ConfigError
from fmtest.report.results_file import results_json
from fmtest.util.fsutil import atomic_write
from fmtest.verdict.results import RunResults

_CREATED = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})")
_BACK = re.compile(r"(?P<name>.+?)~(?P<back>\d+)")
NO_COMMIT = "nogit"


@dataclass(frozen=True)
class StoredRun:
    """One kept run, as `fmtest runs list` shows it."""

    id: str
    path: Path
    created: str
    git_commit: str | None = None
    git_branch: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)  # passed / failed / error / skipped -> cases
    interrupted: bool = False
    unfinished: int = 0  # planned cases without a result (an interrupted run)
    merged_shards: int | None = None  # stored by `fmtest merge`


def run_id(results: RunResults) -> str:
    """`20261203T104512Z-ab12cd3`: when the run was made (UTC) and its short commit; sortable by time."""
    found = _CREATED.match(results.created or "")
    stamp = ("{}{}{}T{}{}{}Z".format(*found.groups()) if found
             else _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    commit = re.sub(r"[^0-9a-zA-Z]", "", results.git_commit or "")[:7].lower() or NO_COMMIT
    return f"{stamp}-{commit}"


def store_run(results: RunResults, folder: Path) -> Path:
    """Keep the run in `folder` (made when missing) under a fresh id, written atomically; returns the file.
    Two runs of one second and commit get `-2`, `-3`: a run never overwrites another."""
    folder = Path(folder)
    base = run_id(results)
    name, n = base, 1
    while (folder / f"{name}.json").exists():
        n += 1
        name = f"{base}-{n}"
    return atomic_write(folder / f"{name}.json", results_json(results))


def list_runs(folder: Path) -> tuple[list[StoredRun], list[str]]:
    """The stored runs, oldest first, and a line for each file in the folder that is not a readable run."""
    folder = Path(folder)
    if not folder.is_dir():
        return [], []
    runs, problems = [], []
    for path in sorted(folder.glob("*.json"), key=lambda p: _order(p.stem)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
                raise TypeError("not an fmtest results file")
            config = data.get("config") if isinstance(data.get("config"), dict) else {}
            runs.append(StoredRun(
                id=path.stem, path=path, created=str(data.get("created") or ""), git_commit=data.get("git_commit"),
                git_branch=data.get("git_branch"),
                outcomes=dict(Counter(str(c.get("outcome", "passed")) for c in data["cases"] if isinstance(c, dict))),
                interrupted=bool(data.get("interrupted")), unfinished=len(data.get("unfinished") or []),
                merged_shards=config.get("merged_shards")))
        except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
            problems.append(f"{path}: {e}")
    return runs, problems


def _order(stem: str) -> tuple[str, int, str]:
    """Ids in the order the runs were made: by time, then `-2`, `-3` after the first of the same second."""
    parts = stem.split("-")
    again = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 1
    return parts[0], again, stem


def find_run(folder: Path, name: str) -> StoredRun:
    """The stored run `name` names (an id or its unique start, `last`, `last~N`, a branch, `<branch>~N`); an
    unknown name is one ConfigError naming it and the nearest stored ids."""
    folder = Path(folder)
    runs, _ = list_runs(folder)
    if not runs:
        raise ConfigError(f"no stored run {name!r}: the runs folder {folder} holds no run (pytest keeps each run "
                          "there unless --fm-no-store)")
    newest_first = runs[::-1]
    exact = next((r for r in runs if r.id == name), None)
    if exact is not None:
        return exact
    started = [r for r in runs if r.id.startswith(name)]
    if len(started) == 1:
        return started[0]
    back = _BACK.fullmatch(name)
    head, steps = (back["name"], int(back["back"])) if back else (name, 0)
    if head == "last":
        candidates = newest_first
    else:
        candidates = [r for r in newest_first if r.git_branch == head]
    if candidates and steps < len(candidates):
        return candidates[steps]
    raise ConfigError(_unknown(name, runs, head, len(candidates), len(started)))


def _unknown(name: str, runs: list[StoredRun], head: str, on_branch: int, started: int) -> str:
    ids = [r.id for r in runs]
    if started > 1:
        why = f"{started} stored runs start with {name!r}"
    elif on_branch:
        why = f"only {on_branch} stored run(s) {'in all' if head == 'last' else f'on branch {head}'}"
    else:
        why = f"no stored run {name!r}"
    nearest = difflib.get_close_matches(name, ids, n=3, cutoff=0.3) or ids[::-1][:3]
    branches = sorted({r.git_branch for r in runs if r.git_branch})
    hint = f"; branches: {', '.join(branches)}" if branches and on_branch == 0 and not started else ""
    return f"{why}; nearest: {', '.join(nearest)}{hint}"


def results_path(reference: str | Path, folder: Path | Callable[[], Path]) -> Path:
    """A results file as named on the command line: a file, else a stored run in `folder` (`find_run`); `folder`
    may be a function that finds it, called only for a stored run."""
    path = Path(reference)
    name = stored_run_name(str(reference), path)
    if name is None:
        return path
    return find_run(folder() if callable(folder) else folder, name).path


__all__ = ["StoredRun", "find_run", "list_runs", "results_path", "run_id", "store_run"]
