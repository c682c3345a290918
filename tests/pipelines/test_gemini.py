"""gemini_basic / gemini_refined through the real google-genai client against a local fake Gemini REST API."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from vlm_servers import (
    GeminiServer,
    Reply,
    png_pixels,
    run_pipeline,
    small_satsim,
    vlm_context,
)

from fmtest.data.sample import Sample
from fmtest.errors import ConfigError, Unavailable
from fmtest.imaging.align import estimate_alignment, warp_to_reference
from fmtest.pipelines import pipeline_class
from fmtest.pipelines.gemini import GeminiBasic, GeminiRefined
from fmtest.pipelines.vlm.prompts import BASIC_PROMPT, REFERENCE_CAPTION, TEST_CAPTION

NOK_ANSWER = '{"label": "NOK", "reasoning": "a bright round void on the die"}'


@pytest.fixture(scope="module")
def data():
    dataset = small_satsim()
    return dataset, dataset.reference, list(dataset.test)


@pytest.fixture
def serve(monkeypatch):
    """Start fake Gemini servers (stopped after the test) and point the pipeline's environment at the last one."""
    with GeminiServer.serving(monkeypatch) as start:
        yield start


predict = partial(run_pipeline, cls=GeminiBasic)


answering = GeminiServer.answering


def _aligned(sample, reference) -> np.ndarray:
    return warp_to_reference(sample.image, estimate_alignment(sample.image, reference.image), reference.image.shape)


def _pixels_key(pixels: np.ndarray) -> bytes:
    return np.ascontiguousarray(pixels).tobytes()


def test_registered_under_its_names():
    assert pipeline_class("gemini_basic") is GeminiBasic and pipeline_class("gemini_refined") is GeminiRefined
    assert GeminiBasic.task == "classification"


def test_normal_answer_with_usage_and_cost(serve, data, tmp_path):
    server = serve(answering(NOK_ANSWER, prompt_tokens=1000, output_tokens=50, thoughts_tokens=20))
    predictions = predict(data, tmp_path, seed=7, price_input_per_mtok=2.0, price_output_per_mtok=10.0)
    assert len(predictions) == len(data[2]) == server.count
    for p in predictions:
        assert (p.label, p.reasoning, p.error) == ("NOK", "a bright round void on the die", None)
        assert p.usage["prompt_tokens"] == 1000 and p.usage["output_tokens"] == 70  # thinking is billed output
        assert p.usage["cost_usd"] == pytest.approx((1000 * 2.0 + 70 * 10.0) / 1e6)
        assert (p.usage["requests_sent"], p.usage["request_attempts"], p.usage["replayed"]) == (1, 1, 0)
    request = server.received[0]
    assert request.path == "/v1beta/models/gemini-2.5-pro:generateContent"
    config = request.body["generation_config"]
    assert config["temperature"] == 0 and config["seed"] == 7
    assert config["response_mime_type"] == "application/json"
    schema = config["response_schema"]
    assert schema["properties"]["label"]["enum"] == ["OK", "NOK"] and set(schema["required"]) == {"label", "reasoning"}


def test_ok_answers_pass_the_part(serve, data, tmp_path):
    serve(answering('{"label": "OK", "reasoning": "matches the reference"}'))
    assert {p.label for p in predict(data, tmp_path)} == {"OK"}


def test_model_name_is_the_model_id_and_reaches_the_server(serve, data, tmp_path):
    server = serve()
    dataset, reference, test = data
    pipeline = GeminiBasic(vlm_context(tmp_path, model="gemini-2.5-flash", api_version="v1alpha"))
    assert pipeline.model_id == "gemini-2.5-flash"
    pipeline.fit(dataset.train, reference)
    pipeline.predict(test[:1])
    assert server.received[0].path == "/v1alpha/models/gemini-2.5-flash:generateContent"


