"""How each outcome looks, written once: its word, its colour in the HTML pages, in the terminal and in Markdown.

Every coloured thing on every surface takes its colour from here, so a colour means one status everywhere: green
passed, vermillion (red) failed, purple error, grey skipped. The colours are darkened Okabe-Ito hues (colour-blind
safe, white text readable on them), and every coloured mark also carries the word, so colour is never the only cue.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fmtest.verdict.results import OUTCOME_WORD


@dataclass(frozen=True)
class OutcomeStyle:
    word: str  # PASS, FAIL, ERROR, SKIP
    html: str  # the badge's and the border's colour
    tint: str  # a light background of the same hue
    terminal: str | None  # the TerminalWriter markup colour of the word; None: plain
    mark: str  # a coloured sign for Markdown, where no colour can be set


STYLES = {
    "passed": OutcomeStyle(OUTCOME_WORD["passed"], "#007a5a", "#dcf1ea", "green", "\U0001f7e2"),  # green circle
    "failed": OutcomeStyle(OUTCOME_WORD["failed"], "#c0392b", "#fbe0dc", "red", "\U0001f534"),  # red circle
    "error": OutcomeStyle(OUTCOME_WORD["error"], "#8e3a7a", "#f4e0ee", "purple", "\U0001f7e3"),  # purple circle
    "skipped": OutcomeStyle(OUTCOME_WORD["skipped"], "#5f5f5f", "#ececec", None, "\u26aa"),  # white circle
}


def style(outcome: str) -> OutcomeStyle:
    """An outcome's style; an unknown outcome looks skipped (grey), in capitals."""
    known = STYLES.get(outcome)
    return known if known is not None else dataclasses.replace(STYLES["skipped"], word=outcome.upper())


def css_variables() -> str:
    """`:root { --passed: ...; --passed-tint: ...; ... }`: the stylesheets read the outcome colours from these."""
    pairs = "".join(f"--{o}: {s.html}; --{o}-tint: {s.tint}; " for o, s in STYLES.items())
    return f":root {{ {pairs}}}"


__all__ = ["STYLES", "OutcomeStyle", "css_variables", "style"]
