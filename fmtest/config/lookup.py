"""Where a run's suite config is: beside the tests named on the command line, else `suites/`.

Kept apart from fmtest.config.suite (and its imports) because the pytest plugin asks it in every pytest
run, also in projects that have nothing to do with fmtest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fmtest.errors import ConfigError

CONFIG_NAME = "fmtest.toml"


def find_config(args: Sequence[str], invocation_dir: Path) -> Path | None:
    """The suite config of a run: `fmtest.toml` beside the test files or folders named on the command
    line (in the folder itself, or its `suites/`), else `<invocation_dir>/suites/fmtest.toml`.

    Named tests in folders with different configs are refused: one run has one config.
    """
    found = set()
    for arg in args:
        if arg.startswith("-"):
            continue
        target = Path(arg.split("::")[0]).expanduser()
        target = target if target.is_absolute() else invocation_dir / target
        if not target.exists():
            continue
        folder = target if target.is_dir() else target.parent
        for candidate in (folder / CONFIG_NAME, folder / "suites" / CONFIG_NAME):
            if candidate.is_file():
                found.add(candidate.resolve())
                break
    if len(found) > 1:
        raise ConfigError(f"the tests named use different suite configs ({', '.join(sorted(map(str, found)))}); "
                          "run them separately or pass --fm-config")
    if found:
        return found.pop()
    fallback = invocation_dir / "suites" / CONFIG_NAME
    return fallback if fallback.is_file() else None