def test_the_aligned_image_reference_and_prompt_reach_the_server(serve, data, tmp_path):
    server = serve()
    dataset, reference, test = data
    predict(data, tmp_path)
    assert all(estimate_alignment(s.image, reference.image).ok for s in test)
    expected = {_pixels_key(png_pixels(_aligned(s, reference))) for s in test}
    reference_pixels = png_pixels(reference.image)
    received = set()
    for request in server.received:
        kinds = [kind for kind, _ in request.parts]
        assert kinds == ["text", "image", "text", "image", "text"]  # the image to inspect comes last
        assert request.texts == [REFERENCE_CAPTION, TEST_CAPTION, BASIC_PROMPT]
        sent_reference, sent_image = request.images
        np.testing.assert_array_equal(sent_reference, reference_pixels)
        received.add(_pixels_key(sent_image))
    assert received == set(expected)  # every test image, aligned, exactly once
    # and alignment did its job: the sent images sit closer to the reference than the recordings
    for sample in test:
        raw_error = np.abs(sample.image - reference.image).mean()
        assert np.abs(_aligned(sample, reference) - reference.image)[8:-8, 8:-8].mean() < raw_error


def test_an_image_that_cannot_be_aligned_is_sent_as_is_and_reported(serve, data, tmp_path):
    server = serve(answering(NOK_ANSWER))
    noise = np.random.default_rng(3).random((96, 96)).astype(np.float32)
    sample = Sample(id="test/noise/000", image=noise, label="NOK")
    (prediction,) = predict(data, tmp_path, samples=[sample])
    assert prediction.reasoning.startswith("[not aligned to the reference: quality")
    assert prediction.reasoning.endswith("a bright round void on the die")
    assert prediction.usage["not_aligned"] == 1
    np.testing.assert_array_equal(server.received[0].images[1], png_pixels(noise))


def test_429_then_success_waits_as_long_as_the_server_asks(serve, data, tmp_path):
    def script(n, request):
        if n == 1:
            return GeminiServer.error(429, "RESOURCE_EXHAUSTED", retry_delay="0.3s")
        return GeminiServer.answer(NOK_ANSWER)

    server = serve(script)
    (prediction,) = predict(data, tmp_path, samples=data[2][:1])
    assert prediction.label == "NOK" and prediction.error is None
    assert server.count == 2 and prediction.usage["request_attempts"] == 2
    assert prediction.usage["retry_wait_s"] >= 0.3


def test_500s_until_giving_up_fail_the_image_not_the_run(serve, data, tmp_path):
    server = serve(lambda n, request: GeminiServer.error(500, "INTERNAL"))
    (prediction,) = predict(data, tmp_path, samples=data[2][:1], max_attempts=3)
    assert prediction.label == "NOK" and "gave up after 3 attempt" in prediction.error and "500" in prediction.error
    assert server.count == 3


def test_a_400_is_not_retried(serve, data, tmp_path):
    server = serve(lambda n, request: GeminiServer.error(400, "INVALID_ARGUMENT"))
    (prediction,) = predict(data, tmp_path, samples=data[2][:1])
    assert prediction.label == "NOK" and "HTTP 400" in prediction.error and server.count == 1


def test_a_rejected_key_stops_the_case(serve, data, tmp_path, monkeypatch):
    serve()
    monkeypatch.setenv("GEMINI_API_KEY", "wrong-key")
    with pytest.raises(ConfigError, match="HTTP 401 .*check the API key"):
        predict(data, tmp_path, samples=data[2][:2])


def test_timeout(serve, data, tmp_path):
    server = serve(lambda n, request: Reply(delay_s=1.5, body=GeminiServer.answer(NOK_ANSWER).body))
    (prediction,) = predict(data, tmp_path, samples=data[2][:1], timeout_s=0.3, max_attempts=2)
    assert prediction.label == "NOK" and "Timeout" in prediction.error and "gave up after 2" in prediction.error
    assert server.count == 2


