"""Gemini classification, as in the study: `gemini_basic` and `gemini_refined` on the google-genai SDK.

Each request carries the reference image (captioned as defect-free), the aligned test image and
the prompt, and asks for JSON `{label: OK|NOK, reasoning}` through a response schema.

Environment:
- `GEMINI_API_KEY` (or `GOOGLE_API_KEY`): the API key. Missing: the case is skipped with that
  reason (an error under `--fm-strict`).
- `FMTEST_GEMINI_BASE_URL`: send requests to another server speaking the Gemini REST API (a
  gateway, a local test server); the option `base_url` wins over it.

Options (`[pipelines.gemini_basic]`, `[pipelines.gemini_refined]`): `model` ("gemini-2.5-pro"),
`temperature` (0), `seed` (0), `api_version` ("v1beta"), `base_url`, `prompt_file`, and the
shared ones of `fmtest.pipelines.vlm.settings.VLMSettings` (retries, timeout, concurrency, prices,
alignment, `captions`, `border_fill`). Prices default to Gemini 2.5 Pro's list price for prompts
up to 200k tokens. Request layout: `sampling = "api_default"` sends no temperature or seed,
`answer_format = "free_text"` sends no response schema and reads the label from the prose answer
(the study's layout, with `captions = false` and `border_fill = "replicate"`).
`gemini_refined` reads `prompts/<dataset>_refined.txt` next to the suite config unless
`prompt_file` says otherwise.

`GeminiClient` is the API's side (`fmtest.pipelines.vlm.client.VLMClient`): the request, the reply,
what the SDK's errors mean. The google-genai SDK is imported when a pipeline is built, not at
import: checking for the API key (and skipping without one) costs no SDK import.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from functools import cache
from typing import TYPE_CHECKING, ClassVar

from fmtest.data.departures import NOT_PUBLISHED, Departure, unless_equal
from fmtest.errors import Unavailable
from fmtest.pipelines.base import PipelineContext
from fmtest.pipelines.vlm.answers import ANSWER_SCHEMA
from fmtest.pipelines.vlm.client import VLMClient, VLMReply, note_response
from fmtest.pipelines.vlm.images import EncodedImage
from fmtest.pipelines.vlm.pipeline import VLMPipeline
from fmtest.pipelines.vlm.prompts import (
    BASIC_PROMPT,
    REFERENCE_CAPTION,
    TEST_CAPTION,
    VLMRequest,
    load_prompt_file,
)
from fmtest.pipelines.vlm.retries import parse_retry_delay
from fmtest.pipelines.vlm.settings import VLMSettings
from fmtest.util.redact import redact

if TYPE_CHECKING:
    from google.genai import errors as genai_errors
    from google.genai import types

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
BASE_URL_VARIABLE = "FMTEST_GEMINI_BASE_URL"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
ANSWERED = frozenset({None, "STOP", "FINISH_REASON_UNSPECIFIED"})
STUDY_MODEL = "gemini-2.5-pro"
# The study's refined prompts as published (shared/STUDY.md); IndustrialSAT's was never made public.
PUBLISHED_REFINED_PROMPTS = {
    "mvtec": "Please determine whether the last image given about object contains anomalies or defects. If so, "
             "please provide a specific reason. Normally, the image given should depict a clear and identifiable "
             "object. It may have defects such as broken/bented parts, contaminations, threads, color stains, cuts, "
             "holes, scratches, liquids, glue, folds, pokes, oil or glue strips.",
}


@cache
def _httpx():
    """The httpx the SDK supports that is installed (its fork httpx2 first), for the client we hand it:
    with a client of our own the SDK never switches to aiohttp, so errors and hooks are always httpx's."""
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise Unavailable("the google-genai SDK needs httpx2 or httpx; neither is installed")


def _api_key() -> str | None:
    return next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)


def _gemini_schema(schema: dict) -> types.Schema:
    """ANSWER_SCHEMA in the Gemini API's OpenAPI-subset form."""
    from google.genai import types

    return types.Schema(
        type=types.Type.OBJECT,
        properties={name: types.Schema(type=types.Type.STRING, enum=spec.get("enum"))
                    for name, spec in schema["properties"].items()},
        required=list(schema["required"]),
    )


