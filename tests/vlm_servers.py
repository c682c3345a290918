"""Local stand-ins for the Gemini and OpenAI REST APIs, so the real SDK clients can be tested offline.

Each server listens on 127.0.0.1 (an ephemeral port, one thread per request), answers from a
script (a function of the request number), and keeps every request it received with its text
parts and its decoded images, so a test can check what reached the wire. Request bodies are read
in camelCase or snake_case alike, as the real Gemini API accepts both.

The end holds what the VLM tests share besides servers: a small satsim dataset and a context.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

GEMINI_PATH = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):generateContent$")
OPENAI_PATH = "/v1/chat/completions"


@dataclass
class Reply:
    """What the server sends back for one request; `delay_s` holds the answer back (to force a timeout)."""

    status: int = 200
    body: dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    """One request as the server understood it: path, auth, body (snake_case keys) and its parts in order."""

    path: str
    api_key: str | None
    body: dict
    parts: list[tuple[str, object]]  # ("text", str) or ("image", np.ndarray)

    @property
    def texts(self) -> list[str]:
        return [p for kind, p in self.parts if kind == "text"]

    @property
    def images(self) -> list[np.ndarray]:
        return [p for kind, p in self.parts if kind == "image"]


def snake_case(value):
    """Recursively rename camelCase keys to snake_case (values untouched)."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): snake_case(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_case(v) for v in value]
    return value


def decode_image(data: str) -> np.ndarray:
    """Pixels of a base64 PNG, standard or URL-safe alphabet (the google-genai SDK sends URL-safe)."""
    standard = data.replace("-", "+").replace("_", "/")
    png = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    return np.asarray(Image.open(io.BytesIO(png)))


class FakeServer(ABC):
    """Base: HTTP plumbing, request log and the reply script. Subclasses parse their API's requests."""

    def __init__(self, script: Callable[[int, Received], Reply] | None = None, api_key: str = "test-key"):
        self.script = script or (lambda n, request: self.answer('{"label": "OK", "reasoning": "no defect"}'))
        self.api_key = api_key
        self.received: list[Received] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server._handle(self)

            def log_message(self, *args):  # keep test output quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        try:
            request = self.parse(handler, json.loads(handler.rfile.read(length) or b"{}"))
        except (ValueError, KeyError, TypeError, OSError) as e:  # a request the real API would reject too
            return self._send(handler, Reply(400, {"error": {"code": 400, "message": f"bad request: {e!r}"}}))
        if request is None:
            return self._send(handler, Reply(404, {"error": {"code": 404, "message": f"no route {handler.path}"}}))
        if request.api_key != self.api_key:
            return self._send(handler, Reply(401, {"error": {"code": 401, "message": "bad key"}}))
        with self._lock:
            self.received.append(request)
            number = len(self.received)
        self._send(handler, self.script(number, request))

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay_s:
            time.sleep(reply.delay_s)
        payload = json.dumps(reply.body).encode()
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    @abstractmethod
    def parse(self, handler: BaseHTTPRequestHandler, raw: dict) -> Received | None:
        """The request as received, or None when the path is not this API's."""

    @staticmethod
    @abstractmethod
    def answer(text: str | None, **kw) -> Reply:
        """A successful reply carrying `text` as the model's answer."""

    @classmethod
    def answering(cls, text: str | None, **kw) -> Callable[[int, Received], Reply]:
        """A script that gives `answer(text, **kw)` to every request."""
        return lambda n, request: cls.answer(text, **kw)

    @abstractmethod
    def point_pipeline_here(self, monkeypatch, **settings) -> None:
        """Set the environment (through pytest's `monkeypatch`) so this API's pipeline sends its requests here."""

    @classmethod
    @contextmanager
    def serving(cls, monkeypatch, **settings) -> Iterator[Callable[..., FakeServer]]:
        """Yields `start(script=None)`, which starts a server of this kind (stopped on leaving) and points the
        pipeline's environment at it (`point_pipeline_here` with `settings`): the last one started is asked."""
        with ExitStack() as stack:
            def start(script=None) -> FakeServer:
                server = stack.enter_context(cls(script))
                server.point_pipeline_here(monkeypatch, **settings)
                return server

            yield start

    def resume_an_interrupted_run(self, predict: Callable, data, tmp_path, interrupted_after: int) -> list:
        """Predict the first `interrupted_after` test images (the run that was interrupted), then all of them:
        the resumed run must ask this server only for the missing images, none twice, and replay the others
        from the request store. Returns the resumed run's predictions."""
        test = data[2]
        predict(data, tmp_path, samples=test[:interrupted_after])
        assert self.count == interrupted_after
        resumed = predict(data, tmp_path)
        assert self.count == len(test)
        sent = [np.ascontiguousarray(r.images[1]).tobytes() for r in self.received]
        assert len(set(sent)) == len(sent)  # no image sent twice
        assert [p.usage["replayed"] for p in resumed] == [1] * interrupted_after + [0] * (len(test) - interrupted_after)
        return resumed