@pytest.mark.parametrize("text, complaint", [
    ("The part looks defect-free.", "no JSON object"),
    ('{"label": "MAYBE", "reasoning": "unsure"}', "unknown label 'MAYBE'"),
    ('{"label": "OK", "reasoning": "cut', "no JSON object"),
    (None, "empty answer"),
])
def test_malformed_answers_are_failed_nok_and_recorded(serve, data, tmp_path, text, complaint):
    serve(answering(text))
    dataset, reference, test = data
    pipeline = GeminiBasic(vlm_context(tmp_path))
    pipeline.fit(dataset.train, reference)
    (prediction,) = pipeline.predict(test[:1])
    assert prediction.label == "NOK" and complaint in prediction.error
    # recorded, counted, but not an answer: the next run asks again
    (record,) = _records(pipeline)
    assert not record.answered and record.failures == 1 and complaint in record.error


def _records(pipeline):
    import sqlite3

    with sqlite3.connect(pipeline.store.path) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM requests")]
    return [pipeline.store.lookup(k) for k in keys]


@pytest.mark.parametrize("reply, complaint", [
    (GeminiServer.blocked("SAFETY"), "prompt blocked (SAFETY)"),
    (GeminiServer.answer(None, finish="SAFETY"), "finish reason SAFETY"),
    (GeminiServer.answer('{"label": "OK", "reasoning": "fine"}', finish="SAFETY"), "finish reason SAFETY"),
    (GeminiServer.answer('{"label": "OK", "reasoning": "fi', finish="MAX_TOKENS"), "finish reason MAX_TOKENS"),
    (Reply(200, {"candidates": []}), "no candidates"),
])
def test_refusals_never_pass_a_part(serve, data, tmp_path, reply, complaint):
    serve(lambda n, request: reply)
    (prediction,) = predict(data, tmp_path, samples=data[2][:1])
    assert prediction.label == "NOK" and complaint in prediction.error


def test_a_resumed_run_sends_only_what_is_missing(serve, data, tmp_path):
    server = serve(answering(NOK_ANSWER))
    resumed = server.resume_an_interrupted_run(predict, data, tmp_path, interrupted_after=3)  # half-way
    assert all(p.label == "NOK" and p.reasoning == "a bright round void on the die" for p in resumed)
    assert sum(p.usage["cost_usd"] for p in resumed[:3]) == 0
    rerun = predict(data, tmp_path)
    assert server.count == len(data[2]) and all(p.usage["replayed"] == 1 for p in rerun)


def test_failed_images_are_asked_again_on_the_next_run(serve, data, tmp_path):
    outage = {"after": 3}

    def flaky(n, request):
        return GeminiServer.answer(NOK_ANSWER) if n <= outage["after"] else GeminiServer.error(503, "UNAVAILABLE")

    server = serve(flaky)
    first = predict(data, tmp_path, max_attempts=1, concurrency=1)
    assert [p.error is None for p in first] == [True] * 3 + [False] * 3
    outage["after"] = 1000  # the server is back
    second = predict(data, tmp_path)
    assert server.count == 6 + 3  # only the three that failed were sent again
    assert all(p.error is None and p.label == "NOK" for p in second)
    assert [p.usage["replayed"] for p in second] == [1, 1, 1, 0, 0, 0]


def test_a_different_setting_is_a_different_request(serve, data, tmp_path):
    server = serve()
    predict(data, tmp_path, samples=data[2][:2])
    predict(data, tmp_path, samples=data[2][:2], seed=1)
    assert server.count == 4


def test_no_key_skips_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(Unavailable, match="GEMINI_API_KEY"):
        GeminiBasic.check_available(vlm_context(tmp_path))


def test_google_api_key_works_too(serve, data, tmp_path, monkeypatch):
    server = serve()
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", server.api_key)
    GeminiBasic.check_available(vlm_context(tmp_path))
    assert predict(data, tmp_path, samples=data[2][:1])[0].error is None


