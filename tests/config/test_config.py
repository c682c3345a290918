"""The suite config: one schema for every table, variants, per-dataset and per-group settings,
where the config is found, and `fmtest config`."""

from __future__ import annotations

import math
import re
import sys
import tomllib

import pytest
from fakes import REPO

from fmtest.cli import main as fmtest_main
from fmtest.config.lookup import find_config
from fmtest.config.schema import markdown_reference
from fmtest.config.suite import load_config, parse_config
from fmtest.errors import ConfigError
from fmtest.pipelines import PIPELINES
from fmtest.pipelines.base import PipelineContext

ROOT = REPO
README = ROOT / "README.md"


def refused(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(("raw", "expected"), [
    ({"thresholds": {"iuo": 0.01}}, r"^\[thresholds\] iuo: unknown key \(did you mean iou\?\); accepted: iou, f2, "),
    ({"thresholds": {"f_2": 0.5}}, r"^\[thresholds\] f_2: unknown key \(did you mean f2\?\)"),
    ({"thresholds": {"max_false_alarm": 0.1}},
     r"^\[thresholds\] max_false_alarm: unknown key \(did you mean max_false_alarm_rate\?\)"),
    # robustness and comparison figures are no case's metric: a threshold on them would never judge anything
    ({"thresholds": {"clean_recall": 0.5}}, r"^\[thresholds\] clean_recall: unknown key"),
    ({"thresholds": {"max_new_slip_rate": 0.1}}, r"^\[thresholds\] max_new_slip_rate: unknown key"),
    ({"thresholds": {"false_alarm_rate": 0.1}}, r"^\[thresholds\] false_alarm_rate: unknown key \(did you mean "
                                                r"max_false_alarm_rate\?\)"),  # lower is better: only a maximum
    ({"thresholds": {"max_iou": 0.1}}, r"^\[thresholds\] max_iou: unknown key"),  # higher is better: only a minimum
    ({"thresholds": {"padim-satsm": {"iou": 0.1}}},
     r'^\[thresholds."padim-satsm"\]: unknown case \'padim-satsm\' \(did you mean padim-satsim\?\); a case is '
     r"<pipeline>-<dataset>, pipelines: reference_diff, padim, .*; datasets: satsim, "),
    ({"thresholds": {"padim-satsim": {"iuo": 0.1}}}, r'^\[thresholds."padim-satsim"\] iuo: unknown key'),
    ({"risk": {"target_slip": 0.1}}, r"^\[risk\] target_slip: unknown key \(did you mean target_slip_rate\?\)"),
    ({"robustness": {"max_flip": 0.1}}, r"^\[robustness\] max_flip: unknown key \(did you mean max_flip_rate\?\)"),
    ({"guardrails": {"enable": False}}, r"^\[guardrails\] enable: unknown key \(did you mean enabled\?\)"),
    ({"guardrails": {"elpv": {"aligment": False}}}, r"^\[guardrails.elpv\] aligment: unknown key \(did you mean "
                                                    r"alignment\?\)"),
    ({"thresholds": {"iou": -0.1}}, r"^\[thresholds\] iou = -0.1: accepted: a number in \[0, 1\]$"),
    ({"thresholds": {"iou": math.nan}}, r"^\[thresholds\] iou = nan: accepted: a number in \[0, 1\]$"),
    ({"thresholds": {"max_false_alarm_rate": 1.5}}, r"^\[thresholds\] max_false_alarm_rate = 1.5: accepted: a number "
                                                    r"in \[0, 1\]$"),
    ({"thresholds": {"padim-satsim": {"f2": -1}}}, r'^\[thresholds."padim-satsim"\] f2 = -1: accepted'),
    ({"seed": 1.5}, r"^seed = 1.5: accepted: an integer >= 0$"),
    ({"bootstrap_resamples": "many"}, r'^bootstrap_resamples = "many": accepted: an integer >= 1$'),
    ({"prompts": {"mvtec": 3}}, r"^\[prompts\] mvtec = 3: accepted: a string$"),
    ({"prompts": {"mvtek": "defect"}}, r"^\[prompts\] mvtek: unknown dataset 'mvtek' \(did you mean mvtec\?\)"),
    ({"iou": 0.6}, r"^iou: not a top-level key; it belongs in \[thresholds\]$"),
    ({"thresholds": 0.6}, r"^thresholds = 0.6: accepted: a table$"),
    ({"default_pipelines": ["padim", "gemin_basic"]},
     r"^default_pipelines: unknown pipeline 'gemin_basic' \(did you mean gemini_basic\?\)"),
    ({"device": "gpu"}, r'^device = "gpu": accepted: "auto", "cpu", "cuda" or "cuda:<index>"$'),
    ({"robustness": {"perturbations": ["blurr"]}},
     r"^\[robustness\] perturbations: unknown perturbation 'blurr' \(did you mean blur\?\)"),
    ({"robustness": {"ladders": {"blur": [-1.0]}}}, r"^\[robustness.ladders\]: robustness level -1"),
    ({"baseline": {"tolerance": -0.02}}, r"^\[baseline\] tolerance = -0.02: accepted: a number in \[0, 1\]$"),
    ({"datasets": {"satsim": {"sise": 64}}}, r"^\[datasets.satsim\]: unknown option\(s\) sise; known: "),
    ({"datasets": {"satsim": {"size": 8}}}, r"^\[datasets.satsim\]: option size must be >= 64"),
    ({"datasets": {"mine": {"n": 1}}}, r"^\[datasets.mine\]: unknown dataset 'mine'.*; for your own dataset set class"),
    ({"pipelines": {"padim": {"image_sise": 64}}}, r"^\[pipelines.padim\]: unknown option\(s\) image_sise; known: "),
    ({"pipelines": {"padim": {"prompt": "x"}}}, r"^\[pipelines.padim\] prompt: a prompt is set per dataset"),
    ({"pipelines": {"padm": {"seed": 1}}}, r"^\[pipelines.padm\]: unknown pipeline 'padm' \(did you mean padim\?\).*"
                                           r"for a variant set uses"),
    ({"compare": {"padim": {"against": "padm"}}},
     r"^\[compare.padim\] against: unknown pipeline 'padm' \(did you mean padim\?\)"),
    ({"compare": {"padim": {}}}, r"^\[compare.padim\] against: missing"),
    ({"compare": {"padim": {"against": "reference_diff", "max_new_slips": -1}}},
     r"^\[compare.padim\] max_new_slips = -1: accepted: an integer >= 0$"),
    ({"study": {"results": {"padim-satsim": {"iuo": 0.5}}}},
     r'^\[study.results."padim-satsim"\]: unknown metric \'iuo\' \(did you mean iou\?\)'),
    ({"mlflow": {"uri": "file:x"}}, r"^\[mlflow\] uri: unknown key; accepted: tracking_uri, experiment$"),
])
def test_each_mistake_is_refused_with_one_line_naming_table_key_and_what_is_accepted(raw, expected):
    assert re.search(expected, refused(raw)), refused(raw)


def test_the_file_is_named_in_the_message(tmp_path):
    path = tmp_path / "fmtest.toml"
    path.write_text("[thresholds]\niuo = 0.01\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: \[thresholds\] iuo: unknown key"):
        load_config(path)


def test_shipped_config_and_defaults_load_with_the_schema_defaults():
    config = load_config(ROOT / "suites" / "fmtest.toml")
    assert config.thresholds == {"iou": 0.60, "f2": 0.80}
    assert config.case_thresholds == {"gdino_sam-oxford_pets": {"iou": 0.75}}
    assert config.robustness["gate_level"] == 1 and config.risk["n_train_scores"] == 40
    assert config.guardrails_for("elpv")["alignment"] is False and config.guardrails_for("satsim")["alignment"]
    defaults = load_config(None)
    assert defaults.robustness["max_flip_rate"] == 0.10 and defaults.bootstrap_resamples == 1000
    assert defaults.default_datasets == ["satsim", "elpv"] and defaults.path is None


def test_tables_of_other_features_are_parsed_into_fields():
    config = parse_config({
        "history_url": "https://ci.example/history.html",
        "thresholds": {"max_invalid_answer_rate": 0.05},
        "mlflow": {"tracking_uri": "file:./mlruns", "experiment": "sam-ft"},
        "pipelines": {"sam_ft": {"uses": "gdino_sam", "box_threshold": 0.3}},
        "compare": {"sam_ft": {"against": "gdino_sam", "tolerance": 0.01, "max_new_slips": 2}},
        "study": {"results": {"gdino_sam-mvtec": {"iou": 0.52, "f2": 0.61}}},
        "datasets": {"mvtec": {"n_good": 10, "n_defective": 5}},
    })
    assert config.history_url == "https://ci.example/history.html"
    assert config.thresholds["max_invalid_answer_rate"] == 0.05
    assert config.file_settings["[mlflow]"] == {"tracking_uri": "file:./mlruns", "experiment": "sam-ft"}
    spec = config.compare["sam_ft"]
    assert (spec.candidate, spec.against, spec.tolerance, spec.max_new_slips) == ("sam_ft", "gdino_sam", 0.01, 2)
    assert parse_config({"compare": {"padim": {"against": "reference_diff"}}}).compare["padim"].max_new_slips == 0
    assert config.study_results == {"gdino_sam-mvtec": {"iou": 0.52, "f2": 0.61}}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_pipeline_table_is_checked_by_its_pipeline_at_load_time(name):
    message = refused({"pipelines": {name: {"no_such_option": 1}}})
    assert message.startswith(f"[pipelines.{name}]: unknown option(s) no_such_option; known: ")


# --------------------------------------------------------------------------- variants

VARIANTS = {
    "pipelines": {
        "padim": {"image_size": 64},
        "padim_fast": {"uses": "padim", "n_features": 50},
        "padim_faster": {"uses": "padim_fast", "image_size": 32},
    },
    "thresholds": {"padim_faster-satsim": {"iou": 0.3}},
    "default_pipelines": ["padim", "padim_fast", "padim_faster"],
}


def test_a_variant_is_its_own_pipeline_with_its_base_settings_under_its_own():
    config = parse_config(VARIANTS)
    assert config.pipeline_options("padim_fast", "satsim") == {"image_size": 64, "n_features": 50}
    assert config.pipeline_options("padim_faster", "satsim") == {"image_size": 32, "n_features": 50}
    base, variant = config.pipeline_class("padim"), config.pipeline_class("padim_faster")
    assert issubclass(variant, base) and variant.name == "padim_faster" and base.name == "padim"
    assert config.pipeline_task("padim_faster") == "segmentation"
    assert config.case_thresholds == {"padim_faster-satsim": {"iou": 0.3}}
    assert "padim_faster-satsim" in config.case_ids()
    config.check_selection(["satsim"], ["padim_faster"])
    with pytest.raises(ConfigError, match=r"^--fm-pipeline: unknown pipeline 'padim_fastr' \(did you mean padim_fast"):
        config.check_selection(["satsim"], ["padim_fastr"])


def test_a_variant_is_cached_apart_from_its_base_even_with_the_same_options():
    config = parse_config({"pipelines": {"same": {"uses": "reference_diff"}}})
    fingerprints = {config.pipeline_class(name)(PipelineContext(dataset="satsim")).fingerprint
                    for name in ("reference_diff", "same")}
    assert len(fingerprints) == 2


@pytest.mark.parametrize(("pipelines", "expected"), [
    ({"fast": {"uses": "padim", "image_sise": 3}}, r"^\[pipelines.fast\]: unknown option\(s\) image_sise"),
    ({"fast": {"uses": "padim", "image_size": 33}}, r"^\[pipelines.fast\]: out of range: image_size=33"),
    ({"fast": {"uses": "padm"}}, r"^\[pipelines.fast\] uses: unknown pipeline 'padm' \(did you mean padim\?\)"),
    ({"a": {"uses": "b"}, "b": {"uses": "a"}}, r"^\[pipelines.b\] uses: variants name each other in a circle: a -> b -> a"),
    ({"padim": {"uses": "reference_diff"}}, r"^\[pipelines.padim\] uses: padim is a built-in or installed pipeline"),
    ({"fast": {"uses": "padim", "class": "x:Y"}}, r"^\[pipelines.fast\]: set uses .* or class .*, not both"),
    ({"fast": {"uses": 3}}, r"^\[pipelines.fast\] uses = 3: accepted: a string"),
])
def test_a_variant_is_checked_like_its_base(pipelines, expected):
    assert re.search(expected, refused({"pipelines": pipelines})), refused({"pipelines": pipelines})


# --------------------------------------------------------------------------- per dataset and per group

GROUPED = {
    "prompts": {"mvtec": "defect", "mvtec/grid": "irregular pattern"},
    "pipelines": {
        "saa_plus": {
            "box_threshold": 0.1,
            "per_dataset": {"mvtec": {"box_threshold": 0.2, "object_prompt": "texture"}},
            "per_group": {"mvtec/carpet": {"prompt": "black hole", "object_prompt": "carpet"}},
        },
        "saa_carpet_strict": {"uses": "saa_plus", "per_group": {"mvtec/carpet": {"box_threshold": 0.4}}},
    },
}


def test_options_and_prompts_are_set_per_dataset_and_per_group():
    config = parse_config(GROUPED)
    assert config.pipeline_options("saa_plus", "satsim") == {"box_threshold": 0.1}
    assert config.pipeline_options("saa_plus", "mvtec", "grid") == {"box_threshold": 0.2, "object_prompt": "texture"}
    assert config.pipeline_options("saa_plus", "mvtec", "carpet") == {"box_threshold": 0.2, "object_prompt": "carpet"}
    assert config.pipeline_options("saa_carpet_strict", "mvtec", "carpet") == {"box_threshold": 0.4,
                                                                                "object_prompt": "carpet"}
    assert config.prompt_for("mvtec", "carpet", "saa_plus") == "black hole"  # the pipeline's group setting
    assert config.prompt_for("mvtec", "grid", "saa_plus") == "irregular pattern"  # [prompts] for the group
    assert config.prompt_for("mvtec", "tile", "saa_plus") == "defect"
    assert config.prompt_for("mvtec", "carpet", "padim") == "defect"  # other pipelines keep [prompts]
    assert config.prompt_for("oxford_pets") == "cat" and config.prompt_for("satsim", pipeline="saa_plus") == "defect"


@pytest.mark.parametrize(("layer", "expected"), [
    ({"per_dataset": {"mvtec": {"box_threshold": 2.0}}},
     r"^\[pipelines.saa_plus.per_dataset.mvtec\]: box_threshold must be in \[0, 1\], got 2.0"),
    ({"per_group": {"mvtec/carpet": {"top_k": 0}}}, r'^\[pipelines.saa_plus.per_group."mvtec/carpet"\]: top_k must be'),
    ({"per_group": {"mvtec/carpet": {"prompt": ["a"]}}},
     r'^\[pipelines.saa_plus.per_group."mvtec/carpet"\] prompt = \["a"\]: accepted: a string$'),
    ({"per_group": {"mvtek/carpet": {}}}, r"unknown dataset 'mvtek' \(did you mean mvtec\?\)"),
    ({"per_group": {"mvtec": {}}}, r'per_group."mvtec"\]: name the group as "<dataset>/<group>"'),
    ({"per_dataset": {"mvtec/carpet": {}}}, r'a group goes in \[pipelines.saa_plus.per_group."mvtec/carpet"\]'),
])
def test_a_bad_per_dataset_or_per_group_setting_names_its_own_table(layer, expected):
    raw = {"pipelines": {"saa_plus": layer}}
    assert re.search(expected, refused(raw)), refused(raw)


def test_settings_for_a_group_the_dataset_does_not_have_are_refused_once_it_opens():
    config = parse_config(GROUPED)
    config.check_groups("mvtec", ["carpet", "grid"])
    config.check_groups("satsim", ["satsim"])
    with pytest.raises(ConfigError, match=r'\[prompts\] "mvtec/grid": unknown group of mvtec \'grid\'.*; known: '
                                          r"carpet, tile"):
        config.check_groups("mvtec", ["carpet", "tile"])


# --------------------------------------------------------------------------- finding the config


def test_the_config_is_found_beside_the_tests_named_from_any_folder(tmp_path):
    suites = tmp_path / "project" / "suites"
    suites.mkdir(parents=True)
    (suites / "test_segmentation.py").write_text("")
    (suites / "fmtest.toml").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = (suites / "fmtest.toml").resolve()
    assert find_config([str(suites)], elsewhere) == config
    assert find_config([f"{suites / 'test_segmentation.py'}::test_segmentation"], elsewhere) == config
    assert find_config(["../project"], elsewhere) == config  # a project folder: its suites/
    assert find_config(["-q", "no/such/path"], tmp_path / "project") == tmp_path / "project" / "suites" / "fmtest.toml"
    assert find_config([], elsewhere) is None
    other = tmp_path / "other"
    other.mkdir()
    (other / "fmtest.toml").write_text("")
    with pytest.raises(ConfigError, match="the tests named use different suite configs"):
        find_config([str(suites), str(other)], elsewhere)


# --------------------------------------------------------------------------- `fmtest config`


def test_fmtest_config_prints_the_effective_settings_of_a_case_as_toml(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text('[pipelines.saa_plus]\nbox_threshold = 0.1\n'
                    '[pipelines.saa_plus.per_group."mvtec/carpet"]\nprompt = "black hole"\nobject_prompt = "carpet"\n'
                    '[thresholds."saa_plus-mvtec"]\niou = 0.5\n'
                    '[study.results."saa_plus-mvtec"]\niou = 0.39\n[datasets.mvtec]\nn_good = 20\n')
    assert fmtest_main(["config", "--config", str(path), "--case", "saa_plus-mvtec", "--group", "carpet"]) == 0
    out = capsys.readouterr().out
    shown = tomllib.loads(out)
    assert shown["prompt"] == "black hole" and shown["group"] == "carpet"
    assert shown["pipeline_options"]["object_prompt"] == "carpet"
    assert shown["pipeline_options"]["box_threshold"] == 0.1
    assert shown["pipeline_options"]["top_k"] == 5  # a default, shown so the user sees everything that ran
    assert shown["thresholds"] == {"iou": 0.5, "f2": 0.8}
    assert shown["dataset_options"]["n_good"] == 20 and shown["study_results"] == {"iou": 0.39}
    assert 'object_prompt = "carpet"  # [pipelines.saa_plus.per_group."mvtec/carpet"]' in out
    assert fmtest_main(["config", "--config", str(path), "--case", "saa_plus-mvtek"]) == 2
    assert "--case: unknown case 'saa_plus-mvtek' (did you mean saa_plus-mvtec?)" in capsys.readouterr().err


def test_fmtest_config_hides_secrets_it_prints(tmp_path, capsys):
    path = tmp_path / "fmtest.toml"
    path.write_text('[pipelines.openai_vlm]\napi_key = "sk-secret"\nmodel = "m"\n'
                    'base_url = "http://user:PASS@gateway/v1"\n')
    assert fmtest_main(["config", "--config", str(path), "--case", "openai_vlm-satsim"]) == 0
    out = capsys.readouterr().out
    assert "sk-secret" not in out and 'api_key = "<redacted>"' in out
    assert "PASS" not in out and 'base_url = "http://<redacted>@gateway/v1"' in out


def test_fmtest_config_checks_a_file_and_names_what_it_defines(tmp_path, capsys):
    path = tmp_path / "fmtest.toml"
    path.write_text('[pipelines.fast]\nuses = "padim"\nimage_size = 64\n')
    assert fmtest_main(["config", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid\npipelines defined here: fast (uses padim)\n"
    path.write_text("[thresholds]\niuo = 0.5\n")
    assert fmtest_main(["config", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"fmtest: error: {path}: [thresholds] iuo: unknown key")


def test_readme_config_reference_is_generated_from_the_schema(capsys):
    assert fmtest_main(["config", "--reference"]) == 0
    generated = capsys.readouterr().out
    assert generated == markdown_reference()
    text = README.read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    section = text[text.index(start) + len(start):text.index(end)]
    assert section == generated, "README config reference is stale: run `fmtest config --reference`"
    for table in ("[thresholds]", "[risk]", "[robustness]", "[guardrails]", "[compare.<candidate>]", "[mlflow]",
                  '[pipelines.<name>.per_group."<dataset>/<group>"]'):
        assert f"`{table}`" in generated
    assert "| `[thresholds]` | `max_false_alarm_rate` | a number in [0, 1] |" in generated


def test_suite_folder_is_on_sys_path_only_while_a_plugin_class_is_imported(tmp_path):
    (tmp_path / "my_suite_models.py").write_text(
        "import numpy as np\nfrom fmtest.pipelines import Pipeline, Prediction\n"
        "class Dark(Pipeline):\n    task = 'segmentation'\n"
        "    def predict(self, samples):\n"
        "        return [Prediction.from_mask(s.image < 0.1) for s in samples]\n")
    path = tmp_path / "fmtest.toml"
    path.write_text('[pipelines.dark]\nclass = "my_suite_models:Dark"\n')
    before = list(sys.path)
    try:
        config = load_config(path)
    finally:
        sys.modules.pop("my_suite_models", None)
    assert sys.path == before
    assert config.pipeline_class("dark").name == "dark" and config.pipeline_task("dark") == "segmentation"
    assert "dark-satsim" in config.case_ids()
