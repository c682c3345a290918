"""`[pipelines.<name>]` of a VLM pipeline: every option the shared code reads, checked when the config loads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fmtest.errors import ConfigError
from fmtest.pipelines.options import parse_options, require_choice, table

SAMPLING_MODES = ("fixed", "api_default")
ANSWER_FORMATS = ("json", "free_text")
BORDER_FILLS = ("black", "replicate")
# The evaluation's batch for a VLM pipeline: one batch is in flight at a time, so no more requests can be.
MAX_CONCURRENCY = 32


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
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"concurrency must be 1 to {MAX_CONCURRENCY}, got {self.concurrency}", where)
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
