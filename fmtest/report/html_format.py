"""Escaping and short-text formatting shared by every part of the HTML scoreboard, kept in one place so
each section escapes and prints numbers, intervals and outcomes the same way."""

from __future__ import annotations

import html
import math

from fmtest.metrics.specs import format_value
from fmtest.verdict.results import OUTCOME_WORD, CaseResult

MAX_EXTRA_ROWS = 500  # a data-quality list of thousands of findings is truncated with a note
esc = html.escape


def outcome_word(outcome: str) -> str:
    """The badge text of an outcome (PASS, FAIL...), escaped; an unknown outcome shows in capitals."""
    return esc(OUTCOME_WORD.get(outcome, outcome.upper()))


def number(value: object) -> float:
    """A stored figure as float; null (how JSON keeps NaN) and non-numbers read as NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def metric_interval(case: CaseResult, name: str) -> str:
    """The 95 % interval stored next to a metric as `name_ci_low`/`name_ci_high`; empty when absent."""
    lo, hi = case.metrics.get(f"{name}_ci_low"), case.metrics.get(f"{name}_ci_high")
    return "" if lo is None or hi is None else f"[{format_value(lo)}, {format_value(hi)}]"


def first_line(text: str | None, limit: int = 160) -> str:
    """A message's first line, cut to fit a matrix cell or a case's summary line."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def cell_text(value: object) -> str:
    """Numbers, intervals ({value, ci_low, ci_high} or [lo, hi]) and small nested dicts as short text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or isinstance(value, int | float):
        return format_value(value)
    if isinstance(value, list | tuple):
        if len(value) == 2 and all(isinstance(v, int | float) for v in value):
            return f"[{format_value(value[0])}, {format_value(value[1])}]"
        return ", ".join(cell_text(v) for v in value)
    if isinstance(value, dict):
        point = next((value[k] for k in ("value", "estimate", "rate") if k in value), None)
        lo = next((value[k] for k in ("ci_low", "low", "lower") if k in value), None)
        hi = next((value[k] for k in ("ci_high", "high", "upper") if k in value), None)
        if point is not None and lo is not None and hi is not None:
            return f"{format_value(point)} [{format_value(lo)}, {format_value(hi)}]"
        return "; ".join(f"{k}: {cell_text(v)}" for k, v in value.items() if k not in ("note", "label"))
    return str(value)
