"""The VLM request store follows the prediction cache: no store when the run gives no folder (--fm-no-cache),
a folder that cannot be written costs one warning and no answers, and `clear_request_store` empties it.

Each test runs the real SDK clients of both APIs against a local server and counts what reaches it.
"""

from __future__ import annotations

import os
import warnings

import pytest
from fakes import unwritable_folder
from vlm_servers import GeminiServer, OpenAIServer, small_satsim

from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.gemini import GeminiBasic
from fmtest.pipelines.openai_vlm import OpenAIVLM
from fmtest.pipelines.vlm.store import (
    RequestStoreUnavailableWarning,
    clear_request_store,
    store_folder,
)

NOK_ANSWER = '{"label": "NOK", "reasoning": "a void under the die"}'
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def data():
    dataset = small_satsim(n_good=1, n_defective=2)
    return dataset, dataset.reference, list(dataset.test)


@pytest.fixture(params=[GeminiBasic, OpenAIVLM], ids=["gemini", "openai"])
def api(request, monkeypatch):
    """(pipeline class, server answering NOK to everything), the environment pointed at the server."""
    pipeline = request.param
    server_type = GeminiServer if pipeline is GeminiBasic else OpenAIServer
    with server_type.serving(monkeypatch) as start:
        yield pipeline, start(server_type.answering(NOK_ANSWER))


def run(pipeline_class, data, request_store, tmp_path):
    """A fresh pipeline (a new run) predicting every test image with the given store folder."""
    dataset, reference, test = data
    context = PipelineContext(dataset="satsim", options={"backoff_initial_s": 0.01, "timeout_s": 10.0},
                              request_store=request_store, work_dir=tmp_path / "work", suite_dir=tmp_path,
                              progress=False)
    pipeline = pipeline_class(context)
    pipeline.fit(dataset.train, reference)
    return pipeline, pipeline.predict(test)


def test_without_a_store_folder_every_run_asks_the_server_and_nothing_is_kept(api, data, tmp_path):
    pipeline_class, server = api
    n = len(data[2])
    for _ in range(2):
        _, predictions = run(pipeline_class, data, None, tmp_path)
        assert [(p.label, p.error, p.usage["replayed"]) for p in predictions] == [("NOK", None, 0.0)] * n
    assert server.count == 2 * n  # --fm-no-cache: the second run replays nothing
    assert list(tmp_path.rglob("*.sqlite")) == []  # and nothing was written anywhere


@pytest.mark.parametrize("fault", [
    pytest.param("read-only folder", marks=pytest.mark.skipif(ROOT, reason="root writes to read-only folders")),
    "a file in the way",
])
def test_a_store_folder_that_cannot_be_written_warns_once_and_the_answers_still_come(api, data, tmp_path, fault):
    pipeline_class, server = api
    with unwritable_folder(tmp_path / "cache", read_only=fault == "read-only folder") as cache:
        folder = store_folder(cache)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, predictions = run(pipeline_class, data, folder, tmp_path)
    said = [str(w.message) for w in caught if issubclass(w.category, RequestStoreUnavailableWarning)]
    assert len(said) == 1, said
    assert str(folder) in said[0] and "goes on without the VLM request store" in said[0]
    assert [(p.label, p.error) for p in predictions] == [("NOK", None)] * len(data[2])
    assert server.count == len(data[2])


def test_clearing_the_store_removes_its_answers_so_the_next_run_asks_again(api, data, tmp_path):
    pipeline_class, server = api
    cache = tmp_path / "cache"
    n = len(data[2])
    run(pipeline_class, data, store_folder(cache), tmp_path)
    _, replayed = run(pipeline_class, data, store_folder(cache), tmp_path)
    assert server.count == n and all(p.usage["replayed"] == 1 for p in replayed)

    assert clear_request_store(cache, pipeline="another_pipeline") == 0  # another pipeline's answers only
    assert clear_request_store(cache) == n
    _, asked = run(pipeline_class, data, store_folder(cache), tmp_path)
    assert server.count == 2 * n and all(p.usage["replayed"] == 0 for p in asked)
    assert clear_request_store(cache, pipeline=pipeline_class.name) == n


def test_clearing_a_cache_folder_without_a_store_changes_nothing(tmp_path):
    assert clear_request_store(tmp_path / "cache") == 0
    assert not (tmp_path / "cache").exists()
