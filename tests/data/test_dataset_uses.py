"""`[datasets.<name>] uses = "<dataset>"`: a named dataset of a built-in kind (a labelling tool's export,
an MVTec AD subset), checked when the config loads and run as a case of its own name; and the new layouts
found end to end by `--fm-dataset`."""

from __future__ import annotations

import json
import tomllib

import pytest
from fakes import REPO, make_visa
from label_exports import SceneImage, square, write_coco, write_images
from toy_fmtest import make_suite

from fmtest.config.suite import parse_config
from fmtest.data.coco import CocoDataset
from fmtest.data.mvtec import MVTecAD
from fmtest.errors import ConfigError


def test_a_named_dataset_runs_its_kind_with_its_own_options():
    cfg = parse_config({"datasets": {"parts": {"uses": "coco", "annotations": "p/coco.json", "images": "p/img"},
                                     "carpets": {"uses": "mvtec", "categories": ["carpet"]}}})
    assert {"parts", "carpets"} <= set(cfg.dataset_names())
    parts = cfg.dataset_class("parts")
    assert issubclass(parts, CocoDataset) and parts.name == "parts"
    assert issubclass(cfg.dataset_class("carpets"), MVTecAD)
    assert cfg.datasets["parts"] == {"annotations": "p/coco.json", "images": "p/img"}
    assert "padim-parts" in cfg.case_ids()


@pytest.mark.parametrize("table,expected", [
    ({"uses": "coc", "annotations": "a", "images": "b"}, r"^\[datasets.parts\] uses: unknown dataset 'coc' "
                                                         r"\(did you mean coco\?\)"),
    ({"uses": "coco", "annotation": "a", "images": "b"}, r"^\[datasets.parts\]: unknown option\(s\) annotation"),
    ({"uses": "coco", "images": "b"}, r"^\[datasets.parts\]: option\(s\) annotations missing"),
    ({"uses": "coco", "class": "x:Y"}, r"^\[datasets.parts\]: set uses .* or class .*, not both"),
])
def test_a_named_dataset_is_checked_when_the_config_loads(table, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_config({"datasets": {"parts": table}})


def test_a_built_in_name_cannot_be_redefined():
    with pytest.raises(ConfigError, match=r"^\[datasets.mvtec\] uses: mvtec is a built-in or installed dataset"):
        parse_config({"datasets": {"mvtec": {"uses": "coco"}}})


def test_uses_may_name_the_users_own_class_defined_later_in_the_file():
    cfg = parse_config({"datasets": {"small": {"uses": "mine", "n_good": 2}, "mine": {"class": "toy_fmtest:Toy"}}})
    assert cfg.dataset_class("small").name == "small" and cfg.datasets["small"] == {"n_good": 2}


def test_a_coco_export_and_visa_run_as_cases(pytester, tmp_path):
    scene = [SceneImage(f"part_{i}.png", [square(4 + i, 6, 8)] if i % 2 else []) for i in range(8)]
    write_images(tmp_path / "parts" / "images", scene)
    write_coco(tmp_path / "parts" / "coco.json", scene)
    make_visa(tmp_path, categories=("candle",))
    suite = make_suite(pytester, f'data_root = "{tmp_path}"', """
[datasets.parts]
uses = "coco"
annotations = "parts/coco.json"
images = "parts/images"
[datasets.visa]
categories = ["candle"]
""")

    def run(dataset, pipeline):
        suite.runpytest("-p", "no:randomly", "--fm-config=fmtest.toml", "--fm-no-cache", "-q",
                        f"--fm-dataset={dataset}", f"--fm-pipeline={pipeline}", "--fm-results=out.json")
        return json.loads((suite.path / "out.json").read_text())["cases"][0]

    parts = run("parts", "toy_threshold")
    assert parts["id"] == "toy_threshold-parts" and parts["outcome"] == "passed"
    assert parts["metrics"]["iou"] == 1.0  # the painted squares, exactly where the export says
    assert parts["metrics"]["n_images"] == 6 and parts["metrics"]["n_defective"] == 4  # 2 of 4 OK images trained on
    visa = run("visa", "toy_empty")  # finds nothing: fails, on VisA's 2 normal and 2 anomalous test images
    assert visa["id"] == "toy_empty-visa" and visa["outcome"] == "failed"
    assert visa["metrics"]["n_images"] == 4 and visa["metrics"]["n_defective"] == 2


def test_the_readme_example_of_a_labelled_dataset_is_a_valid_config():
    readme = (REPO / "README.md").read_text()
    block = readme.split("**Your labelling tool's export**", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = parse_config(tomllib.loads(block))
    assert issubclass(cfg.dataset_class("parts"), CocoDataset)
    assert cfg.datasets["parts"]["defect_classes"] == ["scratch", "dent"]
