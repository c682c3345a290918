"""What the vision-language classification pipelines share, whichever API they talk to.

A request is always the same three things: the dataset's defect-free reference image (labelled as
such), the test image aligned to it, and the prompt; the answer is JSON `{label: OK|NOK, reasoning}`.
Around that sit the practicalities a factory run needs:

- settings from `[pipelines.<name>]`, checked so a typo fails loudly (`VLMSettings`);
- prompt files (`load_prompt_file`): `#` lines are comments; `<<...>>` marks a template gap;
- retries with exponential backoff and jitter on 429/5xx/timeouts, never earlier than the server
  asks (`call_with_retries`);
- a total deadline per request (`timeout_s`): the SDKs' timeouts bound each socket read, so a
  server dripping a byte a second could hold a request for hours; requests run on the SDKs'
  asyncio clients and are cancelled when the deadline passes;
- failures that say what happened and where: `HTTP 503 from <endpoint>`, a timeout, a 200 whose
  body is not the API's JSON (an HTML proxy page, a cut-off reply), each a failed prediction;
- an on-disk record of every request and answer (`RequestStore`, SQLite in WAL mode so parallel
  pytest-xdist workers can share it): a rerun, or a run resumed after an interruption, sends only
  the images that have no answer yet;
- answer parsing that turns anything unusable (no JSON, unknown label, refusal) into a failed
  prediction, which is NOK, so a broken answer never passes a part.

`Prediction.usage` keys are additive (the evaluation sums them over images): `prompt_tokens`,
`output_tokens` (thinking included), `cost_usd` (spent by this run: 0 for a replayed answer),
`requests_sent`, `request_attempts`, `retry_wait_s`, `replayed` (answers taken from the record),
`not_aligned` (images sent unaligned because alignment failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import hashlib
import json
import random
import re
import sqlite3
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fmtest.imaging.align import estimate_alignment, warp_to_reference
from fmtest.data.sample import LABELS, NOK, OK, Label, Sample, SampleSet
from fmtest.errors import ConfigError, DataError, Unavailable
from fmtest.util.extras import require_sdks
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.options import parse_options, require_choice, table
from fmtest.util.redact import redact
from fmtest.util.sqlite_wal import open_wal

# The study's basic prompt, sent verbatim (suites/prompts/basic.txt holds the same text).
BASIC_PROMPT = (
    "Please determine whether the image contains anomalies or defects. If yes, give a specific reason"
)
REFERENCE_CAPTION = "Reference image: a defect-free part (label OK)."
TEST_CAPTION = "Image to inspect:"
ANSWER_FIELDS = ("label", "reasoning")
# JSON Schema of the answer; each backend passes it in its API's structured-output form.
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": list(LABELS)},
        "reasoning": {"type": "string"},
    },
    "required": list(ANSWER_FIELDS),
    "additionalProperties": False,
}
SAMPLING_MODES = ("fixed", "api_default")
ANSWER_FORMATS = ("json", "free_text")
BORDER_FILLS = ("black", "replicate")
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Auth or model-name problems fail every image the same way: stop the case instead of scoring noise.
CONFIG_STATUS = frozenset({401, 403, 404})

T = TypeVar("T")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class VLMSettings:
    """`[pipelines.<name>]` options of a VLM pipeline; `None` defaults take a string."""

    model: str | None = None
    temperature: float | None = 0.0  # None only in `VLMPipeline.options_for`: not sent
    seed: int | None = 0
    max_attempts: int = 5  # including the first request
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0  # longest single wait; a server asking for more gives up the image
    timeout_s: float = 120.0  # total deadline per request (connect, upload, wait, download)
    concurrency: int = 4  # requests in flight at once
    price_input_per_mtok: float = 0.0  # USD per million prompt tokens
    price_output_per_mtok: float = 0.0  # USD per million output (and thinking) tokens
    align: bool = True
    min_alignment_quality: float = 0.5
    allow_scale: bool = False
    prompt_file: str | None = None
    base_url: str | None = None
    api_version: str | None = None
    api_key: str | None = None
    response_format: str | None = None
    # request layout (the study's: captions = false, sampling = "api_default", answer_format = "free_text",
    # border_fill = "replicate"; see the README, "Reproducing the study")
    captions: bool = True  # label the two images in the request ("Reference image: ...", "Image to inspect:")
    sampling: str = "fixed"  # "fixed": send temperature and seed; "api_default": send neither
    answer_format: str = "json"  # "json": ask for ANSWER_SCHEMA; "free_text": prose parsed as label + reasoning
    border_fill: str = "black"  # after alignment, pixels the image does not cover: "black" or "replicate" (edge)

    @classmethod
    def from_options(cls, pipeline: str, options: Mapping[str, object], *, defaults: Mapping[str, object],
                     accepted: frozenset[str]) -> VLMSettings:
        """Validate `options` (names, types, ranges) over the pipeline's `defaults`."""
        settings = parse_options(cls, pipeline, options, defaults=defaults, accepted=accepted)
        settings._check_ranges(pipeline)
        return settings

    def _check_ranges(self, pipeline: str) -> None:
        where = table(pipeline)
        if not 1 <= self.concurrency <= VLMPipeline.batch_size:
            raise ConfigError(f"concurrency must be 1 to {VLMPipeline.batch_size}, got {self.concurrency}", where)
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}", where)
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {self.timeout_s}", where)
        for name in ("backoff_initial_s", "backoff_max_s", "temperature", "price_input_per_mtok",
                     "price_output_per_mtok"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}", where)
        require_choice(pipeline, "sampling", self.sampling, SAMPLING_MODES)
        require_choice(pipeline, "answer_format", self.answer_format, ANSWER_FORMATS)
        require_choice(pipeline, "border_fill", self.border_fill, BORDER_FILLS)

    def cost_usd(self, prompt_tokens: int, output_tokens: int) -> float:
        return (prompt_tokens * self.price_input_per_mtok + output_tokens * self.price_output_per_mtok) / 1e6


