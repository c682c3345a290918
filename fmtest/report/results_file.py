"""The JSON results file: written by a run and by `fmtest merge`, read back as a baseline, a shard or history.

Strict JSON (NaN is null) in the format of `fmtest.verdict.results`, written atomically: a run killed
mid-write leaves the previous file, never half a file. A file that is not results, or not readable,
is one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

from fmtest import __version__
from fmtest.errors import DataError
from fmtest.util.fsutil import atomic_write
from fmtest.verdict.results import CaseResult, RunResults, to_plain


def results_json(results: RunResults | CaseResult, indent: int | None = 1) -> str:
    """The one JSON form of results, for files and stores alike."""
    payload = results.to_dict() if isinstance(results, RunResults) else to_plain(results)
    return json.dumps(payload, indent=indent, allow_nan=False)


def write_json(results: RunResults, path: Path) -> None:
    atomic_write(path, results_json(results))


def read_json(path: Path) -> RunResults:
    """A results file read back (an earlier format migrated); anything else is one DataError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("results file not found", path) from None
    except IsADirectoryError:
        raise DataError("is a folder, not a results file", path) from None
    except UnicodeDecodeError:
        raise DataError("not a JSON results file (not UTF-8 text)", path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not a JSON results file ({e})", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise DataError("not an fmtest results file (no list of 'cases')", path)
    try:
        return RunResults.from_dict(data, path)
    except DataError:
        raise
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        version = data.get("fmtest_version", "unknown")
        where = _malformed_case(data["cases"])
        if version == __version__:  # written by this fmtest: damaged or edited, not a version mismatch
            raise DataError(f"malformed results{where} ({type(e).__name__}: {e})", path) from None
        raise DataError(f"cannot read these results written by fmtest {version}{where} ({type(e).__name__}: {e}); "
                        f"rerun with fmtest {__version__}", path) from None


def _malformed_case(cases: list) -> str:
    """`: case 2 (id)` for the first case that cannot be read, so the line names where the file is wrong."""
    for index, case in enumerate(cases, start=1):
        try:
            CaseResult.from_dict(case)
        except (TypeError, KeyError, AttributeError, ValueError):
            name = case.get("id") if isinstance(case, dict) else None
            return f": case {index}" + (f" ({name})" if isinstance(name, str) else "")
    return ""
