"""The data layer's option and subset helpers: `[datasets.<name>]` parsing, seeded subsets, data folders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fmtest.data.options import dataset_folder, parse_options, seeded_subset
from fmtest.errors import ConfigError, DataError


@dataclass(frozen=True)
class Opts:
    n: int = 3
    rate: float = 0.5
    names: tuple[str, ...] = ("a",)
    flag: bool = True
    limit: int | None = 7


def test_parse_options_converts_and_checks():
    opts = parse_options(Opts, {"n": 4, "rate": 1, "names": ["x", "y"], "limit": None}, "demo")
    assert opts == Opts(n=4, rate=1.0, names=("x", "y"), flag=True, limit=None)
    assert parse_options(Opts, {}, "demo") == Opts()


@pytest.mark.parametrize("options,match", [
    ({"nn": 1}, r"\[datasets\.demo\]: unknown option\(s\) nn"),
    ({"n": "3"}, r"option n must be an integer"),
    ({"n": True}, r"option n must be an integer"),
    ({"rate": "fast"}, r"option rate must be a number"),
    ({"names": "x"}, r"option names must be a list of names"),
    ({"flag": 1}, r"option flag must be true or false"),
    ({"n": None}, r"option n must be an integer"),
])
def test_parse_options_rejects(options, match):
    with pytest.raises(ConfigError, match=match):
        parse_options(Opts, options, "demo")


def test_seeded_subset_is_stable_ordered_and_overridable():
    items = list(range(100))
    first = seeded_subset(items, 10, np.random.default_rng(0), "items", "x")
    assert first == seeded_subset(items, 10, np.random.default_rng(0), "items", "x")
    assert first == sorted(first) and len(set(first)) == 10
    assert first != seeded_subset(items, 10, np.random.default_rng(1), "items", "x")
    assert seeded_subset(items, 0, np.random.default_rng(0), "items", "x") == items
    assert seeded_subset(items, None, np.random.default_rng(0), "items", "x") == items
    with pytest.raises(DataError, match=r"list\.txt: asked for 101 items but only 100"):
        seeded_subset(items, 101, np.random.default_rng(0), "items", "list.txt")


def test_dataset_folder(tmp_path):
    (tmp_path / "mvtec").mkdir()
    assert dataset_folder(tmp_path, "mvtec", "mvtec") == tmp_path / "mvtec"
    with pytest.raises(ConfigError, match="needs a data root"):
        dataset_folder(None, "mvtec", "mvtec")
    with pytest.raises(DataError, match=r"oxford-iiit-pet: dataset folder for oxford_pets not found"):
        dataset_folder(tmp_path, "oxford-iiit-pet", "oxford_pets")


@dataclass(frozen=True)
class EitherOpts:
    source: str | dict[str, str] | None = None


def test_an_option_of_several_types_takes_the_first_that_fits():
    assert parse_options(EitherOpts, {"source": "a.json"}, "demo").source == "a.json"
    assert parse_options(EitherOpts, {"source": {"train": "t.json"}}, "demo").source == {"train": "t.json"}
    assert parse_options(EitherOpts, {"source": None}, "demo").source is None
    with pytest.raises(ConfigError, match=r"option source must be a string or a table of strings, got \['a'\]"):
        parse_options(EitherOpts, {"source": ["a"]}, "demo")
    with pytest.raises(ConfigError, match=r"must be a string or a table of strings, got \{'train': 3\}"):
        parse_options(EitherOpts, {"source": {"train": 3}}, "demo")
