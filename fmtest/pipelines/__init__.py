"""Pipelines by name: the built-in ones, and those other packages install through entry points.

Built-in pipelines are one module each, imported on use so heavy model code loads only when needed.
A package adds its own under the entry-point group `fmtest.pipelines` (`name = "module:Class"`);
a suite config adds variants and classes by path (`fmtest.config.suite`).
"""

from __future__ import annotations

from typing import get_args

from fmtest.errors import ConfigError
from fmtest.pipelines.base import Pipeline, PipelineContext, Prediction, Task
from fmtest.util.extensions import load_class, named, registered_class, registered_names

ENTRY_POINT_GROUP = "fmtest.pipelines"
PIPELINES: dict[str, str] = {
    # baselines: no download needed, so they run by default
    "reference_diff": "fmtest.pipelines.reference_diff:ReferenceDiff",
    "padim": "fmtest.pipelines.padim:Padim",
    "patchcore": "fmtest.pipelines.patchcore:Patchcore",
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
    "anomalib": "fmtest.pipelines.anomalib_model:Anomalib",  # the team's own anomalib model (`checkpoint = ...`)
}
TASKS: dict[str, Task] = {  # of the built-ins, so planning a run imports none of them
    "reference_diff": "segmentation", "padim": "segmentation", "patchcore": "segmentation", "gdino_sam": "segmentation",
    "sam_clip": "segmentation", "clip_surgery_sam": "segmentation", "saa_plus": "segmentation",
    "gemini_basic": "classification", "gemini_refined": "classification", "openai_vlm": "classification",
    "supervised": "classification", "anomalib": "segmentation",
}


def known_pipelines() -> list[str]:
    """Built-in pipelines in menu order, then installed ones, which may not take a built-in name."""
    return registered_names(PIPELINES, ENTRY_POINT_GROUP, "pipeline")


def pipeline_class(name: str) -> type[Pipeline]:
    """The class of a built-in or installed pipeline."""
    return registered_class(name, PIPELINES, ENTRY_POINT_GROUP, "pipeline", load_pipeline)


def pipeline_task(name: str) -> Task:
    return TASKS[name] if name in TASKS else pipeline_class(name).task


def load_pipeline(spec: str, name: str, what: str) -> type[Pipeline]:
    """A user's Pipeline subclass ("module:Class"), checked, under the name the suite knows it by."""
    cls = load_class(spec, Pipeline, what)
    if getattr(cls, "task", None) not in get_args(Task):
        raise ConfigError(f"{what}: {spec} must set task = \"segmentation\" or \"classification\", "
                          f"got {getattr(cls, 'task', None)!r}")
    return named(cls, name)


__all__ = ["ENTRY_POINT_GROUP", "PIPELINES", "TASKS", "Pipeline", "PipelineContext", "Prediction", "Task",
           "known_pipelines", "load_pipeline", "pipeline_class", "pipeline_task"]
