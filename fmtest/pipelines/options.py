"""Reading and checking a pipeline's `[pipelines.<name>]` table, the same way for every pipeline.

A typo in a suite config must fail loudly instead of falling back to a default: an unknown key, a
value of the wrong type or out of range raises ConfigError naming the table and the key. Each
pipeline declares its options as a frozen dataclass (field types and the defaults);
`parse_options` builds it from the table, and the `require_*` helpers check ranges and choices.

TOML numbers are converted to what a field says: an integer where a float is wanted, a whole
float (224.0) where an integer is wanted. A list of strings becomes a tuple; `X | None` fields
also take None. A bool is never a number.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Collection, Iterable, Mapping
from typing import TypeVar

from fmtest.errors import ConfigError

OptionsT = TypeVar("OptionsT")


def table(pipeline: str) -> str:
    """How a pipeline's options are named in messages: `[pipelines.<name>]`."""
    return f"[pipelines.{pipeline}]"


def parse_options(cls: type[OptionsT], pipeline: str, options: Mapping[str, object], *,
                  defaults: Mapping[str, object] | None = None, accepted: Collection[str] | None = None) -> OptionsT:
    """The options dataclass `cls` from `defaults` (over the fields' own) overlaid with `options`.

    `accepted` limits the keys a suite may set (default: every field), for option classes shared by
    pipelines that use only some of the fields.
    """
    hints = typing.get_type_hints(cls)
    accepted = [f.name for f in dataclasses.fields(cls)] if accepted is None else accepted
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(accepted))}",
                          table(pipeline))
    values = {**(defaults or {}), **options}
    return cls(**{key: _convert(value, hints[key], key, pipeline) for key, value in values.items()})


def _convert(value: object, hint: object, key: str, pipeline: str) -> object:
    args = typing.get_args(hint)
    if type(None) in args:  # `X | None`
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if hint is bool and isinstance(value, bool) or hint is str and isinstance(value, str):
        return value
    if hint is float and numeric:
        return float(value)
    if hint is int and numeric and float(value).is_integer():
        return int(value)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key} must be a list of strings, got {value!r}", table(pipeline))
    if hint not in (bool, str, float, int):
        raise TypeError(f"option {key}: unsupported option type {hint!r}")
    raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}", table(pipeline))


def require_in_range(pipeline: str, options: object, checks: Mapping[str, bool], rules: str) -> None:
    """Name every option whose check (field name -> passed) failed, with its value, in one message.

    For options dataclasses that check all their ranges at once in `__post_init__`; `rules` says them.
    """
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        values = ", ".join(f"{name}={getattr(options, name)!r}" for name in bad)
        raise ConfigError(f"out of range: {values} ({rules})", table(pipeline))


def require_unit_interval(pipeline: str, **values: float) -> None:
    """Thresholds and probabilities live in [0, 1]."""
    for key, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {value}", table(pipeline))


def require_at_least_one(pipeline: str, **values: int) -> None:
    """Counts and sizes that must be positive (a point grid, a batch, top-k)."""
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}", table(pipeline))


def require_choice(pipeline: str, key: str, value: object, choices: Iterable[str]) -> None:
    """A string option that names one of a fixed set (a model variant, a mode)."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}", table(pipeline))
