"""The parts the VLM pipelines share: answer parsing, retry policy, settings, prompt files, PNG encoding,
and the on-disk request record. The pipelines against (fake) servers are in test_gemini/test_openai_vlm."""

from __future__ import annotations

import asyncio
import email.utils
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fakes import REPO
from PIL import Image

from fmtest.errors import ConfigError, Unavailable
from fmtest.pipelines.vlm.answers import UnusableAnswer, parse_answer
from fmtest.pipelines.vlm.client import VLMReply
from fmtest.pipelines.vlm.images import encode_png
from fmtest.pipelines.vlm.pipeline import VLMPipeline
from fmtest.pipelines.vlm.prompts import BASIC_PROMPT, load_prompt_file
from fmtest.pipelines.vlm.retries import (
    RequestError,
    RetryLog,
    TransientError,
    call_with_retries,
    classify_status,
    parse_retry_delay,
)
from fmtest.pipelines.vlm.settings import VLMSettings
from fmtest.pipelines.vlm.store import RequestStore

PROMPTS = REPO / "suites" / "prompts"
ACCEPTED = VLMPipeline.common_options | {"prompt_file"}


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("text, label, reasoning", [
    ('{"label": "NOK", "reasoning": "a void on the die"}', "NOK", "a void on the die"),
    ('```json\n{"label": "OK", "reasoning": "clean"}\n```', "OK", "clean"),
    ('Looking at both images: {"label": "nok", "reasoning": "crack"} That is all.', "NOK", "crack"),
    ('{"reasoning": "dark line", "label": " OK "}', "OK", "dark line"),
    ('{"label": "NOK"}', "NOK", ""),
    ('{"note": {"x": 1}} then {"label": "OK", "reasoning": "r"}', "OK", "r"),
    ('[{"label": "NOK", "reasoning": "void"}, {"label": "NOK", "reasoning": "crack"}]', "NOK", "void"),
])
def test_parse_answer_finds_the_json_object(text, label, reasoning):
    assert parse_answer(text) == (label, reasoning)


@pytest.mark.parametrize("text, complaint", [
    ("The part looks fine to me.", "no JSON object"),
    ('{"label": "OK", "reasoning": "cut off', "no JSON object"),
    ('{"label": "MAYBE", "reasoning": "unsure"}', "unknown label 'MAYBE'"),
    ('{"label": "DEFECTIVE", "reasoning": "x"}', "unknown label"),
    ('{"reasoning": "no label at all"}', "unknown label None"),
    ('{"label": "OK", "reasoning": ["a", "b"]}', "reasoning is not a string"),
    ('{"label": "OK", "reasoning": "a"} or rather {"label": "NOK", "reasoning": "b"}', "conflicting labels"),
])
def test_parse_answer_rejects_what_is_not_an_answer(text, complaint):
    with pytest.raises(UnusableAnswer, match=complaint.replace("(", r"\(")):
        parse_answer(text)


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("value, seconds", [("2", 2.0), ("0.25", 0.25), ("13s", 13.0), ("1.500s", 1.5),
                                            (None, None), ("soon", None)])
def test_parse_retry_delay(value, seconds):
    assert parse_retry_delay(value) == seconds


def test_parse_retry_delay_reads_an_http_date():
    in_ten_seconds = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= parse_retry_delay(in_ten_seconds) <= 10.0


def _flaky(failures: list[Exception], result="answer"):
    calls = []

    async def send():
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return result

    return send, calls


def _retry(send, settings, log, sleeps=None):
    """Run call_with_retries with a sleep that records its waits instead of waiting."""
    async def sleep(seconds):
        if sleeps is not None:
            sleeps.append(seconds)

    return asyncio.run(call_with_retries(send, settings, log, sleep=sleep))