# --------------------------------------------------------------------------- prompts

_TEMPLATE_GAP = re.compile(r"<<.*?>>", re.S)


def load_prompt_file(path: Path) -> str:
    """The prompt text of a prompt file: `#` comment lines dropped, surrounding blank space trimmed.

    A missing file is Unavailable (the user supplies it); a file that is empty or still has a
    `<<...>>` template gap is a ConfigError, so an unfinished template is never sent to a model.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Unavailable("prompt file not found; users supply their own refined prompt (the object's structure "
                          "and how its defects look; the study's IndustrialSAT prompt is not public): write it "
                          "there or set prompt_file, see suites/prompts/README.md", path) from None
    text = "\n".join(line for line in raw.splitlines() if not line.lstrip().startswith("#")).strip()
    if not text:
        raise ConfigError("prompt file has no prompt text (only comments or blank lines)", path)
    gap = _TEMPLATE_GAP.search(text)
    if gap:
        raise ConfigError(f"prompt file is an unfinished template: fill in {gap.group(0)!r}", path)
    return text


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class EncodedImage:
    """An image as it goes on the wire (PNG) and the hash of its pixels (keys the request record)."""

    png: bytes
    sha256: str


def encode_png(image: np.ndarray) -> EncodedImage:
    """8-bit PNG of a float [0, 1] image; greyscale stays one channel (a third of the upload)."""
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    digest = hashlib.sha256(str(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()
    return EncodedImage(buffer.getvalue(), digest)


# --------------------------------------------------------------------------- requests and answers


@dataclass(frozen=True)
class VLMRequest:
    """One question to the model; every backend sends `parts()` in their order."""

    prompt: str
    reference: EncodedImage
    image: EncodedImage
    captions: bool = True

    def parts(self) -> list[str | EncodedImage]:
        """[Caption,] reference, [caption,] test image, prompt: the study's refined prompt speaks of
        'the last image given', so the test image must come after the reference."""
        if not self.captions:
            return [self.reference, self.image, self.prompt]
        return [REFERENCE_CAPTION, self.reference, TEST_CAPTION, self.image, self.prompt]


@dataclass(frozen=True)
class VLMReply:
    """What came back: the answer text, or why there is none (`refusal`), and the tokens billed."""

    text: str | None
    prompt_tokens: int = 0
    output_tokens: int = 0
    refusal: str | None = None
    finish_reason: str | None = None


class TransientError(Exception):
    """A failure worth retrying (429, 5xx, timeout); `retry_after_s` is the server's requested wait."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def transport_failure(error: Exception, timeout_s: float, where: str) -> TransientError:
    """A timeout or dropped connection, said with the endpoint and the request timeout (worth retrying)."""
    return TransientError(f"{type(error).__name__} talking to {where} (request timeout {timeout_s:g} s): {error}")


