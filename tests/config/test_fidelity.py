"""Departures from the study as data, per pipeline and dataset, and the fidelity table generated from them."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from fakes import REPO

from fmtest.config.suite import load_config, parse_config
from fmtest.data.departures import Departure
from fmtest.models import imagenet_cnn, registry
from fmtest.pipelines import pipeline_class
from fmtest.pipelines.base import PipelineContext
from fmtest.report.fidelity import (
    CaseFidelity,
    case_fidelity,
    fidelity_markdown,
    study_fidelity,
)

ROOT = REPO
PRESET = ROOT / "suites" / "study.toml"
FIDELITY_DOC = ROOT / "docs" / "FIDELITY.md"


@contextlib.contextmanager
def every_checkpoint_present():
    """The table describes the preset as it runs with its checkpoints: the supervised reference's ResNet-50."""
    with registry.inject(imagenet_cnn.RESNET50_KEY, object()):
        yield


@pytest.fixture(scope="module")
def preset_cases() -> dict[str, CaseFidelity]:
    with every_checkpoint_present():
        return {case.case_id: case for case in study_fidelity(load_config(PRESET))}


def names(case: CaseFidelity) -> list[str]:
    return [d.name for d in case.departures]


def test_every_published_case_has_its_number_and_the_source_it_follows(preset_cases):
    config = load_config(PRESET)
    assert list(preset_cases) == config.study_cases and len(preset_cases) == 17
    for case_id, case in preset_cases.items():
        assert case.published == config.study_results[case_id]
        assert case.source, case_id
    assert "SAA/model.py" in preset_cases["saa_plus-mvtec"].source
    assert "predict_CLIPS" in preset_cases["clip_surgery_sam-oxford_pets"].source


DATASET = {"industrialsat": [], "mvtec": ["reconstructed subset"], "oxford_pets": ["scored images", "trimap border"]}
PIPELINE = {
    "gdino_sam": [], "sam_clip": ["point grid", "CLIP precision"], "clip_surgery_sam": ["CLIP precision"],
    "gemini_basic": ["border fill", "answer format"], "gemini_refined": ["border fill", "answer format"],
    "supervised": ["backbone", "input", "MLP"],
}


def test_the_study_preset_departs_where_upstream_is_silent_and_otherwise_only_where_it_must(preset_cases):
    """Upstream followed where known: what the preset still does otherwise is CLIP's float32 and SAA+'s mask."""
    for case_id, case in preset_cases.items():
        pipeline, dataset = case_id.split("-")
        expected = {"saa_plus": ["prompts", "binarisation"] if dataset != "mvtec" else ["binarisation"],
                    "gemini_refined": (["refined prompt"] if dataset == "industrialsat" else [])
                    + PIPELINE["gemini_refined"]}.get(pipeline, PIPELINE.get(pipeline))
        assert names(case) == expected + DATASET[dataset], case_id
        differs = {d.name for d in case.departures if d.kind == "differs"}
        assert differs <= {"CLIP precision", "binarisation"}, (case_id, differs)
    assert preset_cases["supervised-industrialsat"].departures[0].kind == "unstated"  # ResNet-50: its depth unstated


def departures(pipeline: str, options: dict, dataset: str = "mvtec", group: str | None = "carpet",
               weights_dir: Path | None = None) -> list[Departure]:
    context = PipelineContext(dataset=dataset, group=group, options=options, prompt="defect", weights_dir=weights_dir,
                             suite_dir=PRESET.parent)
    return pipeline_class(pipeline).departures(context)


@pytest.mark.parametrize("pipeline, options, name, ours", [
    ("gdino_sam", {"box_threshold": 0.3}, "box threshold", "0.3"),
    ("gdino_sam", {"sam_variant": "vit_b"}, "SAM variant", '"vit_b"'),
    ("gdino_sam", {"sam_precision": "bf16"}, "SAM precision", '"bf16"'),
    ("gdino_sam", {"gdino_checkpoint": "mine.pth"}, "GroundingDINO weights", "your file mine.pth"),
    ("sam_clip", {}, "crop", '"mask_box"'),
    ("sam_clip", {"softmax_over": "texts"}, "crop scoring", '"texts"'),
    ("sam_clip", {"points_per_side": 32}, "point grid", "points_per_side = 32"),
    ("clip_surgery_sam", {}, "CLIP input", '"clip"'),
    ("clip_surgery_sam", {}, "token norm", '"per_token"'),
    ("clip_surgery_sam", {}, "point coordinates", '"exact"'),
    ("clip_surgery_sam", {"negative_points": False}, "negative points", "none"),
    ("saa_plus", {}, "saliency features", "SAM's image embedding"),
    ("saa_plus", {"saliency": "wideresnet50", "saliency_weights": "torchvision"}, "saliency weights", '"torchvision"'),
    ("saa_plus", {}, "colour order", "SAM and the saliency network see RGB"),
    ("saa_plus", {}, "prompts", '"defect"; object "object"; box area < 0.9 x the object\'s; top 5'),
    ("saa_plus", {"binarisation": "top_k_union"}, "binarisation", "union of the top-5 regions with confidence >= 0"),
    ("gemini_basic", {"captions": True}, "captions", '"Reference image: a defect-free part (label OK)." and '
                                                     '"Image to inspect:" before the images'),
    ("gemini_basic", {"sampling": "fixed"}, "sampling", "temperature 0, seed 0"),
    ("gemini_basic", {"align": False}, "alignment", "images sent as scanned"),
    ("gemini_basic", {"model": "gemini-2.0-flash"}, "model", '"gemini-2.0-flash"'),
    ("gemini_refined", {"prompt_file": "prompts/basic.txt"}, "refined prompt", "prompts/basic.txt, not the published text"),
])
def test_each_setting_off_the_study_is_declared_with_what_fmtest_does(pipeline, options, name, ours):
    found = {d.name: d for d in departures(pipeline, options)}
    assert name in found, sorted(found)
    assert found[name].ours == ours