def test_retries_back_off_exponentially_with_jitter_and_honour_the_server():
    settings = VLMSettings(max_attempts=5, backoff_initial_s=1.0, backoff_max_s=30.0)
    send, calls = _flaky([TransientError("503"), TransientError("503"), TransientError("429", retry_after_s=9.0),
                          TransientError("503")])
    sleeps, log = [], RetryLog()
    assert _retry(send, settings, log, sleeps) == "answer"
    assert len(calls) == 5 and log.attempts == 5
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0  # jittered in [w/2, w]
    assert sleeps[2] >= 9.0  # never earlier than the server asked
    assert 4.0 <= sleeps[3] <= 8.0
    assert log.waited_s == pytest.approx(sum(sleeps))


def test_retries_stop_at_max_attempts_with_the_last_error():
    send, calls = _flaky([TransientError("HTTP 500: boom")] * 10)
    with pytest.raises(RequestError, match="gave up after 3 attempt.*HTTP 500: boom"):
        _retry(send, VLMSettings(max_attempts=3, backoff_initial_s=0.001), RetryLog())
    assert len(calls) == 3


def test_retries_give_up_when_the_server_asks_for_longer_than_backoff_max():
    send, calls = _flaky([TransientError("quota", retry_after_s=3600.0)])
    sleeps = []
    with pytest.raises(RequestError, match="asked to wait 3600 s"):
        _retry(send, VLMSettings(backoff_max_s=60.0), RetryLog(), sleeps)
    assert len(calls) == 1 and sleeps == []


def test_errors_that_retrying_cannot_fix_are_not_retried():
    send, calls = _flaky([RequestError("HTTP 400: image too large")])
    with pytest.raises(RequestError, match="400"):
        _retry(send, VLMSettings(), RetryLog())
    assert len(calls) == 1


@pytest.mark.parametrize("status, kind", [(429, TransientError), (500, TransientError), (503, TransientError),
                                          (408, TransientError), (400, RequestError), (401, ConfigError),
                                          (403, ConfigError), (404, ConfigError)])
def test_classify_status(status, kind):
    assert isinstance(classify_status(status, "msg", None, "http://x"), kind)


# --------------------------------------------------------------------------- settings


def test_settings_apply_defaults_then_options():
    s = VLMSettings.from_options("gemini_basic", {"temperature": 0, "concurrency": 2},
                                 defaults={"model": "gemini-2.5-pro", "price_input_per_mtok": 1.25}, accepted=ACCEPTED)
    assert (s.model, s.temperature, s.concurrency, s.price_input_per_mtok) == ("gemini-2.5-pro", 0.0, 2, 1.25)
    assert isinstance(s.temperature, float)
    assert s.cost_usd(1_000_000, 0) == pytest.approx(1.25)


@pytest.mark.parametrize("options, complaint", [
    ({"concurency": 4}, r"\[pipelines.gemini_basic\]: unknown option\(s\) concurency"),
    ({"seed": "7"}, "seed must be int"),
    ({"seed": True}, "seed must be int"),
    ({"timeout_s": "fast"}, "timeout_s must be float"),
    ({"align": 1}, "align must be bool"),
    ({"concurrency": 0}, "concurrency must be 1 to"),
    ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ({"timeout_s": 0}, "timeout_s must be positive"),
    ({"backoff_max_s": -1}, "backoff_max_s must not be negative"),
])
def test_settings_reject_bad_options(options, complaint):
    with pytest.raises(ConfigError, match=complaint):
        VLMSettings.from_options("gemini_basic", options, defaults={}, accepted=ACCEPTED)


# --------------------------------------------------------------------------- prompt files


