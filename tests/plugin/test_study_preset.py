"""suites/study.toml: every setting is one the pipelines and datasets accept, and the study grid is complete."""

from __future__ import annotations

import tomllib

import pytest
from fakes import REPO, TESTS

from fmtest.config.suite import load_config
from fmtest.data.folder import IndustrialSATOptions
from fmtest.data.mvtec import MVTecOptions
from fmtest.data.options import parse_options as parse_dataset_options
from fmtest.data.oxford_pets import OxfordPetsOptions
from fmtest.pipelines import PIPELINES, TASKS, PipelineContext, pipeline_class

PRESET = REPO / "suites" / "study.toml"


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
    assert carpet.saliency_weights == "timm" and carpet.colour_order == "bgr" and carpet.binarisation == "calibrated"
    # SAA+ published nothing for Oxford-IIIT-Pet: fmtest's settings of SAA+'s form, which keep the whole-cat box
    oxford = effective("oxford_pets", "oxford_pets")
    assert oxford.anomaly_prompts == ("{prompt}",) and oxford.object_prompt == "" and oxford.max_area_ratio == 1.0
    assert effective("industrialsat", "industrialsat").object_prompt == ""


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


# --- the preset end to end, on test-built trees in the public layouts, with injected random-weight models ---

STUDY_CONFTEST = '''
import contextlib
import torchvision
from fmtest.models import registry, imagenet_cnn
from fmtest.models.clip import CLIP_KEY, ClipEncoder
from tiny_models import build_tiny_clip, inject_tiny_sam_and_grounding_dino

_models = contextlib.ExitStack()

def pytest_configure(config):
    inject_tiny_sam_and_grounding_dino(_models, num_queries=5)
    _models.enter_context(registry.inject(CLIP_KEY, ClipEncoder(build_tiny_clip(), "tiny-clip")))
    # a small ResNet stands in for SAA+'s Wide ResNet-50 saliency network: same stages, random weights
    _models.enter_context(registry.inject(imagenet_cnn.WIDE_RESNET50_TIMM_KEY, imagenet_cnn.ImageNetCnn(
        torchvision.models.resnet18().eval(), "tiny-resnet")))

def pytest_unconfigure(config):
    _models.close()
'''


@pytest.mark.slow
def test_the_preset_runs_end_to_end_on_the_public_layouts(pytester, monkeypatch, tmp_path):
    import json
    import shutil
    import sys

    from fakes import make_industrialsat, make_mvtec, make_oxford_pets
    from gdino_upstream import vocab_folder

    data = tmp_path / "data"
    make_mvtec(data, ("carpet", "grid"), n_train=10, n_good=1, n_defective=5)
    make_oxford_pets(data, n_cats=5, n_dogs=8)  # 3 dogs left for training: SAA+ calibrates its threshold on them
    make_industrialsat(data, n_good=10, n_defective=5)
    suites = REPO / "suites"
    for name in ("test_segmentation.py", "test_classification.py"):
        shutil.copy(suites / name, pytester.path / name)
    shutil.copytree(suites / "prompts", pytester.path / "prompts")
    text = PRESET.read_text().replace('categories = ["carpet", "grid", "leather", "tile", "wood"]',
                                      'categories = ["carpet", "grid"]')
    text = text.replace("n_good = 140 ", "n_good = 5 ").replace("n_defective = 60 ", "n_defective = 5 ")
    text += "\n[pipelines.clip_surgery_sam.per_dataset.industrialsat]\nsurgery_depth = 2\n"  # the tiny CLIP's depth
    text += "[pipelines.clip_surgery_sam.per_dataset.mvtec]\nsurgery_depth = 2\n"
    text += "[pipelines.clip_surgery_sam.per_dataset.oxford_pets]\nsurgery_depth = 2\n"
    (pytester.path / "study.toml").write_text(text)
    pytester.makeconftest(STUDY_CONFTEST)
    monkeypatch.setenv("FMTEST_TEST_VOCAB", str(vocab_folder(tmp_path / "vocab")))
    monkeypatch.setenv("PYTHONPATH", str(TESTS) + ":" + ":".join(sys.path))
    for key in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "weights").mkdir()
    collected = pytester.runpytest_subprocess("--fm-config=study.toml", "--collect-only", "-q")
    ids = [line.split("[", 1)[1].rstrip("]") for line in collected.outlines if "::test_" in line]
    assert sorted(ids) == sorted(tomllib.loads(text)["study"]["cases"])
    result = pytester.runpytest_subprocess("--fm-config=study.toml", f"--fm-data-root={data}", "--fm-no-cache",
                                           f"--fm-weights={tmp_path / 'weights'}", "--fm-results=out.json",
                                           "--fm-report=board.html", "-p", "no:randomly", timeout=1200)
    cases = {c["id"]: c for c in json.loads((pytester.path / "out.json").read_text())["cases"]}
    assert set(cases) == set(ids)
    for case_id, case in cases.items():
        expected = "skipped" if case_id.startswith("gemini") else ("passed", "failed")
        assert case["outcome"] in expected, (case_id, case["outcome"], case["message"])
    mvtec = cases["saa_plus-mvtec"]
    assert set(mvtec["breakdown"]) >= {"carpet", "grid"} and mvtec["study"] == {"iou": 0.52}
    assert len(mvtec["images"]) == 2 * (2 + 1)  # per category: 20 % of 10 train/good, 20 % of 5 defectives
    supervised = cases["supervised-industrialsat"]
    assert {f"industrialsat/fold{k}" for k in range(1, 6)} <= set(supervised["breakdown"])
    result.stdout.fnmatch_lines(["saa_plus-mvtec *FAIL", "*study: 0.52*"])  # the published number beside it


def test_fmtest_config_shows_saas_own_carpet_prompts(capsys):
    from fmtest.cli import main

    assert main(["config", "--config", str(PRESET), "--case", "saa_plus-mvtec", "--group", "carpet"]) == 0
    out = capsys.readouterr().out
    assert '"black hole", "thread"' in out and 'object_prompt = "carpet"  # set by saa_plus for mvtec/carpet' in out
    assert "[study_results]\niou = 0.52" in out


def test_fmtest_config_shows_only_the_generation_settings_gemini_is_sent(capsys, tmp_path):
    from fmtest.cli import main

    assert main(["config", "--config", str(PRESET), "--case", "gemini_basic-mvtec"]) == 0
    out = capsys.readouterr().out
    shown = tomllib.loads(out)["pipeline_options"]
    assert shown["sampling"] == "api_default" and shown["answer_format"] == "json"  # the study's label + reasoning
    assert "temperature" not in shown and "seed" not in shown  # the API's defaults: nothing is sent
    assert "# temperature is not set; not used by gemini_basic with these settings" in out
    fixed = tmp_path / "fixed.toml"
    fixed.write_text('[pipelines.gemini_basic]\nsampling = "fixed"\n')
    assert main(["config", "--config", str(fixed), "--case", "gemini_basic-mvtec"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)["pipeline_options"]
    assert shown["temperature"] == 0.0 and shown["seed"] == 0
