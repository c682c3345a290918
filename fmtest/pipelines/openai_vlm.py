"""`openai_vlm`: the Gemini pipelines' contract over any OpenAI-compatible chat-completions endpoint.

For factories that cannot send images to a cloud: point it at a vision-language model served
on site by vLLM, Ollama, LM Studio or similar. The request is the same as Gemini's (captioned
reference image, aligned test image, prompt); structured output is asked for with
`response_format` (JSON schema), and since not every server enforces it, the prompt also says
what JSON to write and the answer is searched for a JSON object.

Environment:
- `FMTEST_OPENAI_BASE_URL`: the endpoint, e.g. `http://localhost:11434/v1` (Ollama),
  `http://localhost:8000/v1` (vLLM); the option `base_url` wins.
- `FMTEST_OPENAI_MODEL`: the served model's name, e.g. `qwen2.5vl:7b`; the option `model` wins.
- `OPENAI_API_KEY`: the key (servers without authentication accept any value); the option
  `api_key` wins.
Missing endpoint, model or key: the case is skipped with that reason (an error under `--fm-strict`).

Options (`[pipelines.openai_vlm]`): `base_url`, `model`, `api_key`, `prompt_file` (default: the
study's basic prompt), `response_format` ("json_schema", "json_object" or "none" for servers
that reject it), and the shared ones of `fmtest.pipelines.vlm.settings.VLMSettings`. Prices default to 0.

`OpenAIClient` is the API's side (`fmtest.pipelines.vlm.client.VLMClient`). The openai SDK is
imported when a pipeline is built, not at import: checking for the endpoint (and skipping without
one) costs no SDK import.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, ClassVar

from fmtest.errors import Unavailable
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.options import require_choice
from fmtest.pipelines.vlm.answers import ANSWER_SCHEMA
from fmtest.pipelines.vlm.client import (
    VLMClient,
    VLMReply,
    malformed_reply,
    note_response,
)
from fmtest.pipelines.vlm.images import EncodedImage
from fmtest.pipelines.vlm.pipeline import VLMPipeline
from fmtest.pipelines.vlm.prompts import VLMRequest
from fmtest.pipelines.vlm.retries import parse_retry_delay
from fmtest.pipelines.vlm.settings import VLMSettings
from fmtest.util.redact import redact

if TYPE_CHECKING:
    import openai

BASE_URL_VARIABLE = "FMTEST_OPENAI_BASE_URL"
MODEL_VARIABLE = "FMTEST_OPENAI_MODEL"
KEY_VARIABLE = "OPENAI_API_KEY"
RESPONSE_FORMATS = {
    "json_schema": {"type": "json_schema",
                    "json_schema": {"name": "inspection", "strict": True, "schema": ANSWER_SCHEMA}},
    "json_object": {"type": "json_object"},
    "none": None,
}
REFUSED_FINISH = frozenset({"content_filter", "length"})


def _resolved(settings: VLMSettings) -> tuple[str | None, str | None, str | None]:
    """(base_url, model, api_key): options first, then the environment."""
    return (settings.base_url or os.environ.get(BASE_URL_VARIABLE) or None,
            settings.model or os.environ.get(MODEL_VARIABLE) or None,
            settings.api_key or os.environ.get(KEY_VARIABLE) or None)


def _image_part(image: EncodedImage) -> dict:
    data = base64.b64encode(image.png).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


class OpenAIClient(VLMClient):
    """`POST /chat/completions` on the openai SDK's asyncio client; the SDK's own retries are off (ours run)."""

    def __init__(self, settings: VLMSettings, *, base_url: str, model: str, api_key: str):
        self.base_url, self.model, self._api_key = base_url, model, api_key
        self.timeout_s = settings.timeout_s
        self._sampling = {"temperature": settings.temperature, "seed": settings.seed}
        self._response_format = RESPONSE_FORMATS[settings.response_format]

    @property
    def endpoint(self) -> str:
        return redact(str(self.base_url))

    def connect(self):
        import openai

        http_client = openai.DefaultAsyncHttpxClient(event_hooks={"response": [note_response]})
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                  timeout=self.timeout_s, http_client=http_client)

    async def send(self, connection, request: VLMRequest) -> VLMReply:
        from openai.types.chat import ChatCompletion

        content = [_image_part(part) if isinstance(part, EncodedImage) else {"type": "text", "text": part}
                   for part in request.parts()]
        extra = {}
        if self._response_format is not None:
            extra["response_format"] = self._response_format
        completion = await connection.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": content}], **self._sampling, **extra)
        if not isinstance(completion, ChatCompletion):  # a non-JSON body (an HTML page) comes back as text
            raise malformed_reply(self.endpoint, "not a chat completion", str(completion))
        return _reply(completion)

    def error_status(self, error: Exception) -> tuple[int, str] | None:
        import openai

        if isinstance(error, openai.APIStatusError):
            return error.status_code, error.message
        return None

    def retry_delay(self, error: openai.APIStatusError) -> float | None:
        """`retry-after-ms` (the OpenAI API's), else `Retry-After`."""
        headers = error.response.headers
        if headers.get("retry-after-ms"):
            milliseconds = parse_retry_delay(headers.get("retry-after-ms"))
            return None if milliseconds is None else milliseconds / 1000.0
        return parse_retry_delay(headers.get("retry-after"))

    def transport_errors(self) -> tuple[type[Exception], ...]:
        import openai

        return (openai.APIConnectionError,)  # includes APITimeoutError


class OpenAIVLM(VLMPipeline):
    """A locally served vision-language model, asked exactly what Gemini is asked."""

    name = "openai_vlm"
    sdk_modules: ClassVar[tuple[str, ...]] = ("openai",)
    extra_options: ClassVar[frozenset[str]] = frozenset({"base_url", "api_key", "prompt_file", "response_format"})
    default_options: ClassVar[dict[str, object]] = {"response_format": "json_schema"}
    format_instructions: ClassVar[str] = (
        '\n\nAnswer with one JSON object and nothing else: {"label": "OK" or "NOK", "reasoning": "..."}, '
        'where NOK means the image to inspect contains an anomaly or defect.'
    )

    def make_client(self) -> OpenAIClient:
        base_url, model, api_key = _resolved(self.settings)
        return OpenAIClient(self.settings, base_url=base_url, model=model, api_key=api_key)

    @classmethod
    def check_endpoint(cls, context: PipelineContext, settings: VLMSettings) -> None:
        require_choice(cls.name, "response_format", settings.response_format, RESPONSE_FORMATS)
        base_url, model, api_key = _resolved(settings)
        missing = [what for what, value in (
            (f"an endpoint ({BASE_URL_VARIABLE} or option base_url, e.g. http://localhost:11434/v1)", base_url),
            (f"a model name ({MODEL_VARIABLE} or option model)", model),
            (f"an API key ({KEY_VARIABLE} or option api_key; any value for servers without authentication)",
             api_key),
        ) if not value]
        if missing:
            raise Unavailable(f"{cls.name} needs " + ", ".join(missing))

    @property
    def model_id(self) -> str:
        return f"{self.client.model}@{self.endpoint}"

    def _request_settings(self) -> dict[str, object]:
        return {**super()._request_settings(), "response_format": self.settings.response_format}


def _reply(completion) -> VLMReply:
    """The answer text and tokens, or why there is none (no choices, refusal, content filter, cut off)."""
    usage = getattr(completion, "usage", None)
    tokens = {"prompt_tokens": (usage.prompt_tokens or 0) if usage else 0,
              "output_tokens": (usage.completion_tokens or 0) if usage else 0}
    if not completion.choices:
        return VLMReply(None, refusal="the response has no choices", **tokens)
    choice = completion.choices[0]
    finish = choice.finish_reason
    refusal = getattr(choice.message, "refusal", None)
    if refusal:
        return VLMReply(None, refusal=f"refused: {refusal}", finish_reason=finish, **tokens)
    return VLMReply(choice.message.content,
                    refusal=f"finish reason {finish}" if finish in REFUSED_FINISH else None,
                    finish_reason=finish, **tokens)
