"""Pipelines by name, one module each; imported on use so heavy model code loads only when needed."""

from __future__ import annotations

import importlib

from fmtest.errors import ConfigError
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction, Task

PIPELINES: dict[str, str] = {
    # baselines: no download needed, so they run by default
    "reference_diff": "fmtest.pipelines.reference_diff:ReferenceDiff",
    "padim": "fmtest.pipelines.padim:Padim",
    # zero-shot foundation-model segmentation (the study's four)
    "gdino_sam": "fmtest.pipelines.gdino_sam:GroundingDinoSam",
    "sam_clip": "fmtest.pipelines.sam_clip:SamClip",
    "clip_surgery_sam": "fmtest.pipelines.clip_surgery_sam:ClipSurgerySam",
    "saa_plus": "fmtest.pipelines.saa_plus:SaaPlus",
    # vision-language classification
    "gemini_basic": "fmtest.pipelines.gemini:GeminiBasic",
    "gemini_refined": "fmtest.pipelines.gemini:GeminiRefined",
    "openai_vlm": "fmtest.pipelines.openai_vlm:OpenAIVLM",
    "supervised": "fmtest.pipelines.supervised:Supervised",  # the study's supervised reference (labelled folds)
}
TASKS: dict[str, Task] = {
    "reference_diff": "segmentation", "padim": "segmentation", "gdino_sam": "segmentation",
    "sam_clip": "segmentation", "clip_surgery_sam": "segmentation", "saa_plus": "segmentation",
    "gemini_basic": "classification", "gemini_refined": "classification", "openai_vlm": "classification",
    "supervised": "classification",
}


def pipeline_class(name: str) -> type[Pipeline]:
    try:
        module, cls = PIPELINES[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown pipeline {name!r}; known: {', '.join(PIPELINES)}") from None
    return getattr(importlib.import_module(module), cls)


__all__ = ["PIPELINES", "TASKS", "Pipeline", "PipelineContext", "Prediction", "Task", "pipeline_class"]