def test_prompt_file_drops_comments_and_trims(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# written with the process engineers\n\n  Look for voids.\nAnd cracks.  \n# end\n")
    assert load_prompt_file(path) == "Look for voids.\nAnd cracks."


def test_missing_prompt_file_is_unavailable_and_named(tmp_path):
    with pytest.raises(Unavailable, match=r"nope_refined\.txt: prompt file not found.*not public"):
        load_prompt_file(tmp_path / "nope_refined.txt")


def test_prompt_file_with_only_comments_is_refused(tmp_path):
    (tmp_path / "p.txt").write_text("# nothing yet\n\n")
    with pytest.raises(ConfigError, match="p.txt: prompt file has no prompt text"):
        load_prompt_file(tmp_path / "p.txt")


def test_unfinished_template_is_refused():
    template = r"industrialsat_refined.template.txt: .*unfinished template: fill in '<<the package"
    with pytest.raises(ConfigError, match=template):
        load_prompt_file(PROMPTS / "industrialsat_refined.template.txt")


def test_shipped_prompts_are_the_study_prompts():
    assert load_prompt_file(PROMPTS / "basic.txt") == BASIC_PROMPT
    assert BASIC_PROMPT == ("Please determine whether the image contains anomalies or defects. "
                            "If yes, give a specific reason")
    mvtec = load_prompt_file(PROMPTS / "mvtec_refined.txt")
    assert mvtec.startswith("Please determine whether the last image given about object contains anomalies")
    assert mvtec.endswith("pokes, oil or glue strips.")
    assert "\n" not in mvtec
    satsim = load_prompt_file(PROMPTS / "satsim_refined.txt")
    assert all(word in satsim for word in ("voids", "cracks", "delaminations", "last image"))


# --------------------------------------------------------------------------- images


def _decode(png: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(png)))


def test_encode_png_keeps_greyscale_single_channel_and_rounds():
    image = np.array([[0.0, 0.5, 1.0], [0.2, 0.998, 0.001]], dtype=np.float32)
    encoded = encode_png(image)
    assert _decode(encoded.png).tolist() == [[0, 128, 255], [51, 254, 0]]
    assert encoded.sha256 == encode_png(image.copy()).sha256
    assert encoded.sha256 != encode_png(image[::-1]).sha256


def test_encode_png_rgb():
    image = np.random.default_rng(0).random((5, 4, 3)).astype(np.float32)
    pixels = _decode(encode_png(image).png)
    assert pixels.shape == (5, 4, 3)
    np.testing.assert_array_equal(pixels, np.rint(image * 255).astype(np.uint8))


# --------------------------------------------------------------------------- request record

REQUEST = {"pipeline": "gemini_basic", "model": "m", "endpoint": "e", "prompt": "p", "settings": "{}",
           "reference_sha256": "r", "image_sha256": "i", "sample_id": "test/good/000"}


def test_store_replays_answers_across_instances(tmp_path):
    RequestStore(tmp_path).record("k1", REQUEST, reply=VLMReply('{"label":"NOK"}', 10, 5), attempts=2,
                                  answer=("NOK", "void"))
    record = RequestStore(tmp_path).lookup("k1")
    assert record.answered and (record.label, record.reasoning) == ("NOK", "void")
    assert (record.prompt_tokens, record.output_tokens, record.failures) == (10, 5, 0)
    assert RequestStore(tmp_path).lookup("other") is None


def test_store_counts_failures_and_never_lets_one_replace_an_answer(tmp_path):
    store = RequestStore(tmp_path)
    store.record("k", REQUEST, reply=None, attempts=5, error="gave up")
    store.record("k", REQUEST, reply=VLMReply("garbage"), attempts=1, error="no JSON object")
    failed = store.lookup("k")
    assert not failed.answered and failed.failures == 2 and failed.error == "no JSON object"
    store.record("k", REQUEST, reply=VLMReply('{"label":"OK"}'), attempts=1, answer=("OK", "fine"))
    store.record("k", REQUEST, reply=None, attempts=5, error="later failure")
    answered = store.lookup("k")
    assert answered.answered and answered.label == "OK" and answered.error is None


def test_store_takes_concurrent_writers(tmp_path):
    def write(i: int) -> None:
        RequestStore(tmp_path).record(f"k{i}", REQUEST, reply=VLMReply("{}"), attempts=1, answer=("OK", str(i)))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(40)))
    store = RequestStore(tmp_path)
    assert [store.lookup(f"k{i}").reasoning for i in range(40)] == [str(i) for i in range(40)]
