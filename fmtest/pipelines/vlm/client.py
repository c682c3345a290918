"""Talking to a provider's API: the one interface a backend implements, and the transport's failures.

`VLMClient` is everything the VLM pipeline needs from a provider: a connection per batch, one
request -> one reply, and what the SDK's errors are (an HTTP status and the wait the server asked
for, a transport failure). Policy stays here and in `retries`, the same for every provider:
`send_by_deadline` sends through a client, turns its SDK's errors into TransientError (retry),
RequestError (fail this image) or ConfigError (stop the case), and cancels the request at its total
deadline. The SDKs' own timeouts bound each socket read, so a server dripping a byte a second could
otherwise hold a request for hours.

A new provider is one module: a VLMClient subclass, and a VLMPipeline subclass whose `make_client`
builds it (see fmtest/pipelines/gemini.py, fmtest/pipelines/openai_vlm.py). Its SDK is imported
inside the client's methods, never at module level, so checking whether the pipeline can run imports
no SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from contextvars import ContextVar
from dataclasses import dataclass

from fmtest.errors import ConfigError
from fmtest.pipelines.vlm.answers import excerpt
from fmtest.pipelines.vlm.prompts import VLMRequest
from fmtest.pipelines.vlm.retries import RequestError, TransientError, classify_status


@dataclass(frozen=True)
class VLMReply:
    """What came back: the answer text, or why there is none (`refusal`), and the tokens billed."""

    text: str | None
    prompt_tokens: int = 0
    output_tokens: int = 0
    refusal: str | None = None
    finish_reason: str | None = None


class VLMClient(ABC):
    """One provider's API, as the VLM pipeline uses it."""

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where requests go, credentials redacted: named in every failure, and part of the record key
        (two servers are two models)."""

    @abstractmethod
    def connect(self) -> contextlib.AbstractAsyncContextManager:
        """The SDK's asyncio client for one batch; its connections belong to that batch's event loop.
        It must call `note_response` on every HTTP response (an httpx response event hook)."""

    @abstractmethod
    async def send(self, connection, request: VLMRequest) -> VLMReply:
        """One HTTP request on `connection`, its parts sent in `request.parts()` order, and its reply.

        The SDK's errors are raised as they come (`send_by_deadline` classifies them); a reply the SDK
        hands over but that is not the API's response is `malformed_reply`."""

    @abstractmethod
    def error_status(self, error: Exception) -> tuple[int, str] | None:
        """(HTTP status, message) when `error` is the SDK's error for an HTTP error response, else None."""

    @abstractmethod
    def retry_delay(self, error: Exception) -> float | None:
        """Seconds the server asked to wait with that error response (`parse_retry_delay` reads the usual
        forms), or None when it did not say."""

    @abstractmethod
    def transport_errors(self) -> tuple[type[Exception], ...]:
        """The SDK's errors for a request that got no reply: timeouts, refused or dropped connections."""


async def send_by_deadline(client: VLMClient, connection, request: VLMRequest, timeout_s: float) -> VLMReply:
    """`client.send`, its SDK's errors classified, cancelled when `timeout_s` has passed since it began,
    however the server dribbles."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            try:
                return await client.send(connection, request)
            except (TransientError, RequestError, ConfigError):
                raise
            except Exception as error:
                failure = classify_error(client, error, timeout_s)
                if failure is None:
                    raise
                raise failure from error
    except TimeoutError:
        if not deadline.expired():
            raise
        raise deadline_exceeded(timeout_s, client.endpoint) from None


def classify_error(client: VLMClient, error: Exception, timeout_s: float) -> Exception | None:
    """What an SDK error stands for: an HTTP status (`classify_status`), a transport failure (retried), a
    body the SDK could not read as the API's JSON (fails the image); None for anything else (a bug)."""
    status = client.error_status(error)
    if status is not None:
        return classify_status(*status, client.retry_delay(error), client.endpoint)
    if isinstance(error, client.transport_errors()):
        return transport_failure(error, timeout_s, client.endpoint)
    if isinstance(error, ValueError):  # JSON the SDK cannot decode or validate: an HTML page, a cut-off body
        return malformed_reply(client.endpoint, f"{type(error).__name__}: {error}", getattr(error, "doc", None))
    return None


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
    start = f"; body starts {excerpt(body, 80)}" if body else ""
    return RequestError(f"{said} from {where} is not the API's JSON ({content_type}): {detail}{start}")
