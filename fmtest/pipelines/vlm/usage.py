"""`Prediction.usage` of a VLM prediction: what answering the image cost, and how the answer was got.

The keys are additive (the evaluation sums them over images): `prompt_tokens`, `output_tokens`
(thinking included), `cost_usd` (spent by this run: 0 for a replayed answer), `requests_sent`,
`request_attempts`, `retry_wait_s`, `replayed` (answers taken from the request store),
`not_aligned` (images sent unaligned because alignment failed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmtest.pipelines.vlm.client import VLMReply
    from fmtest.pipelines.vlm.retries import RetryLog
    from fmtest.pipelines.vlm.settings import VLMSettings
    from fmtest.pipelines.vlm.store import StoredRecord


def replayed_usage(stored: StoredRecord, *, not_aligned: bool) -> dict[str, float]:
    """An answer taken from the request store: its tokens as billed then, nothing spent now."""
    return {"not_aligned": float(not_aligned), "prompt_tokens": stored.prompt_tokens,
            "output_tokens": stored.output_tokens, "cost_usd": 0.0, "replayed": 1.0, "requests_sent": 0.0,
            "request_attempts": 0.0, "retry_wait_s": 0.0}


def spent_usage(reply: VLMReply | None, log: RetryLog, settings: VLMSettings, *, not_aligned: bool) -> dict[str, float]:
    """A request this run sent, answered or not (`reply` None: no reply came)."""
    prompt_tokens = reply.prompt_tokens if reply else 0
    output_tokens = reply.output_tokens if reply else 0
    return {"not_aligned": float(not_aligned), "prompt_tokens": float(prompt_tokens),
            "output_tokens": float(output_tokens), "cost_usd": settings.cost_usd(prompt_tokens, output_tokens),
            "replayed": 0.0, "requests_sent": 1.0, "request_attempts": float(log.attempts),
            "retry_wait_s": log.waited_s}
