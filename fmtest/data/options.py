"""Reading a dataset's `[datasets.<name>]` options, and the helpers datasets build their splits with.

Every dataset reads its table through `parse_options`, so a typo in a suite config fails the same
way everywhere; `seeded_subset` draws the study's seeded test subsets; `dataset_folder` finds an
on-disk dataset under the data root.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from fmtest.errors import ConfigError, DataError

OptionsT = TypeVar("OptionsT")
# What a dataset does with a defective image whose mask is empty (option `empty_nok_masks`, see
# Dataset.checked_defect_mask): refuse it, or leave it out of IoU and count it.
EMPTY_NOK_MASKS = ("error", "exclude")


def parse_options(cls: type[OptionsT], options: Mapping[str, object], dataset: str) -> OptionsT:
    """Build a dataset's options dataclass from its `[datasets.<name>]` table.

    Unknown keys and values of the wrong type raise ConfigError naming the key, so a typo in the
    suite config never silently falls back to a default. Fields annotated `... | None` accept None.
    """
    where = f"[datasets.{dataset}]"
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}", where)
    values = {key: _coerce(value, hints[key], key, where) for key, value in options.items()}
    return cls(**values)


def _coerce(value: object, hint: object, key: str, where: str) -> object:
    """`value` as the field's type; a field of several types (`str | dict[str, str]`) takes the first that fits."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    alternatives = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if value is None and union and type(None) in typing.get_args(hint):
        return None
    expected = []
    for alternative in alternatives:
        fits, converted, what = _convert(value, alternative, key)
        if fits:
            return converted
        expected.append(what)
    raise ConfigError(f"option {key} must be {' or '.join(expected)}, got {value!r}", where)


def _convert(value: object, hint: object, key: str) -> tuple[bool, object, str]:
    """(fits, converted value, what the type accepts in words)."""
    if typing.get_origin(hint) is tuple:
        fits = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return fits, tuple(value) if fits else None, "a list of names"
    if typing.get_origin(hint) is dict:
        fits = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        return fits, dict(value) if fits else None, "a table of strings"
    if hint is float:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
        return fits, float(value) if fits else None, "a number"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value, "an integer"
    if hint is bool or hint is str:
        return isinstance(value, hint), value, "true or false" if hint is bool else "a string"
    raise TypeError(f"option {key}: unsupported option type {hint!r}")


def require_non_negative(where: str, **values: float | None) -> None:
    """Counts and strengths below zero are configuration mistakes."""
    for key, value in values.items():
        if value is not None and value < 0:
            raise ConfigError(f"option {key} must be >= 0, got {value!r}", f"[datasets.{where}]")


def check_mask_options(where: str, mask_threshold: int | None = None, empty_nok_masks: str = "error") -> None:
    """`mask_threshold` is an 8-bit level (0 to 254); `empty_nok_masks` one of EMPTY_NOK_MASKS."""
    table = f"[datasets.{where}]"
    if mask_threshold is not None and not 0 <= mask_threshold <= 254:
        raise ConfigError(f"option mask_threshold must be an 8-bit level from 0 to 254 (a pixel above it is defect), "
                          f"got {mask_threshold}", table)
    if empty_nok_masks not in EMPTY_NOK_MASKS:
        raise ConfigError(f"option empty_nok_masks must be one of {', '.join(map(repr, EMPTY_NOK_MASKS))}, "
                          f"got {empty_nok_masks!r}", table)


def seeded_subset(items: Sequence, n: int | None, rng: np.random.Generator, what: str, path: object) -> list:
    """`n` items drawn without replacement, in their original order; None or 0 means all of them.

    Raises DataError when the data holds fewer than `n`: silently using fewer would change the protocol.
    """
    if not n:
        return list(items)
    if n > len(items):
        raise DataError(f"asked for {n} {what} but only {len(items)} are available", path)
    chosen = np.sort(rng.choice(len(items), size=n, replace=False))
    return [items[i] for i in chosen]


def dataset_folder(root: Path | None, folder_name: str, dataset: str) -> Path:
    """`<root>/<folder_name>`, which must exist: on-disk datasets cannot run without a data root."""
    if root is None:
        raise ConfigError(f"dataset {dataset} needs a data root: pass --fm-data-root or set FMTEST_DATA")
    folder = Path(root) / folder_name
    if not folder.is_dir():
        raise DataError(f"dataset folder for {dataset} not found", folder)
    return folder
