"""suites/study.toml: every setting is one the pipelines and datasets accept, and the study grid is complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fmtest.config import load_config
from fmtest.data.folder import IndustrialSATOptions
from fmtest.data.mvtec import MVTecOptions
from fmtest.data.options import parse_options as parse_dataset_options
from fmtest.data.oxford_pets import OxfordPetsOptions
from fmtest.pipelines import PIPELINES, TASKS, PipelineContext, pipeline_class

PRESET = Path(__file__).resolve().parents[1] / "suites" / "study.toml"


@pytest.fixture(scope="module")
def preset() -> dict:
    return tomllib.loads(PRESET.read_text())


def test_the_preset_loads_and_every_case_of_the_grid_reads_its_settings(preset):
    config = load_config(PRESET)
    assert config.study_cases == preset["study"]["cases"]
    for case_id in config.study_cases:
        pipeline, dataset = config.split_case_id(case_id, "test")
        group = "carpet" if dataset == "mvtec" else None
        context = PipelineContext(dataset=dataset, group=group,
                                  options=config.pipeline_options(pipeline, dataset, group))
        cls = config.pipeline_class(pipeline)
        (cls.options_for(context) if hasattr(cls, "options_for") else cls.read_options(context.options))


def test_saa_plus_runs_saas_own_settings_on_mvtec():
    config = load_config(PRESET)

    def effective(dataset, group):
        context = PipelineContext(dataset=dataset, group=group,
                                  options=config.pipeline_options("saa_plus", dataset, group))
        return pipeline_class("saa_plus").options_for(context)

    carpet = effective("mvtec", "carpet")
    assert "black hole" in carpet.anomaly_prompts and carpet.saliency == "wideresnet50"
    other = effective("oxford_pets", None)
    assert other.anomaly_prompts == ("{prompt}",) and not other.published_prompts


def test_every_dataset_setting_is_accepted_and_mvtec_is_the_study_reconstruction(preset):
    options_types = {"mvtec": MVTecOptions, "oxford_pets": OxfordPetsOptions, "industrialsat": IndustrialSATOptions}
    for name, table in preset["datasets"].items():
        parse_dataset_options(options_types[name], table, name)
    assert preset["datasets"]["mvtec"]["subset"] == "study"


def test_the_grid_and_its_published_numbers(preset):
    cases = preset["study"]["cases"]
    results = preset["study"]["results"]
    assert set(results) == set(cases) and len(cases) == len(set(cases)) == 17
    segmentation = [c for c in cases if TASKS[c.split("-")[0]] == "segmentation"]
    assert {c.split("-")[1] for c in segmentation} == {"industrialsat", "mvtec", "oxford_pets"}
    assert len(segmentation) == 12
    for case, metrics in results.items():
        pipeline, dataset = case.split("-")
        assert pipeline in PIPELINES and pipeline in preset["default_pipelines"]
        assert dataset in preset["default_datasets"]
        assert set(metrics) == ({"iou"} if case in segmentation else {"f2"})
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert results["saa_plus-mvtec"] == {"iou": 0.52} and results["supervised-industrialsat"] == {"f2": 0.82}
    assert preset["thresholds"]["iou"] == 0.60
