"""Small text helpers every report shares, so counts read the same everywhere."""

from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """"1 case", "2 cases", "0 cases": a count with its noun in the right number (`nouns` for an irregular one)."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def toml_literal(value: object) -> str:
    """A value as TOML would write it (`true`, `"text"`, `[1, 2]`, `{a = 1}`): messages, the config reference and
    the study's departures show settings the way a user types them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


__all__ = ["plural", "toml_literal"]