class GeminiClient(VLMClient):
    """The Gemini API's `generateContent` on the google-genai SDK's asyncio client."""

    def __init__(self, settings: VLMSettings):
        from google.genai import types

        self.model = settings.model
        self.api_version = settings.api_version
        self.base_url = settings.base_url or os.environ.get(BASE_URL_VARIABLE) or None
        self._http_options = {"base_url": self.base_url, "api_version": settings.api_version,
                              "timeout": int(settings.timeout_s * 1000)}
        sent: dict[str, object] = {}
        if settings.sampling == "fixed":
            sent.update(temperature=settings.temperature, seed=settings.seed)
        if settings.answer_format == "json":
            sent.update(response_mime_type="application/json", response_schema=_gemini_schema(ANSWER_SCHEMA))
        self._config = types.GenerateContentConfig(**sent)

    @property
    def endpoint(self) -> str:
        return redact(f"{(self.base_url or DEFAULT_BASE_URL).rstrip('/')}/{self.api_version}")

    @contextlib.asynccontextmanager
    async def connect(self):
        from google import genai
        from google.genai import types

        async with _httpx().AsyncClient(event_hooks={"response": [note_response]}) as http:
            options = types.HttpOptions(**self._http_options, httpx_async_client=http)
            async with genai.Client(api_key=_api_key(), vertexai=False, http_options=options).aio as client:
                yield client

    async def send(self, connection, request: VLMRequest) -> VLMReply:
        from google.genai import types

        parts = [types.Part.from_bytes(data=part.png, mime_type="image/png") if isinstance(part, EncodedImage)
                 else types.Part.from_text(text=part) for part in request.parts()]
        response = await connection.models.generate_content(
            model=self.model, contents=[types.Content(role="user", parts=parts)], config=self._config)
        return _reply(response)

    def error_status(self, error: Exception) -> tuple[int, str] | None:
        from google.genai import errors as genai_errors

        if isinstance(error, genai_errors.APIError):
            return error.code, error.message or str(error)
        return None

    def retry_delay(self, error: genai_errors.APIError) -> float | None:
        """A Retry-After header, or RetryInfo.retryDelay in the error details."""
        headers = getattr(error.response, "headers", None)
        if headers is not None and headers.get("retry-after"):
            return parse_retry_delay(headers.get("retry-after"))
        body = error.details if isinstance(error.details, dict) else {}
        details = (body.get("error") or body).get("details") or []
        for detail in details if isinstance(details, list) else []:
            if isinstance(detail, dict) and ("retryDelay" in detail or "retry_delay" in detail):
                return parse_retry_delay(detail.get("retryDelay", detail.get("retry_delay")))
        return None

    def transport_errors(self) -> tuple[type[Exception], ...]:
        """Network-level failures (timeouts, dropped connections) of the httpx our client runs on."""
        return (_httpx().TimeoutException, _httpx().NetworkError, _httpx().RemoteProtocolError)


