"""`fmtest scoreboard RESULTS`: a results file's scoreboard as the run printed it, and the README's check.

The README's default-run table is this command's output on a run of the default suite, pasted between
`<!-- default-run:start -->` and `<!-- default-run:end -->`; `--check-readme README.md` compares that
table with a results file (CI runs it on its own run of the default suite), so the README's numbers are a
run's, not a memory of one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from fmtest.cli.runs import add_runs_dir_options, runs_dir
from fmtest.errors import ConfigError

README_START, README_END = "<!-- default-run:start -->", "<!-- default-run:end -->"
README_WIDTH = 80  # the README's table is printed at this width, as an 80-column terminal shows it
# Another CPU may move a figure by up to 5.3e-3 (README, "Same inputs, same numbers"), so a printed
# three-decimal figure by up to 0.006; a verdict, a count or a case never differs.
FIGURE_BOUND = 0.006
_NUMBER = re.compile(r"-?\d+\.\d+")
_AFTER_TABLE = ("skipped (", "departures from the study", "robustness")  # what follows the cases that ran
_COUNTS = re.compile(r"^\d+ cases?: ")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scoreboard", help="print a results file's scoreboard; check the README's table",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a results JSON file (--fm-results or fmtest merge), or a kept run: "
                        "its id, last, last~1, main")
    parser.add_argument("--csv", action="store_true", help="print the scoreboard as CSV (as --fm-csv writes it): "
                        "a row per case, each gated metric with its interval and threshold")
    parser.add_argument("--width", type=int, default=README_WIDTH, help=f"columns (default {README_WIDTH})")
    parser.add_argument("--check-readme", type=Path, metavar="README",
                        help="exit 1 when the README's default-run table disagrees with this run beyond "
                             f"{FIGURE_BOUND} in a figure, or in any verdict, count or case")
    add_runs_dir_options(parser)
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from fmtest.report.results_file import read_json
    from fmtest.report.runs import results_path
    from fmtest.report.terminal import render_scoreboard

    results = read_json(results_path(args.results, lambda: runs_dir(args)))
    if args.csv:
        from fmtest.report.scoreboard_csv import scoreboard_csv

        print(scoreboard_csv(results), end="")
        return 0
    table = readme_table(render_scoreboard(results, width=args.width))
    if args.check_readme is None:
        print(table)
        return 0
    differences = table_differences(readme_section(args.check_readme), table)
    for line in differences:
        print(f"{args.check_readme}: {line}", file=sys.stderr)
    if differences:
        print(f"{args.check_readme}: the default-run table is not this run's; replace it with "
              f"`fmtest scoreboard {args.results}`", file=sys.stderr)
        return 1
    print(f"{args.check_readme}: the default-run table agrees with {args.results}")
    return 0


def readme_table(scoreboard: str) -> str:
    """The cases that ran and the counts line: no title (time and commit change with every run) and no skip
    reasons (they name this machine's folders)."""
    lines = scoreboard.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("case ")), 0)
    end = next((i for i, line in enumerate(lines) if i > start and line.startswith(_AFTER_TABLE)), len(lines))
    counts = [lines[-1]] if end < len(lines) and _COUNTS.match(lines[-1]) else []
    return "\n".join(lines[start:end] + counts)


def readme_section(readme: Path) -> str:
    """The fenced block between the README's default-run markers."""
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read it: {e.strerror or e}", readme) from e
    if README_START not in text or README_END not in text:
        raise ConfigError(f"no default-run table: expected {README_START} ... {README_END}", readme)
    section = text[text.index(README_START) + len(README_START):text.index(README_END)].strip()
    return re.sub(r"^```\w*\n|\n```$", "", section)


def table_differences(documented: str, printed: str) -> list[str]:
    """One line per row where the two tables disagree: any word but a figure, or a figure by more than
    FIGURE_BOUND."""
    found = []
    old, new = documented.splitlines(), printed.splitlines()
    if len(old) != len(new):
        found.append(f"{len(old)} table lines documented, {len(new)} printed")
    for number, (a, b) in enumerate(zip(old, new, strict=False), start=1):
        words_a, words_b = _NUMBER.sub("#", a).split(), _NUMBER.sub("#", b).split()
        figures_a, figures_b = [float(x) for x in _NUMBER.findall(a)], [float(x) for x in _NUMBER.findall(b)]
        if words_a != words_b or len(figures_a) != len(figures_b):
            found.append(f"line {number}: documented {a.strip()!r}, printed {b.strip()!r}")
        elif any(abs(x - y) > FIGURE_BOUND + 1e-9 for x, y in zip(figures_a, figures_b, strict=True)):
            found.append(f"line {number}: a figure differs by more than {FIGURE_BOUND}: documented {a.strip()!r}, "
                         f"printed {b.strip()!r}")
    return found
