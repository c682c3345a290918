"""The one way pipelines read `[pipelines.<name>]`: names, types, conversions, ranges and choices."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fmtest.errors import ConfigError
from fmtest.pipelines import PIPELINES, pipeline_class
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.options import (
    parse_options,
    require_at_least_one,
    require_choice,
    require_in_range,
    require_unit_interval,
)


@dataclass(frozen=True)
class DemoOptions:
    threshold: float = 0.5
    size: int = 32
    flag: bool = True
    mode: str = "fast"
    texts: tuple[str, ...] = ("a",)
    url: str | None = None


def test_defaults_then_overrides_then_options():
    assert parse_options(DemoOptions, "demo", {}) == DemoOptions()
    opts = parse_options(DemoOptions, "demo", {"threshold": 1, "size": 224.0, "texts": ["x", "y"], "url": None},
                         defaults={"mode": "slow", "size": 8})
    assert opts == DemoOptions(threshold=1.0, size=224, mode="slow", texts=("x", "y"))
    assert isinstance(opts.threshold, float) and isinstance(opts.size, int)


@pytest.mark.parametrize("options, message", [
    ({"treshold": 0.3}, r"^\[pipelines\.demo\]: unknown option\(s\) treshold; known: flag, mode, size, texts, "),
    ({"threshold": "high"}, r"^\[pipelines\.demo\]: threshold must be float, got 'high'"),
    ({"threshold": True}, "threshold must be float"),
    ({"size": 2.5}, "size must be int"),
    ({"size": False}, "size must be int"),
    ({"flag": 1}, "flag must be bool"),
    ({"mode": 3}, "mode must be str"),
    ({"texts": "x"}, "texts must be a list of strings"),
    ({"texts": ["x", 1]}, "texts must be a list of strings"),
    ({"size": None}, "size must be int"),
])
def test_bad_options_name_the_table_and_key(options, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_options(DemoOptions, "demo", options)
    assert error.value.path == "[pipelines.demo]"


def test_accepted_limits_the_keys_a_suite_may_set():
    assert parse_options(DemoOptions, "demo", {"size": 4}, accepted={"size"}).size == 4
    with pytest.raises(ConfigError, match=r"unknown option\(s\) mode; known: size$"):
        parse_options(DemoOptions, "demo", {"mode": "slow"}, accepted={"size"})


def test_range_and_choice_helpers():
    require_unit_interval("demo", a=0.0, b=1.0)
    with pytest.raises(ConfigError, match=r"^\[pipelines\.demo\]: b must be in \[0, 1\], got 1.5"):
        require_unit_interval("demo", a=0.5, b=1.5)
    require_at_least_one("demo", n=1)
    with pytest.raises(ConfigError, match=r"^\[pipelines\.demo\]: k must be >= 1, got 0"):
        require_at_least_one("demo", n=3, k=0)
    require_choice("demo", "mode", "b", ("a", "b"))
    with pytest.raises(ConfigError, match=r"^\[pipelines\.demo\]: mode must be one of a, b, got 'c'"):
        require_choice("demo", "mode", "c", ("a", "b"))


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_pipeline_rejects_an_unknown_option_by_name(name, tmp_path):
    context = PipelineContext(dataset="satsim", options={"no_such_option": 1}, weights_dir=tmp_path,
                              suite_dir=tmp_path, work_dir=tmp_path)
    with pytest.raises(ConfigError, match=rf"^\[pipelines\.{name}\]: unknown option\(s\) no_such_option;"):
        pipeline_class(name)(context)


def test_out_of_range_names_every_failed_option_with_its_value_and_the_rules():
    options = DemoOptions(threshold=2.0, size=0)
    require_in_range("demo", options, {"threshold": True, "size": True}, "rules")
    with pytest.raises(ConfigError, match=r"^\[pipelines\.demo\]: out of range: threshold=2\.0, size=0 "
                                          r"\(threshold <= 1, size >= 1\)$"):
        require_in_range("demo", options, {"threshold": False, "mode": True, "size": False},
                         "threshold <= 1, size >= 1")
