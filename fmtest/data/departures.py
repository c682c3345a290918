"""How a case departs from the study as published: the record pipelines and datasets declare.

The study (shared/STUDY.md) ran Text2Seg's and SAA+'s published code, Gemini 2.5 Pro and a
supervised reference. Every way fmtest's run of a published case differs from that, for the
options in effect, is one `Departure`: what fmtest does, what the paper or the upstream code does,
and why. `Pipeline.departures` and `Dataset.departures` return them (empty when faithful);
`fmtest.report.fidelity` turns them into the fidelity table, and a scoreboard row can show their names
beside the published number so nobody compares a reconstruction with it unknowingly.

This module imports nothing from fmtest: every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fmtest.util.text import toml_literal

# "differs": the paper or the upstream code says what it did, and fmtest does otherwise.
# "unstated": neither says; what fmtest does is a choice (a reconstruction), not the study's.
DepartureKind = Literal["differs", "unstated"]
NOT_PUBLISHED = "not published"


@dataclass(frozen=True)
class Departure:
    """One difference between fmtest's run of a published case and the study's."""

    name: str  # a word or two, for beside the number: "binarisation", "saliency weights"
    ours: str  # what fmtest does with the options in effect
    upstream: str  # what the paper or the upstream code does (NOT_PUBLISHED when neither says)
    reason: str  # why fmtest does it this way
    kind: DepartureKind = "differs"
    # False: fmtest runs another model than the study's (not a setting of the same one), so the published number
    # is no yardstick for this case and no report prints it beside fmtest's as if it were
    comparable: bool = True

    def __post_init__(self) -> None:
        for field_name in ("name", "ours", "upstream", "reason"):
            if not getattr(self, field_name).strip():
                raise ValueError(f"Departure.{field_name} must say something")
        if self.kind not in ("differs", "unstated"):
            raise ValueError(f"Departure.kind must be 'differs' or 'unstated', got {self.kind!r}")


def unless_equal(name: str, ours: object, upstream: object, reason: str) -> list[Departure]:
    """[] when a setting has the upstream value, else the one Departure giving both values (as TOML shows them)."""
    if ours == upstream:
        return []
    return [Departure(name, toml_literal(ours), toml_literal(upstream), reason)]


__all__ = ["NOT_PUBLISHED", "Departure", "DepartureKind", "unless_equal"]
