"""What a failed request means, and retrying the ones worth retrying.

An HTTP error status is one of three things (`classify_status`): worth retrying (429, 5xx,
timeouts: TransientError), a failure of this image only (400, retries given up: RequestError), or a
configuration problem that fails every image the same way (401/403/404: ConfigError, the case stops
instead of scoring noise). `call_with_retries` retries TransientError with exponential backoff and
jitter, never earlier than the server asks.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from fmtest.errors import ConfigError
from fmtest.pipelines.vlm.settings import VLMSettings
from fmtest.util.redact import redact

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Auth or model-name problems fail every image the same way: stop the case instead of scoring noise.
CONFIG_STATUS = frozenset({401, 403, 404})

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying (429, 5xx, timeout); `retry_after_s` is the server's requested wait."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestError(Exception):
    """A request that failed for this image and will not succeed by retrying (400, given-up retries)."""


def classify_status(status: int, message: str, retry_after_s: float | None, where: str) -> Exception:
    """The exception an HTTP error status stands for: retry it, fail the image, or stop the case."""
    if status in RETRYABLE_STATUS or status >= 500:
        return TransientError(f"HTTP {status} from {where}: {message}", retry_after_s)
    if status in CONFIG_STATUS:
        return ConfigError(redact(f"HTTP {status} from {where} (check the API key and model name): {message}"))
    return RequestError(f"HTTP {status} from {where}: {message}")


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
