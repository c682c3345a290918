"""Fault injection: the real google-genai and openai SDK clients against local servers that misbehave.

Every API fault a factory network produces, for both backends: a total outage, 429 then OK, a
server too slow to answer, a 200 whose body is an HTML proxy page or JSON cut off, a server that
drips its reply a byte at a time (the SDKs' per-read timeout never fires), and credentials in the
base URL. Each failed or unusable answer must be a failed prediction whose error says what
happened and where; nothing may kill the case with a traceback or hang it, and a password in the
URL must appear nowhere.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from vlm_servers import (
    GeminiServer,
    OpenAIServer,
    run_pipeline,
    small_satsim,
    vlm_context,
)

from fmtest.errors import ConfigError
from fmtest.pipelines.gemini import GeminiBasic
from fmtest.pipelines.openai_vlm import OpenAIVLM

OK_ANSWER = '{"label": "OK", "reasoning": "no defect"}'
SECRET = "S3cr3t-pa55"
MODEL = "qwen2.5vl:7b"


@dataclass
class RawReply:
    """Bytes sent as they are: a body no API would send, or any reply dripped `drip_s` apart per byte."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    drip_s: float = 0.0


class _RawReplies:
    """Mixin for the fake servers: a script may also return a RawReply."""

    def _send(self, handler, reply) -> None:
        if not isinstance(reply, RawReply):
            return super()._send(handler, reply)
        head = (f"HTTP/1.1 {reply.status} OK\r\nContent-Type: {reply.content_type}\r\n"
                f"Content-Length: {len(reply.body)}\r\n\r\n").encode()
        data = head + reply.body
        try:
            if not reply.drip_s:
                handler.wfile.write(data)
                return
            for i in range(len(data)):  # status line, headers and body alike, one byte at a time
                handler.wfile.write(data[i:i + 1])
                handler.wfile.flush()
                time.sleep(reply.drip_s)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: what the test wants
            pass


class FaultyGemini(_RawReplies, GeminiServer):
    pass


class FaultyOpenAI(_RawReplies, OpenAIServer):
    pass


@dataclass(frozen=True)
class Backend:
    """One API: its server, its pipeline and how its environment points at a server."""

    name: str
    server: type
    pipeline: type
    path: str  # the base URL's path, what the pipeline names as its endpoint after the host

    def error(self, status: int, retry_after: str | None = None):
        if self.server is FaultyGemini:
            return GeminiServer.error(status, "UNAVAILABLE" if status >= 500 else "RESOURCE_EXHAUSTED",
                                      retry_delay=retry_after and f"{retry_after}s")
        return OpenAIServer.error(status, retry_after=retry_after)

    def configure(self, monkeypatch, server, base_url: str) -> None:
        if self.server is FaultyGemini:
            monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
            monkeypatch.setenv("GEMINI_API_KEY", server.api_key)
            monkeypatch.setenv("FMTEST_GEMINI_BASE_URL", base_url)
        else:
            monkeypatch.setenv("FMTEST_OPENAI_BASE_URL", base_url + "/v1")
            monkeypatch.setenv("FMTEST_OPENAI_MODEL", MODEL)
            monkeypatch.setenv("OPENAI_API_KEY", server.api_key)


BACKENDS = [Backend("gemini", FaultyGemini, GeminiBasic, "/v1beta"),
            Backend("openai", FaultyOpenAI, OpenAIVLM, "/v1")]


@pytest.fixture(scope="module")
def data():
    dataset = small_satsim(n_good=2, n_defective=2)
    return dataset, dataset.reference, list(dataset.test)


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request):
    return request.param


@pytest.fixture
def serve(monkeypatch, backend):
    """Start a faulty server for the backend and point the pipeline at it (with `userinfo` in the URL if given)."""
    with ExitStack() as stack:
        def start(script, userinfo: str = ""):
            server = stack.enter_context(backend.server(script))
            host = server.base_url.removeprefix("http://")
            backend.configure(monkeypatch, server, f"http://{userinfo}{host}")
            server.endpoint = f"{server.base_url}{backend.path}"
            return server

        yield start


def predict(backend, data, tmp_path, **options):
    return run_pipeline(data, tmp_path, cls=backend.pipeline, **{"concurrency": 2, **options})


def test_a_total_outage_fails_every_image_saying_which_server_answered_what(serve, backend, data, tmp_path):
    server = serve(lambda n, request: backend.error(503))
    predictions = predict(backend, data, tmp_path, max_attempts=2)
    assert len(predictions) == len(data[2]) and server.count == 2 * len(data[2])
    for p in predictions:
        assert p.label == "NOK" and p.error is not None
        assert f"HTTP 503 from {server.endpoint}" in p.error and "gave up after 2 attempt" in p.error
        assert "parse" not in p.error and "JSON" not in p.error