def deadline_exceeded(timeout_s: float, where: str) -> TransientError:
    """No complete reply within the total deadline (a stalled or drip-feeding server): worth retrying."""
    return TransientError(f"Timeout: no complete reply from {where} within timeout_s = {timeout_s:g} s")


# The last HTTP status and content type the SDK client of this task received (set by `note_response`),
# so a reply the SDK cannot read can still be reported with the status it came with.
_LAST_RESPONSE: ContextVar[tuple[int, str] | None] = ContextVar("fmtest_vlm_last_response", default=None)


async def note_response(response) -> None:
    """httpx response hook: remember status and content type for `malformed_reply`."""
    _LAST_RESPONSE.set((response.status_code, response.headers.get("content-type", "no content type")))


def malformed_reply(where: str, detail: str, body: str | None = None) -> RequestError:
    """A reply the SDK could not read as the API's response (an HTML proxy page, JSON cut off): fails
    the image, naming the endpoint and the HTTP status it came with. Not retried: a proxy answering
    HTML answers HTML again, and the next run asks anew."""
    status, content_type = _LAST_RESPONSE.get() or (None, "unknown content type")
    said = f"HTTP {status}" if status is not None else "a reply"
    start = f"; body starts {_excerpt(body, 80)}" if body else ""
    return RequestError(f"{said} from {where} is not the API's JSON ({content_type}): {detail}{start}")


class RequestError(Exception):
    """A request that failed for this image and will not succeed by retrying (400, given-up retries)."""


class UnusableAnswer(ValueError):
    """No usable answer: not the JSON asked for, an unknown label, a refusal or an empty reply."""


def parse_answer(text: str) -> tuple[Label, str]:
    """(label, reasoning) from the model's text: a JSON object, bare, fenced or inside prose.

    Several objects with a label are fine when they agree; disagreeing ones are no answer.
    """
    objects = _json_objects(text)
    if not objects:
        raise UnusableAnswer(f"no JSON object in the answer: {_excerpt(text)}")
    answers = [o for o in objects if "label" in o] or objects[:1]
    labels = [a.get("label") for a in answers]
    for label in labels:
        if not isinstance(label, str) or label.strip().upper() not in LABELS:
            raise UnusableAnswer(f"unknown label {label!r} (expected OK or NOK): {_excerpt(text)}")
    if len({label.strip().upper() for label in labels}) > 1:
        raise UnusableAnswer(f"conflicting labels {labels}: {_excerpt(text)}")
    reasoning = answers[0].get("reasoning", "")
    if not isinstance(reasoning, str):
        raise UnusableAnswer(f"reasoning is not a string: {_excerpt(text)}")
    return labels[0].strip().upper(), reasoning.strip()


_OPENING_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_STATED_LABEL = re.compile(r"\b(?:label|verdict|classification)\W{0,3}\s*[:=]\s*\W{0,3}(NOK|OK)\b", re.IGNORECASE)


def parse_free_text_answer(text: str) -> tuple[Label, str]:
    """(label, reasoning) from a prose answer, the study's "one class label + a reasoning string".

    The label is the first of: a JSON answer (`parse_answer`), a stated label ("Label: NOK"), or the
    opening yes/no the study's prompts ask for ("Please determine whether the image contains
    anomalies or defects. If yes, ...": yes = NOK, no = OK). The reasoning is the whole answer.
    """
    try:
        return parse_answer(text)
    except UnusableAnswer:
        pass
    stated = _STATED_LABEL.search(text)
    if stated:
        return stated.group(1).upper(), text.strip()
    opening = _OPENING_YES_NO.match(text)
    if opening:
        return (NOK if opening.group(1).lower() == "yes" else OK), text.strip()
    raise UnusableAnswer(f"no label, opening yes/no or JSON answer: {_excerpt(text)}")


