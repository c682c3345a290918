"""`VLMPipeline`: classification by a vision-language model, whichever API it is asked through.

For each test image: align it to the reference (`images`), build the request (`prompts`), replay the
stored answer if there is one (`store`), else send it through the provider's client with retries and a
total deadline (`client`, `retries`), read the answer (`answers`), record it, and say what it cost
(`usage`). A provider subclass adds its options, its checks and `make_client`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

from tqdm.auto import tqdm

from fmtest.data.sample import Sample, SampleSet
from fmtest.errors import DataError
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction
from fmtest.pipelines.vlm.answers import ANSWER_SCHEMA, UnusableAnswer, read_answer
from fmtest.pipelines.vlm.client import VLMClient, VLMReply, send_by_deadline
from fmtest.pipelines.vlm.images import EncodedImage, aligned_to_reference, encode_png
from fmtest.pipelines.vlm.prompts import BASIC_PROMPT, VLMRequest, load_prompt_file
from fmtest.pipelines.vlm.retries import RequestError, RetryLog, call_with_retries
from fmtest.pipelines.vlm.settings import MAX_CONCURRENCY, VLMSettings
from fmtest.pipelines.vlm.store import RequestStore, request_key
from fmtest.pipelines.vlm.usage import replayed_usage, spent_usage
from fmtest.util.extras import require_sdks
from fmtest.util.redact import redact


class VLMPipeline(Pipeline):
    """Classification by a vision-language model; subclasses add the API (`make_client`) and its checks.

    `predict` runs one asyncio event loop per batch with one connection, up to `concurrency`
    requests in flight, each cancelled at its total deadline. `fit` keeps the dataset's reference
    image (a dataset without one gives its first defect-free training image, see
    `Dataset.reference`). `predict` aligns each test image to it; an image that cannot be aligned is
    sent as it is and says so in its reasoning and in `usage["not_aligned"]`. Answers are replayed
    from and recorded in the request store in `PipelineContext.request_store` when there is one.
    """

    task = "classification"
    batch_size: ClassVar[int] = MAX_CONCURRENCY  # the evaluation's batch; up to `concurrency` of it in flight
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
        self.check_endpoint(context, self.settings)
        self.client = self.make_client()
        self.store = RequestStore.open_or_none(context.request_store)
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

    @abstractmethod
    def make_client(self) -> VLMClient:
        """The provider's client for `self.settings` (called once the endpoint is checked)."""

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
    def endpoint(self) -> str:
        """Where requests go, credentials redacted (the client's)."""
        return self.client.endpoint

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

        async def one(connection, sample: Sample) -> Prediction:
            async with in_flight:
                prediction = await self._predict_one(connection, sample)
            bar.update()
            return prediction

        with bar:
            async with self.client.connect() as connection:
                tasks = [asyncio.ensure_future(one(connection, s)) for s in samples]
                try:
                    return list(await asyncio.gather(*tasks))
                except BaseException:
                    # a configuration error or Ctrl-C: send nothing more; answers already in are on disk
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise

    # ---- one image

    async def _predict_one(self, connection, sample: Sample) -> Prediction:
        image, alignment_note = await asyncio.to_thread(  # CPU work off the event loop
            aligned_to_reference, sample.image, self._reference.image, self.settings)
        free_text = self.settings.answer_format == "free_text"
        request = VLMRequest(self.prompt if free_text else self.prompt + self.format_instructions,
                             self._reference_png, encode_png(image), captions=self.settings.captions)
        key, described = request_key(request, pipeline=self.name, model=self.model_id, endpoint=self.endpoint,
                                     settings=self._request_settings(), sample_id=sample.id)
        not_aligned = bool(alignment_note)
        stored = await asyncio.to_thread(self.store.lookup, key) if self.store is not None else None
        if stored is not None and stored.answered:
            return Prediction(label=stored.label, reasoning=alignment_note + (stored.reasoning or ""),
                              usage=replayed_usage(stored, not_aligned=not_aligned))

        log = RetryLog()
        reply: VLMReply | None = None
        try:
            reply = await call_with_retries(
                lambda: send_by_deadline(self.client, connection, request, self.settings.timeout_s), self.settings, log)
            answer = read_answer(reply, free_text=free_text)
        except (RequestError, UnusableAnswer) as failure:
            reason = redact(str(failure))
            if self.store is not None:
                await asyncio.to_thread(self.store.record, key, described, reply=reply, attempts=log.attempts,
                                        error=reason)
            return Prediction.failed(reason, reasoning=alignment_note or None,
                                     usage=spent_usage(reply, log, self.settings, not_aligned=not_aligned))
        if self.store is not None:
            await asyncio.to_thread(self.store.record, key, described, reply=reply, attempts=log.attempts,
                                    answer=answer)
        return Prediction(label=answer[0], reasoning=alignment_note + answer[1],
                          usage=spent_usage(reply, log, self.settings, not_aligned=not_aligned))