def test_429_then_ok_is_an_answer(serve, backend, data, tmp_path):
    server = serve(lambda n, request: backend.error(429, retry_after="0.2") if n == 1
                   else backend.server.answer(OK_ANSWER))
    (p,) = predict(backend, data, tmp_path, samples=data[2][:1])
    assert (p.label, p.error) == ("OK", None) and server.count == 2
    assert p.usage["request_attempts"] == 2 and p.usage["retry_wait_s"] >= 0.2


def test_a_server_too_slow_to_answer_times_out_per_image(serve, backend, data, tmp_path):
    slow = RawReply(b"{}", drip_s=0.0)

    def script(n, request):
        time.sleep(1.0)
        return slow

    server = serve(script)
    (p,) = predict(backend, data, tmp_path, samples=data[2][:1], timeout_s=0.3, max_attempts=2)
    assert p.label == "NOK" and "Timeout" in p.error and server.endpoint in p.error
    assert "gave up after 2" in p.error and server.count == 2


@pytest.mark.parametrize("body, content_type, named", [
    (b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>", "text/html", "text/html"),
    (b"<html><body>Proxy login</body></html>", "application/json", "application/json"),
    (b'{"candidates": [{"content": {"role": "model", "parts": [{"text": "{\\"label', "application/json",
     "application/json"),
    (b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "mess', "application/json",
     "application/json"),
])
def test_a_200_that_is_not_the_apis_json_fails_the_image_naming_endpoint_and_status(
        serve, backend, data, tmp_path, body, content_type, named):
    server = serve(lambda n, request: RawReply(body, content_type=content_type))
    predictions = predict(backend, data, tmp_path, samples=data[2][:2])
    for p in predictions:
        assert p.label == "NOK"
        assert f"HTTP 200 from {server.endpoint} is not the API's JSON ({named})" in p.error
    assert server.count == 2  # not retried: a proxy page does not turn into an answer


def test_a_drip_feeding_server_cannot_hold_a_request_beyond_its_timeout(serve, backend, data, tmp_path):
    # a whole reply at 20 bytes a second takes over 10 s; each byte comes well within the per-read timeout
    body = json.dumps(backend.server.answer(OK_ANSWER).body).encode()
    serve(lambda n, request: RawReply(body, drip_s=0.05))
    done: dict = {}

    def run():
        started = time.monotonic()
        done["predictions"] = predict(backend, data, tmp_path, samples=data[2][:1], timeout_s=0.8, max_attempts=2,
                                      backoff_initial_s=0.01)
        done["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=8.0)
    assert not worker.is_alive(), "a drip-feeding server held the request past its total deadline"
    (p,) = done["predictions"]
    assert p.label == "NOK" and "within timeout_s = 0.8 s" in p.error and "gave up after 2" in p.error
    assert done["seconds"] < 2 * 0.8 + 2.0


def test_credentials_in_the_base_url_appear_nowhere(serve, backend, data, tmp_path, capsys):
    outcomes = {1: backend.server.answer(OK_ANSWER), 2: backend.error(503), 3: RawReply(b"<html>x</html>", 200,
                                                                                          "text/html")}
    server = serve(lambda n, request: outcomes.get(n, backend.error(400)), userinfo=f"fmuser:{SECRET}@")
    if backend.name == "openai":
        server.api_key = None  # httpx sends the URL's user and password as basic auth, in place of the bearer key
    dataset, reference, test = data
    pipeline = backend.pipeline(vlm_context(tmp_path, max_attempts=1, concurrency=1))
    pipeline.fit(dataset.train, reference)
    predictions = pipeline.predict(test[:4])
    assert [p.error is None for p in predictions] == [True, False, False, False]  # the URL did reach the server
    said = [pipeline.model_id, pipeline.endpoint, pipeline.fingerprint]
    said += [f"{p.label} {p.reasoning} {p.error}" for p in predictions]
    assert "<redacted>@127.0.0.1" in pipeline.endpoint
    with sqlite3.connect(pipeline.store.path) as db:
        said += [repr(row) for row in db.execute("SELECT * FROM requests")]
    said += [path.read_bytes().decode("latin-1") for path in pipeline.store.path.parent.iterdir()]
    server.api_key = "another-key"  # every request now answered 401
    with pytest.raises(ConfigError) as refused:
        pipeline.predict(test[1:2])  # failed before, so asked again
    said.append(str(refused.value))
    captured = capsys.readouterr()
    said += [captured.out, captured.err]
    assert all(SECRET not in text for text in said), next(text for text in said if SECRET in text)