class GeminiBasic(VLMPipeline):
    """The study's basic prompt with the defect-free reference image."""

    name = "gemini_basic"
    study_source = ("the paper (no code published): Gemini 2.5 Pro through its API, given the defect-free reference, "
                    "the aligned image and the prompt")
    sdk_modules: ClassVar[tuple[str, ...]] = ("google.genai",)
    extra_options: ClassVar[frozenset[str]] = frozenset({"api_version", "base_url", "prompt_file", "sampling",
                                                         "answer_format"})
    default_options: ClassVar[dict[str, object]] = {
        "model": "gemini-2.5-pro", "api_version": "v1beta",
        "price_input_per_mtok": 1.25, "price_output_per_mtok": 10.0,
    }

    def make_client(self) -> GeminiClient:
        return GeminiClient(self.settings)

    @classmethod
    def departures(cls, context: PipelineContext) -> list[Departure]:
        """Against the study's request: Gemini 2.5 Pro, the reference and the aligned image, the prompt verbatim,
        an answer of one label and a reasoning string."""
        settings = cls.read_options(context.options)
        found = unless_equal("model", settings.model, STUDY_MODEL, "set by model")
        found += cls.prompt_departures(context, settings)
        if settings.captions:
            found.append(Departure("captions", f'"{REFERENCE_CAPTION}" and "{TEST_CAPTION}" before the images',
                                   "the reference image, the image and the prompt, nothing else",
                                   "set by captions = true"))
        if not settings.align:
            found.append(Departure("alignment", "images sent as scanned", "every image aligned to the reference",
                                   "set by align = false"))
        else:
            fill = "edges replicated" if settings.border_fill == "replicate" else "black"
            found.append(Departure("border fill", f"uncovered border after alignment: {fill}", NOT_PUBLISHED,
                                   "replicated edges add no black wedge for the model to call a defect"
                                   if settings.border_fill == "replicate" else "set by border_fill = \"black\"",
                                   kind="unstated"))
        if settings.sampling == "fixed":
            found.append(Departure("sampling", f"temperature {settings.temperature:g}, seed {settings.seed}",
                                   "not stated (the API's defaults)", 'set by sampling = "fixed": repeatable answers',
                                   kind="unstated"))
        if settings.answer_format == "json":
            found.append(Departure("answer format", "JSON {label, reasoning} through a response schema",
                                   "one class label and a reasoning string (how they were asked for is not published)",
                                   "the structured answer is the study's label and reasoning, with nothing to parse; "
                                   "the prompt is sent unchanged", kind="unstated"))
        else:
            found.append(Departure("answer format", "free text: a stated label or the opening yes/no",
                                   "one class label and a reasoning string (how they were asked for is not published)",
                                   'set by answer_format = "free_text", for servers without structured output',
                                   kind="unstated"))
        return found

    @classmethod
    def prompt_departures(cls, context: PipelineContext, settings: VLMSettings) -> list[Departure]:
        """The basic prompt: the study's MVTec AD text, sent to every dataset."""
        if settings.prompt_file and cls.prompt_text(context, settings) != BASIC_PROMPT:
            return [Departure("prompt", f"your {settings.prompt_file}", "the study's basic prompt",
                              "set by prompt_file")]
        return []

    @classmethod
    def check_endpoint(cls, context: PipelineContext, settings: VLMSettings) -> None:
        if _api_key() is None:
            raise Unavailable(f"{cls.name} needs a Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY); "
                              f"for a local Gemini-compatible server also set {BASE_URL_VARIABLE}")

    def _request_settings(self) -> dict[str, object]:
        if self.settings.answer_format != "json":
            return super()._request_settings()
        return {**super()._request_settings(), "response_mime_type": "application/json"}


class GeminiRefined(GeminiBasic):
    """The refined prompt: the object's structure and how its defects look, from a per-dataset file."""

    name = "gemini_refined"

    @classmethod
    def prompt_text(cls, context: PipelineContext, settings: VLMSettings) -> str:
        return load_prompt_file(context.suite_dir / cls.prompt_path(context, settings))

    @classmethod
    def prompt_path(cls, context: PipelineContext, settings: VLMSettings) -> str:
        return settings.prompt_file or f"prompts/{context.dataset}_refined.txt"

    @classmethod
    def prompt_departures(cls, context: PipelineContext, settings: VLMSettings) -> list[Departure]:
        """The refined prompt: published for MVTec AD only; any other is the user's own."""
        path = cls.prompt_path(context, settings)
        published = PUBLISHED_REFINED_PROMPTS.get(context.dataset)
        if published is None:
            return [Departure("refined prompt", f"your {path}",
                              "written with process engineers, not public" if context.dataset == "industrialsat"
                              else NOT_PUBLISHED, "the study's text for this dataset is not published",
                              kind="unstated")]
        try:
            same = cls.prompt_text(context, settings) == published
        except Unavailable:
            same = False
        return [] if same else [Departure("refined prompt", f"{path}, not the published text",
                                          "the study's refined prompt (shared/STUDY.md)", "set by prompt_file")]


def _reply(response: types.GenerateContentResponse) -> VLMReply:
    """The answer text, the tokens billed (thinking counts as output), or why there is no answer."""
    usage = response.usage_metadata
    prompt_tokens = (usage.prompt_token_count or 0) if usage else 0
    output_tokens = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0
    tokens = {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens}
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = _enum_name(feedback.block_reason)
        message = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
        return VLMReply(None, refusal=f"prompt blocked ({reason}){message}", **tokens)
    if not response.candidates:
        return VLMReply(None, refusal="the response has no candidates", **tokens)
    candidate = response.candidates[0]
    finish = _enum_name(candidate.finish_reason)
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = "".join(p.text for p in parts if p.text and not p.thought) or None
    refusal = None if finish in ANSWERED else f"finish reason {finish}"
    return VLMReply(text, refusal=refusal, finish_reason=finish, **tokens)


def _enum_name(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))
