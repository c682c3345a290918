"""openai_vlm through the real openai client against a local fake OpenAI-compatible chat-completions server."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from vlm_servers import (
    OpenAIServer,
    Reply,
    png_pixels,
    run_pipeline,
    small_satsim,
    vlm_context,
)

from fmtest.errors import ConfigError, Unavailable
from fmtest.imaging.align import estimate_alignment, warp_to_reference
from fmtest.pipelines import pipeline_class
from fmtest.pipelines.openai_vlm import OpenAIVLM
from fmtest.pipelines.vlm.answers import ANSWER_SCHEMA
from fmtest.pipelines.vlm.prompts import BASIC_PROMPT, REFERENCE_CAPTION, TEST_CAPTION

NOK_ANSWER = '{"label": "NOK", "reasoning": "a dark line across the die"}'
MODEL = "qwen2.5vl:7b"


@pytest.fixture(scope="module")
def data():
    dataset = small_satsim(n_good=2, n_defective=2)
    return dataset, dataset.reference, list(dataset.test)


@pytest.fixture
def serve(monkeypatch):
    """Start fake OpenAI-compatible servers and point the pipeline's environment at the last one."""
    with OpenAIServer.serving(monkeypatch, model=MODEL) as start:
        yield start


predict = partial(run_pipeline, cls=OpenAIVLM)


answering = OpenAIServer.answering


def test_registered_under_its_name():
    assert pipeline_class("openai_vlm") is OpenAIVLM and OpenAIVLM.task == "classification"


def test_normal_answer_images_and_prompt(serve, data, tmp_path):
    server = serve(answering(NOK_ANSWER, prompt_tokens=800, output_tokens=40))
    dataset, reference, test = data
    predictions = predict(data, tmp_path, seed=3, price_input_per_mtok=0.5, price_output_per_mtok=1.5)
    assert server.count == len(test)
    for p in predictions:
        assert (p.label, p.reasoning, p.error) == ("NOK", "a dark line across the die", None)
        assert (p.usage["prompt_tokens"], p.usage["output_tokens"]) == (800, 40)
        assert p.usage["cost_usd"] == pytest.approx((800 * 0.5 + 40 * 1.5) / 1e6)
    expected = set()
    for sample in test:
        alignment = estimate_alignment(sample.image, reference.image)
        expected.add(png_pixels(warp_to_reference(sample.image, alignment, reference.image.shape)).tobytes())
    for request in server.received:
        assert request.body["model"] == MODEL and request.body["temperature"] == 0 and request.body["seed"] == 3
        assert request.body["response_format"]["json_schema"]["schema"] == ANSWER_SCHEMA
        assert [kind for kind, _ in request.parts] == ["text", "image", "text", "image", "text"]
        assert request.texts[:2] == [REFERENCE_CAPTION, TEST_CAPTION]
        assert request.texts[2].startswith(BASIC_PROMPT) and '"label": "OK" or "NOK"' in request.texts[2]
        np.testing.assert_array_equal(request.images[0], png_pixels(reference.image))
    assert {r.images[1].tobytes() for r in server.received} == expected


def test_model_id_names_model_and_endpoint(serve, tmp_path):
    server = serve()
    assert OpenAIVLM(vlm_context(tmp_path)).model_id == f"{MODEL}@{server.base_url}/v1"


def test_options_win_over_the_environment(serve, data, tmp_path, monkeypatch):
    server = serve()
    monkeypatch.setenv("FMTEST_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    predict(data, tmp_path, samples=data[2][:1], base_url=f"{server.base_url}/v1", model="llava",
            api_key=server.api_key)
    assert server.received[0].body["model"] == "llava"


def test_answer_in_prose_is_found(serve, data, tmp_path):
    serve(answering('Comparing with the reference:\n```json\n{"label": "OK", "reasoning": "same"}\n```'))
    (p,) = predict(data, tmp_path, samples=data[2][:1])
    assert (p.label, p.reasoning, p.error) == ("OK", "same", None)