def _json_objects(text: str) -> list[dict]:
    """Every JSON object in `text` that is not inside another one, in order."""
    decoder, found, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        found.append(value)
        position = end
    return found


def _excerpt(text: str | None, limit: int = 200) -> str:
    text = (text or "").strip().replace("\n", " ")
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --------------------------------------------------------------------------- retries


def parse_retry_delay(value: object) -> float | None:
    """Seconds to wait from a Retry-After header ('2', '0.5', an HTTP date) or a Google retryDelay ('13s')."""
    if value is None:
        return None
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*s?", text)
    if match:
        return float(match.group(1))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class RetryLog:
    """How a request went: attempts made and seconds spent waiting between them."""

    attempts: int = 0
    waited_s: float = 0.0


async def call_with_retries(send: Callable[[], Awaitable[T]], settings: VLMSettings, log: RetryLog,
                            sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """Await `send()` until it succeeds, retrying TransientError with backoff; RequestError when out of tries.

    The wait is exponential (initial * 2^n, capped at backoff_max_s) with jitter in [w/2, w] so
    parallel workers spread out, and never shorter than the server's requested delay. A server
    asking for longer than backoff_max_s (a spent daily quota) is not waited for.
    """
    backoff = settings.backoff_initial_s
    while True:
        log.attempts += 1
        try:
            return await send()
        except TransientError as error:
            if log.attempts >= settings.max_attempts:
                raise RequestError(f"gave up after {log.attempts} attempt(s): {error}") from error
            wait = min(settings.backoff_max_s, backoff) * (0.5 + 0.5 * random.random())
            if error.retry_after_s is not None:
                if error.retry_after_s > settings.backoff_max_s:
                    raise RequestError(f"server asked to wait {error.retry_after_s:g} s, more than "
                                       f"backoff_max_s={settings.backoff_max_s:g}: {error}") from error
                wait = max(wait, error.retry_after_s)
            await sleep(wait)
            log.waited_s += wait
            backoff *= 2


def classify_status(status: int, message: str, retry_after_s: float | None, where: str) -> Exception:
    """The exception an HTTP error status stands for: retry it, fail the image, or stop the case."""
    if status in RETRYABLE_STATUS or status >= 500:
        return TransientError(f"HTTP {status} from {where}: {message}", retry_after_s)
    if status in CONFIG_STATUS:
        return ConfigError(redact(f"HTTP {status} from {where} (check the API key and model name): {message}"))
    return RequestError(f"HTTP {status} from {where}: {message}")


# --------------------------------------------------------------------------- request record


@dataclass(frozen=True)
class StoredRecord:
    """A request's last outcome on disk: `answered` ones are replayed; failed ones are resent."""

    key: str
    answered: bool
    label: str | None
    reasoning: str | None
    text: str | None
    prompt_tokens: int
    output_tokens: int
    error: str | None
    failures: int


class RequestStore:
    """Every request and its answer, keyed by hash, in `<dir>/requests.sqlite`.

    SQLite in WAL mode with one short connection per call: safe from threads and from several
    pytest-xdist processes at once. An answer is written the moment it arrives, so an interrupted
    run loses nothing it has paid for. Failures are recorded (and counted) but never replace an
    answer, and never count as one: the next run asks again.
    """

    _COLUMNS = ("key", "status", "label", "reasoning", "answer_text", "prompt_tokens", "output_tokens",
                "error", "failures")

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "requests.sqlite"
        self._connect().close()  # creates the file and table once, before any request is sent

    def _connect(self) -> sqlite3.Connection:
        def setup(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, status TEXT NOT NULL, "
                    "pipeline TEXT, model TEXT, endpoint TEXT, prompt TEXT, settings TEXT, reference_sha256 TEXT, "
                    "image_sha256 TEXT, sample_id TEXT, label TEXT, reasoning TEXT, answer_text TEXT, "
                    "finish_reason TEXT, prompt_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0, "
                    "attempts INTEGER DEFAULT 0, error TEXT, failures INTEGER DEFAULT 0, updated TEXT)"
                )

        try:
            return open_wal(self.path, setup, timeout_s=60)
        except sqlite3.Error as e:
            raise DataError(f"cannot open the VLM request record: {e}", self.path) from None

    def lookup(self, key: str) -> StoredRecord | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {', '.join(self._COLUMNS)} FROM requests WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        key, status, label, reasoning, text, prompt_tokens, output_tokens, error, failures = row
        return StoredRecord(key, status == "answered", label, reasoning, text, prompt_tokens or 0,
                            output_tokens or 0, error, failures or 0)

    def record(self, key: str, request: Mapping[str, object], *, reply: VLMReply | None, attempts: int,
               answer: tuple[Label, str] | None = None, error: str | None = None) -> None:
        """Write one outcome: an `answer`, or an `error` (which never overwrites an answer)."""
        answered = answer is not None
        row = {
            "key": key, "status": "answered" if answered else "failed", **request,
            "label": answer[0] if answered else None, "reasoning": answer[1] if answered else None,
            "answer_text": reply.text if reply else None, "finish_reason": reply.finish_reason if reply else None,
            "prompt_tokens": reply.prompt_tokens if reply else 0, "output_tokens": reply.output_tokens if reply else 0,
            "attempts": attempts, "error": error, "failures": 0 if answered else 1,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        if answered:
            conflict = "DO UPDATE SET " + ", ".join(f"{k} = excluded.{k}" for k in row if k not in ("key", "failures"))
        else:
            keep = ("key", "failures")
            conflict = ("DO UPDATE SET " + ", ".join(f"{k} = excluded.{k}" for k in row if k not in keep)
                        + ", failures = requests.failures + 1 WHERE requests.status != 'answered'")
        with self._connect() as db:
            db.execute(f"INSERT INTO requests ({names}) VALUES ({marks}) ON CONFLICT(key) {conflict}",
                       tuple(row.values()))


# --------------------------------------------------------------------------- the pipeline


class VLMPipeline(Pipeline):
    """Classification by a vision-language model; subclasses add the API (`_client`, `_send`) and its checks.

    `predict` runs one asyncio event loop per batch with one SDK client, up to `concurrency`
    requests in flight, each cancelled at its total deadline. `fit` keeps the dataset's reference image (a dataset without one gives its first defect-free
    training image, see `Dataset.reference`). `predict` aligns each test image to it; an image that
    cannot be aligned is sent as it is and says so in its reasoning and in `usage["not_aligned"]`.
    """

    task = "classification"
    batch_size: ClassVar[int] = 32  # the evaluation's batch; up to `concurrency` of it in flight
    remote_api: ClassVar[bool] = True
    common_options: ClassVar[frozenset[str]] = frozenset({
        "model", "temperature", "seed", "max_attempts", "backoff_initial_s", "backoff_max_s", "timeout_s",
        "concurrency", "price_input_per_mtok", "price_output_per_mtok", "align", "min_alignment_quality",
        "allow_scale", "captions", "border_fill",
    })
    extra_options: ClassVar[frozenset[str]] = frozenset()
    default_options: ClassVar[Mapping[str, object]] = {}
    format_instructions: ClassVar[str] = ""  # appended to the prompt where the API cannot force JSON

    def __init__(self, context: PipelineContext):
        super().__init__(context)
        self.settings = self.read_options(context.options)
        self.prompt = self.prompt_text(context, self.settings)
        self.store = RequestStore(context.work_dir / "vlm_requests")
        self._reference: Sample | None = None
        self._reference_png: EncodedImage | None = None

    # ---- configuration, per subclass

    @classmethod
    def read_options(cls, options: Mapping[str, object]) -> VLMSettings:
        return VLMSettings.from_options(cls.name, options, defaults=cls.default_options,
                                        accepted=cls.common_options | cls.extra_options)

    # --- issue 22: what `fmtest config` shows is what is sent --------------------------------------------
    @classmethod
    def options_for(cls, context: PipelineContext) -> VLMSettings:
        """The settings in effect: under sampling = "api_default" no temperature or seed is sent, so neither is set."""
        settings = cls.read_options(context.options)
        if settings.sampling == "api_default":
            return dataclasses.replace(settings, temperature=None, seed=None)
        return settings
    # --- end issue 22 ------------------------------------------------------------------------------------

    @classmethod
    def prompt_text(cls, context: PipelineContext, settings: VLMSettings) -> str:
        """The task prompt: a `prompt_file` (relative to the suite folder) if set, else the study's basic one."""
        if settings.prompt_file:
            return load_prompt_file(context.suite_dir / settings.prompt_file)
        return BASIC_PROMPT

    @classmethod
    def check_available(cls, context: PipelineContext) -> None:
        require_sdks(cls.sdk_modules, cls.name)
        settings = cls.read_options(context.options)
        cls.prompt_text(context, settings)
        cls.check_endpoint(context, settings)

    @classmethod
    @abstractmethod
    def check_endpoint(cls, context: PipelineContext, settings: VLMSettings) -> None:
        """Raise Unavailable naming the environment variable or option that is missing."""

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where requests go, credentials redacted, as recorded (and part of the record key: two servers
        are two models)."""

    @abstractmethod
    def _client(self) -> contextlib.AbstractAsyncContextManager:
        """The SDK's asyncio client for one batch; its connections belong to that batch's event loop.
        It must call `note_response` on every HTTP response (an httpx response event hook)."""

    @abstractmethod
    async def _send(self, client, request: VLMRequest) -> VLMReply:
        """One HTTP request. Raise TransientError (retry), RequestError (fail this image) or ConfigError."""

    def _request_settings(self) -> dict[str, object]:
        """Generation settings that can change the answer: part of the record key (only what is sent)."""
        sent: dict[str, object] = {}
        if self.settings.sampling == "fixed":
            sent.update(temperature=self.settings.temperature, seed=self.settings.seed)
        if self.settings.answer_format == "json":
            sent["schema"] = ANSWER_SCHEMA
        return sent

    # ---- pipeline interface

    @property
    def model_id(self) -> str:
        return str(self.settings.model)

    @property
    def fingerprint(self) -> str:
        """The base fingerprint plus the prompt text, so editing a prompt file invalidates cached predictions."""
        return hashlib.sha256(f"{super().fingerprint}\n{self.prompt}".encode()).hexdigest()[:16]

    def fit(self, train: SampleSet, reference: Sample | None) -> None:
        if reference is None:
            raise DataError(f"{self.name} needs a defect-free reference image and dataset "
                            f"{self.context.dataset!r} has neither a reference nor a defect-free training image")
        self._reference = reference
        self._reference_png = encode_png(reference.image)

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        if self._reference is None:
            raise RuntimeError(f"{self.name}: predict() called before fit()")
        return asyncio.run(self._predict_all(samples))

    async def _predict_all(self, samples: Sequence[Sample]) -> list[Prediction]:
        in_flight = asyncio.Semaphore(self.settings.concurrency)
        bar = tqdm(total=len(samples), desc=f"{self.name} requests", unit="img", disable=not self.context.progress,
                   leave=False)

        async def one(client, sample: Sample) -> Prediction:
            async with in_flight:
                prediction = await self._predict_one(client, sample)
            bar.update()
            return prediction

        with bar:
            async with self._client() as client:
                tasks = [asyncio.ensure_future(one(client, s)) for s in samples]
                try:
                    return list(await asyncio.gather(*tasks))
                except BaseException:
                    # a configuration error or Ctrl-C: send nothing more; answers already in are on disk
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise

    # ---- one image

    async def _predict_one(self, client, sample: Sample) -> Prediction:
        image, alignment_note = await asyncio.to_thread(self._aligned, sample)  # CPU work off the event loop
        free_text = self.settings.answer_format == "free_text"
        request = VLMRequest(self.prompt if free_text else self.prompt + self.format_instructions,
                             self._reference_png, encode_png(image), captions=self.settings.captions)
        key, described = self._record_key(request, sample)
        usage = {"not_aligned": 1.0 if alignment_note else 0.0}
        stored = await asyncio.to_thread(self.store.lookup, key)
        if stored is not None and stored.answered:
            usage.update(prompt_tokens=stored.prompt_tokens, output_tokens=stored.output_tokens, cost_usd=0.0,
                         replayed=1.0, requests_sent=0.0, request_attempts=0.0, retry_wait_s=0.0)
            return Prediction(label=stored.label, reasoning=alignment_note + (stored.reasoning or ""), usage=usage)

        log = RetryLog()
        reply: VLMReply | None = None
        try:
            reply = await call_with_retries(lambda: self._send_by_deadline(client, request), self.settings, log)
            if reply.refusal is not None:
                raise UnusableAnswer(f"no answer: {reply.refusal}")
            if not reply.text:
                raise UnusableAnswer(f"empty answer (finish reason {reply.finish_reason})")
            answer = parse_free_text_answer(reply.text) if free_text else parse_answer(reply.text)
        except (RequestError, UnusableAnswer) as failure:
            reason = redact(str(failure))
            await asyncio.to_thread(self.store.record, key, described, reply=reply, attempts=log.attempts,
                                    error=reason)
            usage.update(self._spent(reply, log))
            return Prediction.failed(reason, reasoning=alignment_note or None, usage=usage)
        await asyncio.to_thread(self.store.record, key, described, reply=reply, attempts=log.attempts, answer=answer)
        usage.update(self._spent(reply, log))
        return Prediction(label=answer[0], reasoning=alignment_note + answer[1], usage=usage)

    async def _send_by_deadline(self, client, request: VLMRequest) -> VLMReply:
        """`_send`, cancelled when `timeout_s` has passed since it began, however the server dribbles."""
        deadline = asyncio.timeout(self.settings.timeout_s)
        try:
            async with deadline:
                return await self._send(client, request)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise deadline_exceeded(self.settings.timeout_s, self.endpoint) from None

    def _aligned(self, sample: Sample) -> tuple[np.ndarray, str]:
        """The image registered to the reference, or the image as it is and a note saying why."""
        if not self.settings.align:
            return sample.image, ""
        reference = self._reference.image
        alignment = estimate_alignment(sample.image, reference, allow_scale=self.settings.allow_scale,
                                       min_quality=self.settings.min_alignment_quality)
        if not alignment.ok:
            return sample.image, (f"[not aligned to the reference: quality {alignment.quality:.2f} < "
                                  f"{self.settings.min_alignment_quality:.2f}; sent unaligned] ")
        return warp_to_reference(sample.image, alignment, reference.shape[:2],
                                 replicate_border=self.settings.border_fill == "replicate"), ""

    def _record_key(self, request: VLMRequest, sample: Sample) -> tuple[str, dict[str, object]]:
        settings = self._request_settings()
        keyed = {"model": self.model_id, "endpoint": self.endpoint, "prompt": request.prompt,
                 "captions": [REFERENCE_CAPTION, TEST_CAPTION] if request.captions else [], "settings": settings,
                 "reference_sha256": request.reference.sha256, "image_sha256": request.image.sha256}
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
        described = {"pipeline": self.name, "model": self.model_id, "endpoint": self.endpoint,
                     "prompt": request.prompt, "settings": json.dumps(settings, sort_keys=True),
                     "reference_sha256": request.reference.sha256, "image_sha256": request.image.sha256,
                     "sample_id": sample.id}
        return key, described

    def _spent(self, reply: VLMReply | None, log: RetryLog) -> dict[str, float]:
        prompt_tokens = reply.prompt_tokens if reply else 0
        output_tokens = reply.output_tokens if reply else 0
        return {"prompt_tokens": float(prompt_tokens), "output_tokens": float(output_tokens),
                "cost_usd": self.settings.cost_usd(prompt_tokens, output_tokens), "replayed": 0.0,
                "requests_sent": 1.0, "request_attempts": float(log.attempts), "retry_wait_s": log.waited_s}


__all__ = [
    "ANSWER_SCHEMA",
    "BASIC_PROMPT",
    "REFERENCE_CAPTION",
    "TEST_CAPTION",
    "EncodedImage",
    "RequestError",
    "RequestStore",
    "RetryLog",
    "StoredRecord",
    "TransientError",
    "UnusableAnswer",
    "VLMPipeline",
    "VLMReply",
    "VLMRequest",
    "VLMSettings",
    "call_with_retries",
    "classify_status",
    "deadline_exceeded",
    "encode_png",
    "load_prompt_file",
    "malformed_reply",
    "note_response",
    "parse_answer",
    "parse_free_text_answer",
    "parse_retry_delay",
    "transport_failure",
]
