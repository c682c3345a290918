"""The viewer's layers of a run: every layer also when the predictions come from the cache."""

from __future__ import annotations

import json

from toy_fmtest import make_suite

MAPPED = """
default_pipelines = ["toy_mapped"]
[pipelines.toy_mapped]
class = "toy_fmtest:ToyMapped"
"""


def layer_names(suite) -> dict[str, set[str]]:
    manifest = json.loads((suite.path / "out.json").read_text())["cases"][0]["image_layers"]
    return {image: set(layers) for image, layers in manifest["images"].items()}


def test_a_run_served_from_the_cache_shows_score_maps_as_a_fresh_run_does(pytester):
    suite = make_suite(pytester, MAPPED)
    args = ("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-cache=cache", "-q", "--fm-report=out/board.html",
            "--fm-results=out.json")
    suite.runpytest(*args).assert_outcomes(passed=1)
    fresh = layer_names(suite)
    assert all("score_map" in layers for layers in fresh.values())
    suite.runpytest(*args).assert_outcomes(passed=1)
    cached = json.loads((suite.path / "out.json").read_text())["cases"][0]["cache"]
    assert cached["hits"] == 10 and cached["predicted"] == 0  # every prediction from the cache
    assert layer_names(suite) == fresh
    folder = suite.path / "out" / "board_files" / "toy_mapped-toy"
    assert len(list(folder.glob("*.score_map.png"))) == 10