def test_response_format_can_be_left_out_for_servers_that_reject_it(serve, data, tmp_path):
    server = serve()
    predict(data, tmp_path, samples=data[2][:1], response_format="none")
    assert "response_format" not in server.received[0].body
    with pytest.raises(ConfigError, match="response_format must be one of"):
        OpenAIVLM.check_available(vlm_context(tmp_path, response_format="xml"))


def test_429_then_success_honours_retry_after(serve, data, tmp_path):
    def script(n, request):
        return OpenAIServer.error(429, retry_after="0.3") if n == 1 else OpenAIServer.answer(NOK_ANSWER)

    server = serve(script)
    (p,) = predict(data, tmp_path, samples=data[2][:1])
    assert p.label == "NOK" and p.error is None and server.count == 2
    assert p.usage["retry_wait_s"] >= 0.3


def test_500s_until_giving_up(serve, data, tmp_path):
    server = serve(lambda n, request: OpenAIServer.error(502))
    (p,) = predict(data, tmp_path, samples=data[2][:1], max_attempts=3)
    assert p.label == "NOK" and "gave up after 3" in p.error and "502" in p.error and server.count == 3


def test_timeout(serve, data, tmp_path):
    server = serve(lambda n, request: Reply(delay_s=1.5, body=OpenAIServer.answer(NOK_ANSWER).body))
    (p,) = predict(data, tmp_path, samples=data[2][:1], timeout_s=0.3, max_attempts=2)
    assert p.label == "NOK" and "Timeout" in p.error and server.count == 2


@pytest.mark.parametrize("reply, complaint", [
    (OpenAIServer.answer("I cannot tell."), "no JSON object"),
    (OpenAIServer.answer('{"label": "GOOD", "reasoning": "x"}'), "unknown label 'GOOD'"),
    (OpenAIServer.answer(None, refusal="I can't help with that."), "refused: I can't help with that."),
    (OpenAIServer.answer('{"label": "OK", "reasoning": "x"}', finish="content_filter"), "finish reason content_filter"),
    (OpenAIServer.answer('{"label": "OK", "reasoning": "x', finish="length"), "finish reason length"),
    (OpenAIServer.answer(""), "empty answer"),
    (Reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL, "choices": []}), "no choices"),
])
def test_unusable_answers_are_failed_nok(serve, data, tmp_path, reply, complaint):
    serve(lambda n, request: reply)
    (p,) = predict(data, tmp_path, samples=data[2][:1])
    assert p.label == "NOK" and complaint in p.error


def test_a_resumed_run_sends_only_what_is_missing(serve, data, tmp_path):
    serve(answering(NOK_ANSWER)).resume_an_interrupted_run(predict, data, tmp_path, interrupted_after=2)


def test_a_rejected_key_stops_the_case(serve, data, tmp_path, monkeypatch):
    serve()
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with pytest.raises(ConfigError, match="HTTP 401"):
        predict(data, tmp_path, samples=data[2][:1])


@pytest.mark.parametrize("unset, named", [
    ("FMTEST_OPENAI_BASE_URL", "an endpoint (FMTEST_OPENAI_BASE_URL"),
    ("FMTEST_OPENAI_MODEL", "a model name (FMTEST_OPENAI_MODEL"),
    ("OPENAI_API_KEY", "an API key (OPENAI_API_KEY"),
])
def test_missing_endpoint_model_or_key_skips_with_a_reason(monkeypatch, tmp_path, unset, named):
    for variable, value in (("FMTEST_OPENAI_BASE_URL", "http://127.0.0.1:9/v1"), ("FMTEST_OPENAI_MODEL", MODEL),
                            ("OPENAI_API_KEY", "k")):
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv(unset)
    with pytest.raises(Unavailable, match=r"openai_vlm needs " + named.replace("(", r"\(")):
        OpenAIVLM.check_available(vlm_context(tmp_path))