def test_the_upstream_values_declare_nothing():
    text2seg = {"clip_input": "text2seg", "token_norm": "across_tokens", "point_coords": "integer"}
    assert [d.name for d in departures("clip_surgery_sam", text2seg)] == ["CLIP precision"]
    assert [d.name for d in departures("sam_clip", {"softmax_over": "masks", "score_threshold": 0.05,
                                                    "crop": "text2seg", "points_per_side": 10})] == [
        "point grid", "CLIP precision"]
    saa = {"saliency": "wideresnet50", "colour_order": "bgr", "published_prompts": True}
    assert [d.name for d in departures("saa_plus", saa)] == ["binarisation"]
    assert [d.name for d in departures("saa_plus", saa, group=None)] == ["binarisation"]  # a case, before its groups
    assert departures("gdino_sam", {}) == []
    assert departures("padim", {}) == []  # not one of the study's pipelines: no published run to depart from


def test_supervised_declares_the_efficientnet_fallback_as_a_departure(tmp_path):
    (backbone, *_) = departures("supervised", {}, dataset="industrialsat", group="industrialsat", weights_dir=tmp_path)
    assert backbone.kind == "differs" and backbone.ours.startswith("EfficientNet-Lite0")
    (tmp_path / registry.spec(imagenet_cnn.RESNET50_KEY).filename).write_bytes(b"")  # present: auto takes it
    (backbone, *_) = departures("supervised", {}, dataset="industrialsat", group="industrialsat", weights_dir=tmp_path)
    assert backbone.kind == "unstated" and backbone.ours.startswith("ResNet-50")
    (backbone, *_) = departures("supervised", {"backbone": "efficientnet_lite0"}, dataset="industrialsat",
                                group="industrialsat", weights_dir=tmp_path)
    assert backbone.kind == "differs"


@pytest.mark.parametrize("dataset, options, name, kind", [
    ("mvtec", {"subset": "all"}, "scored images", "differs"),
    ("mvtec", {"subset": "study"}, "reconstructed subset", "unstated"),
    ("mvtec", {"subset_file": "study_list.txt"}, "scored images", "unstated"),
    ("mvtec", {"n_defective": 10}, "subsample", "differs"),
    ("mvtec", {"categories": ["carpet"]}, "categories", "differs"),
    ("oxford_pets", {"n_good": 10}, "scored images", "differs"),
    ("oxford_pets", {"trimap_border": "pet"}, "trimap border", "unstated"),
    ("oxford_pets", {"empty_nok_masks": "exclude"}, "empty masks", "differs"),
])
def test_datasets_declare_how_their_images_depart_from_the_studys(dataset, options, name, kind):
    config = parse_config({"datasets": {dataset: options}})
    found = {d.name: d for d in config.dataset_class(dataset).departures(options)}
    assert found[name].kind == kind


def test_the_fidelity_table_has_a_row_per_departure_and_one_for_a_faithful_case():
    config = parse_config({"study": {"cases": ["gdino_sam-mvtec", "clip_surgery_sam-satsim"],
                                     "results": {"gdino_sam-mvtec": {"iou": 0.13}}},
                           "datasets": {"mvtec": {"subset_file": "a|b.txt"}}})
    faithful = case_fidelity(config, "gdino_sam-mvtec")
    assert [d.name for d in faithful.departures] == ["scored images"]
    table = fidelity_markdown([CaseFidelity("gdino_sam-satsim", "gdino_sam", "satsim", {}, "Text2Seg", ()),
                               *study_fidelity(config)])
    rows = table.splitlines()
    assert rows[2] == "| `gdino_sam-satsim` | — | Text2Seg | none: runs as published |  |  |  |  |"
    assert rows[3].startswith("| `gdino_sam-mvtec` | iou 0.13 | Text2Seg `Text2Seg.predict_dino`")
    assert "the images listed in a\\|b.txt" in rows[3]  # a '|' in a cell does not split it
    surgery = [r for r in rows if "clip_surgery_sam-satsim" in r or r.startswith("|  |  |  |")]
    assert len(surgery) == len(case_fidelity(config, "clip_surgery_sam-satsim").departures)


def test_a_departure_must_say_what_and_why():
    with pytest.raises(ValueError, match="reason must say something"):
        Departure("binarisation", "a threshold", "none", " ")
    with pytest.raises(ValueError, match="kind must be"):
        Departure("binarisation", "a threshold", "none", "because", kind="maybe")


def test_docs_fidelity_table_is_generated_from_the_departures():
    with every_checkpoint_present():
        generated = fidelity_markdown(study_fidelity(load_config(PRESET)))
    text = FIDELITY_DOC.read_text()
    start, end = "<!-- fidelity-table:start -->\n", "<!-- fidelity-table:end -->"
    section = text[text.index(start) + len(start):text.index(end)]
    assert section == generated, ("docs/FIDELITY.md is stale: regenerate the table with fmtest.report.fidelity "
                                  "(study_fidelity(load_config('suites/study.toml')) with every checkpoint present)")
