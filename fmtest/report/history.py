"""`fmtest history DIR`: every metric of every case over a folder of results JSON files, as one HTML page.

Runs are ordered by their `created` time, not by file name, so CI artifacts can be dropped in as
downloaded. A regression is a drop from the case's previous run larger than the tolerance (a rise,
for rates where lower is better). Each case has an anchor named by its id, so the scoreboard links
`history.html#<case-id>`. Files that cannot be read are named and skipped, never fatal.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fmtest.errors import ConfigError, DataError
from fmtest.metrics import specs
from fmtest.metrics.specs import format_value
from fmtest.report.outcomes import STYLES, css_variables
from fmtest.report.results_file import read_json
from fmtest.util.fsutil import atomic_write
from fmtest.util.text import plural
from fmtest.verdict.gates import gate_for, main_metric
from fmtest.verdict.results import OUTCOME_WORD, CaseResult, RunResults

esc = html.escape

DEFAULT_TOLERANCE = 0.02
TIMING_SUFFIXES = ("_seconds", "_per_second")  # plotted, but speed on shared runners is too noisy to flag
NOT_PLOTTED = frozenset({"n_images", "n_defective"})
_CI_SUFFIXES = ("_ci_low", "_ci_high")
_FLOAT_SLACK = 1e-9  # 0.60 -> 0.58 is a drop of exactly the tolerance, not more
MAX_X_TICKS = 6  # run dates on the x axis; more would overlap
Y_PADDING = 0.1  # share of the y range left free above and below the data, so no point sits on the frame
MIN_SPAN = 0.1  # smallest y range of a score or rate: five times the default tolerance, so noise looks small
PLOT_W, PLOT_H, PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 250, 150, 40, 8, 8, 118


@dataclass
class Run:
    path: Path
    created: dt.datetime
    results: RunResults


@dataclass
class Regression:
    case_id: str
    metric: str
    run_index: int  # into History.runs
    previous: float
    current: float

    @property
    def delta(self) -> float:
        return self.current - self.previous


@dataclass
class History:
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per skipped file, naming it
    tolerance: float = DEFAULT_TOLERANCE
    regressions: dict[str, list[Regression]] = field(default_factory=dict)  # case id -> its regressions

    def case_ids(self) -> list[str]:
        return list(dict.fromkeys(c.id for run in self.runs for c in run.results.cases))

    def series(self, case_id: str) -> list[CaseResult | None]:
        """The case in each run, None where that run did not have it."""
        return [run.results.case(case_id) for run in self.runs]


def load_history(directory: str | os.PathLike, *, tolerance: float = DEFAULT_TOLERANCE) -> History:
    """Every results JSON under `directory`, oldest first, with regressions found at `tolerance`.

    Unreadable or undated files go to `problems`.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance >= 0:
        raise ConfigError(f"history tolerance must be a number >= 0, got {tolerance!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("not a folder of results JSON files", directory)
    history = History(tolerance=float(tolerance))
    for path in sorted(directory.rglob("*.json")):
        try:
            results = read_json(path)
        except DataError as e:
            history.problems.append(str(e))
            continue
        except (TypeError, ValueError, AttributeError, KeyError) as e:  # a case shaped unlike CaseResult
            history.problems.append(f"{path}: not a readable fmtest results file ({type(e).__name__}: {e})")
            continue
        created = _parse_created(results.created)
        if created is None:
            history.problems.append(f"{path}: no valid 'created' timestamp ({results.created!r}); "
                                    "written by an older fmtest?")
            continue
        history.runs.append(Run(path, created, results))
    history.runs.sort(key=lambda run: (run.created, str(run.path)))
    history.regressions = {case_id: find_regressions(history, case_id) for case_id in history.case_ids()}
    return history


def _parse_created(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def plotted_metrics(cases: list[CaseResult | None]) -> list[str]:
    """Numeric metrics seen in any run, main metric first; CI bounds are drawn as bands, not lines."""
    names: dict[str, None] = {}
    for case in cases:
        if case is None:
            continue
        main = main_metric(case)
        if main in case.metrics:
            names.setdefault(main)
        for name, value in case.metrics.items():
            if (isinstance(value, int | float) and not isinstance(value, bool) and name not in NOT_PLOTTED
                    and not name.endswith(_CI_SUFFIXES)):
                names.setdefault(name)
    return list(names)


def find_regressions(history: History, case_id: str) -> list[Regression]:
    """Runs where a metric got worse than the case's previous run by more than the history's tolerance."""
    found = []
    series = history.series(case_id)
    latest = next(c for c in reversed(series) if c is not None)
    for metric in plotted_metrics(series):
        if metric.endswith(TIMING_SUFFIXES):
            continue
        gate = gate_for(latest, metric)
        lower_is_better = specs.lower_is_better(metric) or (gate is not None and gate.upper)
        previous = None
        for index, case in enumerate(series):
            value = _value(case, metric)
            if value is None:
                continue
            if previous is not None:
                worse_by = (value - previous) if lower_is_better else (previous - value)
                if worse_by > history.tolerance + _FLOAT_SLACK:
                    found.append(Regression(case_id, metric, index, previous, value))
            previous = value
    return found


def served_from_cache(case: CaseResult | None) -> bool:
    """Every prediction of the case came from the cache: nothing was fitted or predicted, so its timings are no
    measurement."""
    return case is not None and case.cache is not None and case.cache.predicted == 0 and case.cache.hits > 0


def _value(case: CaseResult | None, metric: str) -> float | None:
    if metric.endswith(TIMING_SUFFIXES) and served_from_cache(case):
        return None  # a fit time of 0 would read as a fast fit: such a run is marked cached instead
    value = None if case is None else case.metrics.get(metric)
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return None
    return float(value)


def plot_case(history: History, case_id: str) -> str:
    """Small multiples as inline SVG, one per metric: value over runs, its CI band, threshold, regressions
    marked. Every point names its run, date and commit when hovered."""
    series = history.series(case_id)
    metrics = plotted_metrics(series)
    if not metrics:
        return "<p class='note'>no metrics recorded</p>"
    return "".join(_metric_plot(history, case_id, series, metric) for metric in metrics)


def y_range(metric: str, values: list[float]) -> tuple[float, float]:
    """The y axis of one metric: scores and rates get at least MIN_SPAN around their values, inside [0, 1],
    so a flat series stays flat instead of being stretched over the whole panel; other figures start at 0."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    spec = specs.spec(metric)
    if (spec is not None and spec.kind in ("score", "rate")) or (spec is None and 0.0 <= lo and hi <= 1.0):
        middle, half = (lo + hi) / 2, max(hi - lo, MIN_SPAN) / 2 * (1 + 2 * Y_PADDING)
        lo, hi = middle - half, middle + half
        shift = max(0.0, -lo) - max(0.0, hi - 1.0)  # slide the window back inside [0, 1]
        return max(0.0, lo + shift), min(1.0, hi + shift)
    if spec is not None and spec.kind == "delta":
        reach = max(abs(lo), abs(hi), MIN_SPAN / 2)
        return -reach, reach
    lo = min(0.0, lo)
    return lo, (hi * (1 + Y_PADDING) if hi > lo else lo + 1.0)


def _metric_plot(history: History, case_id: str, series: list[CaseResult | None], metric: str) -> str:
    values = [_value(c, metric) for c in series]
    low = [_value(c, metric + "_ci_low") for c in series]
    high = [_value(c, metric + "_ci_high") for c in series]
    threshold = _latest_limit(series, metric)
    known = [v for v in values + low + high + [threshold] if v is not None]
    bottom_value, top_value = y_range(metric, known)
    plot_w = PLOT_W - PLOT_LEFT - PLOT_RIGHT

    def x(index: int) -> float:
        return PLOT_LEFT + (index + 0.5) / max(1, len(series)) * plot_w

    def y(value: float) -> float:
        fraction = (value - bottom_value) / (top_value - bottom_value)
        return PLOT_BOTTOM - min(1.0, max(0.0, fraction)) * (PLOT_BOTTOM - PLOT_TOP)

    parts = [f"<rect class='panel' x='{PLOT_LEFT}' y='{PLOT_TOP}' width='{plot_w}' height='{PLOT_BOTTOM - PLOT_TOP}'/>"]
    for segment in _runs_of_points(low, high):
        upper = " ".join(f"{x(i):.1f},{y(high[i]):.1f}" for i in segment)
        lower = " ".join(f"{x(i):.1f},{y(low[i]):.1f}" for i in reversed(segment))
        parts.append(f"<polygon class='band' points='{upper} {lower}'/>")
    if threshold is not None:
        parts.append(f"<line class='threshold' x1='{PLOT_LEFT}' x2='{PLOT_W - PLOT_RIGHT}' y1='{y(threshold):.1f}' "
                     f"y2='{y(threshold):.1f}'><title>threshold {format_value(threshold)}</title></line>")
    for segment in _runs_of_points(values):
        if len(segment) > 1:
            parts.append("<polyline class='line' points='"
                         + " ".join(f"{x(i):.1f},{y(values[i]):.1f}" for i in segment) + "'/>")
    regressed = {r.run_index: r for r in history.regressions.get(case_id, []) if r.metric == metric}
    for i, value in enumerate(values):
        if value is None:
            continue
        title = esc(_point_title(history, i, metric, value, low[i], high[i], regressed.get(i)))
        if i in regressed:
            cx, cy = x(i), y(value)
            parts.append(f"<path class='point regression' data-run='{i}' d='M{cx - 5:.1f},{cy - 4:.1f} "
                         f"L{cx + 5:.1f},{cy - 4:.1f} L{cx:.1f},{cy + 5:.1f} Z'><title>{title}</title></path>")
        else:
            parts.append(f"<circle class='point' data-run='{i}' cx='{x(i):.1f}' cy='{y(value):.1f}' r='3.2'>"
                         f"<title>{title}</title></circle>")
    if metric.endswith(TIMING_SUFFIXES):
        for i, case in enumerate(series):
            if served_from_cache(case):
                parts.append(f"<text class='cached' data-run='{i}' x='{x(i):.1f}' y='{PLOT_BOTTOM - 4}' "
                             f"text-anchor='middle'>cached<title>run {i}: every prediction from the cache, so "
                             "nothing was fitted or timed</title></text>")
    step = max(1, math.ceil(len(series) / MAX_X_TICKS))
    for i in range(0, len(series), step):
        when, commit = run_label(history.runs[i], i)
        parts.append(f"<text class='tick x-tick' x='{x(i):.1f}' y='{PLOT_BOTTOM + 11}' text-anchor='middle'>"
                     f"<tspan x='{x(i):.1f}'>{esc(when)}</tspan><tspan x='{x(i):.1f}' dy='10'>{esc(commit)}</tspan>"
                     "</text>")
    for value in (bottom_value, top_value):
        parts.append(f"<text class='tick y-tick' x='{PLOT_LEFT - 4}' y='{y(value) + 3:.1f}' text-anchor='end'>"
                     f"{_tick(value)}</text>")
    summary = f"{metric} over {plural(len(series), 'run')}: " + ", ".join("-" if v is None else format_value(v) for v in values)
    return (f"<figure class='metric-plot' data-metric='{esc(metric, quote=True)}'><figcaption>"
            f"{esc(specs.label(metric))}</figcaption><svg viewBox='0 0 {PLOT_W} {PLOT_H}' width='{PLOT_W}' "
            f"height='{PLOT_H}' role='img' aria-label='{esc(summary, quote=True)}'>{''.join(parts)}</svg></figure>")


def run_label(run: Run, index: int) -> tuple[str, str]:
    """A run on the x axis: its time (day and minute, UTC) and its commit (its number when it has none)."""
    commit = (run.results.git_commit or "")[:7] or f"run {index}"
    return run.created.astimezone(dt.UTC).strftime("%m-%d %H:%M"), commit


def _runs_of_points(*columns: list[float | None]) -> list[list[int]]:
    """Consecutive run indices where every column has a value: lines and bands break at a missing run."""
    segments: list[list[int]] = [[]]
    for i, present in enumerate(all(c[i] is not None for c in columns) for i in range(len(columns[0]))):
        if present:
            segments[-1].append(i)
        elif segments[-1]:
            segments.append([])
    return [s for s in segments if s]


def _point_title(history: History, index: int, metric: str, value: float, low: float | None, high: float | None,
                 regression: Regression | None) -> str:
    run = history.runs[index].results
    text = f"run {index}, {run.created}, commit {(run.git_commit or 'unknown')[:10]}: {metric} {format_value(value)}"
    if low is not None and high is not None:
        text += f" [{format_value(low)}, {format_value(high)}]"
    if regression is not None:
        text += f"; regression from {format_value(regression.previous)} ({regression.delta:+.3f})"
    return text


def _tick(value: float) -> str:
    return f"{value:.3g}"


def _latest_limit(series: list[CaseResult | None], metric: str) -> float | None:
    for case in reversed(series):
        gate = None if case is None else gate_for(case, metric)
        if gate is not None:
            return gate.limit
    return None


def render_history_html(history: History, *, progress: bool = True) -> str:
    case_ids = history.case_ids()
    sections, toc = [], []
    for case_id in tqdm(case_ids, desc="history plots", unit="case", disable=not progress):
        regressions = history.regressions.get(case_id, [])
        latest = next(c for c in reversed(history.series(case_id)) if c is not None)
        flag = f" <span class='regressed'>{plural(len(regressions), 'regression')}</span>" if regressions else ""
        toc.append(f"<li><a href='#{esc(case_id, quote=True)}'>{esc(case_id)}</a>{flag}</li>")
        sections.append(
            f"<section id='{esc(case_id, quote=True)}'><h2>{esc(case_id)} "
            f"<span class='badge o-{esc(latest.outcome, quote=True)}'>"
            f"{esc(OUTCOME_WORD.get(latest.outcome, latest.outcome.upper()))}</span></h2>"
            f"<p class='note'>{esc(latest.task)}; latest run shown in the badge</p>"
            f"<div class='plots'>{plot_case(history, case_id)}</div>"
            f"{_regression_list(history, regressions)}</section>")
    problems = ""
    if history.problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in history.problems)
        problems = f"<h2>Skipped files</h2><ul class='problems'>{items}</ul>"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>fmtest history</title>"
        f"<style>{css_variables()}{_CSS}</style></head><body><h1>fmtest history</h1>"
        f"<p class='note'>{plural(len(history.runs), 'run')}, {plural(len(case_ids), 'case')}. A regression (&#9660;) is a drop from "
        f"the case's previous run larger than {esc(format_value(history.tolerance))} (a rise, for "
        f"{esc(', '.join(sorted(n for n, m in specs.METRICS.items() if m.higher_is_better is False)))} and metrics with a maximum). Dashed line: threshold; band: 95 % interval; x axis: each run's time (UTC) and commit; "
        "hover a point for its run. A run served entirely from the prediction cache fitted and timed nothing: its "
        "timings are marked cached, not plotted.</p>"
        f"{problems}{_runs_table(history)}<h2>Cases</h2><ul class='toc'>{''.join(toc)}</ul>{''.join(sections)}"
        "</body></html>\n")


def _runs_table(history: History) -> str:
    rows = []
    for i, run in enumerate(history.runs):
        counts = {o: sum(c.outcome == o for c in run.results.cases) for o in STYLES}
        summary = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
        rows.append(f"<tr><td>{i}</td><td>{esc(run.results.created)}</td>"
                    f"<td><code>{esc((run.results.git_commit or '')[:10])}</code></td>"
                    f"<td>{esc(summary)}</td><td><code>{esc(str(run.path))}</code></td></tr>")
    return ("<details><summary>runs</summary><table><thead><tr><th>#</th><th>created</th><th>commit</th>"
            f"<th>cases</th><th>file</th></tr></thead><tbody>{''.join(rows)}</tbody></table></details>")


def _regression_list(history: History, regressions: list[Regression]) -> str:
    if not regressions:
        return ""
    items = []
    for r in regressions:
        run = history.runs[r.run_index].results
        commit = f", commit {run.git_commit[:10]}" if run.git_commit else ""
        items.append(f"<li>{esc(r.metric)}: {format_value(r.previous)} &rarr; {format_value(r.current)} "
                     f"({r.delta:+.3f}) in run {r.run_index} ({esc(run.created)}{esc(commit)})</li>")
    return f"<ul class='regressions'>{''.join(items)}</ul>"


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 1em 2em; max-width: 1500px; color: #1a1a1a; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.note { color: #5a5a5a; } code { font-size: .9em; }
.badge { display: inline-block; padding: 0 .4em; border-radius: 3px; color: #fff; font-size: .75em; font-weight: 700; }
.o-passed { background: var(--passed); } .o-failed { background: var(--failed); } .o-error { background: var(--error); }
.o-skipped { background: var(--skipped); }
.regressed, .regressions { color: var(--failed); font-weight: 600; }
.toc { columns: 3 18em; } .problems { color: #8e3a7a; }
table { border-collapse: collapse; } th, td { text-align: left; padding: .2em .6em; border-bottom: 1px solid #ddd; }
.plots { display: flex; flex-wrap: wrap; gap: .6em; }
figure.metric-plot { margin: 0; } figure.metric-plot figcaption { font-weight: 600; font-size: .9em; }
figure.metric-plot svg { display: block; font: 9px system-ui, sans-serif; }
svg .panel { fill: #fafafa; stroke: #ddd; } svg .band { fill: #56b4e9; opacity: .3; }
svg .line { fill: none; stroke: #0072b2; stroke-width: 1.5; } svg .point { fill: #0072b2; cursor: help; }
svg .point:hover { stroke: #1a1a1a; stroke-width: 2; } svg .point.regression { fill: var(--failed); }
svg .threshold { stroke: #555; stroke-dasharray: 4 3; } svg .tick { fill: #5a5a5a; }
svg .cached { fill: #5a5a5a; font-style: italic; cursor: help; }
"""


def write_history(directory: str | os.PathLike, out: str | os.PathLike, *, tolerance: float = DEFAULT_TOLERANCE,
                  progress: bool = True) -> History:
    """Read the runs under `directory` and write the history page to `out`; returns what was read."""
    history = load_history(directory, tolerance=tolerance)
    if not history.runs:
        raise DataError("no readable fmtest results JSON in this folder"
                        + (f" ({plural(len(history.problems), 'file')} skipped)" if history.problems else ""), directory)
    document = render_history_html(history, progress=progress)
    atomic_write(out, document)
    return history

