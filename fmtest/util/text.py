"""Small text helpers every report shares, so counts read the same everywhere."""

from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """"1 case", "2 cases", "0 cases": a count with its noun in the right number (`nouns` for an irregular one)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


__all__ = ["plural"]