def test_refined_prompt_comes_from_the_dataset_prompt_file(serve, data, tmp_path):
    server = serve(answering(NOK_ANSWER))
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "satsim_refined.txt").write_text("# by the process engineers\nLook for voids on the die.\n")
    refined = predict(data, tmp_path, samples=data[2][:1], cls=GeminiRefined)
    assert refined[0].label == "NOK"
    assert server.received[0].texts[-1] == "Look for voids on the die."
    predict(data, tmp_path, samples=data[2][:1])  # the basic prompt: another request, not a replay
    assert server.count == 2 and server.received[1].texts[-1] == BASIC_PROMPT


def test_refined_prompt_file_option_is_relative_to_the_suite(serve, data, tmp_path):
    server = serve()
    (tmp_path / "mine.txt").write_text("Inspect the bond wires.")
    predict(data, tmp_path, samples=data[2][:1], cls=GeminiRefined, prompt_file="mine.txt")
    assert server.received[0].texts[-1] == "Inspect the bond wires."


def test_refined_without_a_prompt_file_is_unavailable(serve, tmp_path):
    serve()
    with pytest.raises(Unavailable, match=r"prompts/elpv_refined\.txt: prompt file not found"):
        GeminiRefined.check_available(vlm_context(tmp_path, dataset="elpv"))


def test_unknown_option_is_a_config_error(serve, tmp_path):
    serve()
    with pytest.raises(ConfigError, match=r"\[pipelines.gemini_basic\]: unknown option\(s\) temprature"):
        GeminiBasic.check_available(vlm_context(tmp_path, temprature=0.0))


def test_the_studys_request_layout(serve, data, tmp_path):
    """No captions, no temperature/seed/schema, prose answers, border filled by edge replication."""
    study = {"captions": False, "sampling": "api_default", "answer_format": "free_text", "border_fill": "replicate",
             "concurrency": 1}  # one request at a time: the scripted answers alternate in order
    replies = iter(["**Yes**, the image contains a defect: a round void near the die edge.",
                    "No. The part matches the reference; there are no anomalies or defects."] * 10)
    server = serve(lambda n, request: GeminiServer.answer(next(replies)))
    dataset, reference, test = data
    predictions = predict(data, tmp_path, **study)
    assert [p.label for p in predictions] == ["NOK", "OK"] * (len(test) // 2) + ["NOK"] * (len(test) % 2)
    assert predictions[0].reasoning.startswith("**Yes**, the image contains a defect")
    sent = set()
    for request in server.received:
        assert [kind for kind, _ in request.parts] == ["image", "image", "text"]
        assert request.texts == [BASIC_PROMPT]
        config = request.body.get("generation_config", {})
        assert not {"temperature", "seed", "response_mime_type", "response_schema"} & set(config)
        sent.add(_pixels_key(request.images[1]))
    replicated = {_pixels_key(png_pixels(warp_to_reference(s.image, estimate_alignment(s.image, reference.image),
                                                           reference.image.shape, replicate_border=True)))
                  for s in test}
    assert sent == replicated and sent != {_pixels_key(png_pixels(_aligned(s, reference))) for s in test}


def test_unreadable_prose_is_a_failed_nok(serve, data, tmp_path):
    serve(answering("The image shows an electronic package."))
    predictions = predict(data, tmp_path, answer_format="free_text")
    assert {(p.label, p.error is not None) for p in predictions} == {("NOK", True)}
    assert "no label, opening yes/no or JSON answer" in predictions[0].error


@pytest.mark.parametrize("options,message", [
    ({"sampling": "random"}, "sampling must be one of fixed, api_default"),
    ({"answer_format": "xml"}, "answer_format must be one of json, free_text"),
    ({"border_fill": "mirror"}, "border_fill must be one of black, replicate"),
    ({"captions": "no"}, "captions must be bool"),
])
def test_bad_layout_options(serve, tmp_path, options, message):
    serve()
    with pytest.raises(ConfigError, match=message):
        GeminiBasic(vlm_context(tmp_path, **options))