class GeminiServer(FakeServer):
    """`POST /{api_version}/models/{model}:generateContent`, key in `x-goog-api-key` or `?key=`."""

    def parse(self, handler, raw):
        path, _, query = handler.path.partition("?")
        if not GEMINI_PATH.match(path):
            return None
        key = handler.headers.get("x-goog-api-key") or dict(
            p.split("=", 1) for p in query.split("&") if "=" in p).get("key")
        body = snake_case(raw)
        parts: list[tuple[str, object]] = []
        for content in body.get("contents", []):
            for part in content.get("parts", []):
                if "text" in part:
                    parts.append(("text", part["text"]))
                elif "inline_data" in part:
                    parts.append(("image", decode_image(part["inline_data"]["data"])))
        return Received(path, key, body, parts)

    def point_pipeline_here(self, monkeypatch, **settings) -> None:
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)  # the SDK prefers it to GEMINI_API_KEY
        monkeypatch.setenv("GEMINI_API_KEY", self.api_key)
        monkeypatch.setenv("FMTEST_GEMINI_BASE_URL", self.base_url)

    @staticmethod
    def answer(text: str | None, *, finish: str = "STOP", prompt_tokens: int = 1000,
               output_tokens: int = 50, thoughts_tokens: int = 0) -> Reply:
        candidate = {"content": {"role": "model", "parts": [] if text is None else [{"text": text}]},
                     "finishReason": finish}
        return Reply(200, {"candidates": [candidate], "usageMetadata": {
            "promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
            "thoughtsTokenCount": thoughts_tokens}})

    @staticmethod
    def error(code: int, status: str, retry_delay: str | None = None) -> Reply:
        retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        details = [retry_info] if retry_delay else []
        return Reply(code, {"error": {"code": code, "message": f"fake {status}", "status": status, "details": details}})

    @staticmethod
    def blocked(reason: str = "SAFETY") -> Reply:
        return Reply(200, {"promptFeedback": {"blockReason": reason}, "usageMetadata": {"promptTokenCount": 900}})


class OpenAIServer(FakeServer):
    """`POST /v1/chat/completions`, key as `Authorization: Bearer <key>`."""

    def parse(self, handler, raw):
        if handler.path.partition("?")[0] != OPENAI_PATH:
            return None
        auth = handler.headers.get("Authorization", "")
        key = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        parts: list[tuple[str, object]] = []
        for message in raw.get("messages", []):
            content = message.get("content")
            for part in [{"type": "text", "text": content}] if isinstance(content, str) else content or []:
                if part.get("type") == "text":
                    parts.append(("text", part["text"]))
                elif part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    parts.append(("image", decode_image(url.split("base64,", 1)[1])))
        return Received(handler.path, key, raw, parts)

    def point_pipeline_here(self, monkeypatch, model: str = "local-vlm") -> None:
        monkeypatch.setenv("FMTEST_OPENAI_BASE_URL", f"{self.base_url}/v1")
        monkeypatch.setenv("FMTEST_OPENAI_MODEL", model)
        monkeypatch.setenv("OPENAI_API_KEY", self.api_key)

    @staticmethod
    def answer(text: str | None, *, finish: str = "stop", refusal: str | None = None,
               prompt_tokens: int = 800, output_tokens: int = 40) -> Reply:
        message = {"role": "assistant", "content": text, "refusal": refusal}
        return Reply(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
                           "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                           "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                                     "total_tokens": prompt_tokens + output_tokens}})

    @staticmethod
    def error(code: int, retry_after: str | None = None) -> Reply:
        headers = {"Retry-After": retry_after} if retry_after else {}
        return Reply(code, {"error": {"message": f"fake {code}", "type": "server_error"}}, headers)


# --------------------------------------------------------------------------- shared by the VLM tests


def small_satsim(n_good: int = 3, n_defective: int = 3):
    """A few 96 px synthetic SAT parts: misregistered like real recordings, so alignment has work to do."""
    from fmtest.data.satsim import SatSim, SatSimOptions

    return SatSim(SatSimOptions(size=96, n_train=1, n_test_good=n_good, n_test_defective=n_defective,
                                shift=3.0, rotation=2.0))


def vlm_context(tmp_path, dataset: str = "satsim", **options):
    """A pipeline context whose request store and suite folder live in `tmp_path`; backoff kept tiny."""
    from fmtest.pipelines.base import PipelineContext
    from fmtest.pipelines.vlm.store import store_folder

    options = {"backoff_initial_s": 0.01, "backoff_max_s": 2.0, "timeout_s": 10.0, **options}
    return PipelineContext(dataset=dataset, options=options, request_store=store_folder(tmp_path / "cache"),
                           suite_dir=tmp_path, progress=False)


def run_pipeline(data, tmp_path, samples=None, *, cls, **options):
    """Fit `cls` on `data` (dataset, reference, test samples) and predict `samples` (default: the test samples)."""
    dataset, reference, test = data
    pipeline = cls(vlm_context(tmp_path, **options))
    pipeline.fit(dataset.train, reference)
    return pipeline.predict(test if samples is None else samples)


def png_pixels(image: np.ndarray) -> np.ndarray:
    """The pixels a server decodes from the PNG this image is sent as."""
    from fmtest.pipelines.vlm.images import encode_png

    return np.asarray(Image.open(io.BytesIO(encode_png(image).png)))
