"""Ground truth from labelling tools: COCO JSON, CVAT for images 1.1 XML and Label Studio JSON, written as
the tools export them (tests/label_exports.py), read back as datasets, and every bad file refused with one
line naming the file and the annotation."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from label_exports import (
    HEIGHT,
    WIDTH,
    Defect,
    SceneImage,
    blob,
    brush_rle,
    brush_values,
    ls_result,
    ls_task,
    mask_of,
    square,
    write_coco,
    write_cvat,
    write_images,
    write_label_studio,
)
from PIL import Image

from fmtest.data import open_dataset
from fmtest.data.label_studio import decode_brush_rle
from fmtest.errors import ConfigError, DataError, Unavailable

SCENE = [
    SceneImage("part_00.png"),
    SceneImage("part_01.png", [square(10, 5, 10)]),
    SceneImage("part_02.png"),
    SceneImage("part_03.png", [blob(20, 20), square(2, 2, 4, "dent")]),
    SceneImage("part_04.png", [Defect("fiducial", "box", (30, 30, 40, 36))]),  # a class that is no defect
    SceneImage("part_05.png", [Defect("scratch", "box", (5, 25, 17, 31))]),
    SceneImage("part_06.png"),
    SceneImage("part_07.png"),
]
DEFECTS = ["scratch", "void", "dent"]


def scene_folder(tmp_path, scene=SCENE):
    write_images(tmp_path / "parts" / "images", scene)
    return tmp_path


def options(export, **extra):
    return {"annotations": f"parts/{export}", "images": "parts/images", **extra}


def samples_by_id(ds):
    return {s.id: s for s in [*ds.train, *ds.test]}


def assert_reads_back(ds, scene=SCENE, defects=DEFECTS):
    """Every image is there once, NOK exactly when it has a defect-class annotation, its mask their union."""
    samples = samples_by_id(ds)
    assert sorted(samples) == sorted(image.name for image in scene)
    for image in scene:
        expected = mask_of(image.defects, defects)
        sample = samples[image.name]
        assert sample.label == ("NOK" if expected.any() else "OK"), image.name
        np.testing.assert_array_equal(sample.mask, expected, err_msg=image.name)
    assert all(s.label == "OK" for s in ds.train)


# --------------------------------------------------------------------------- COCO


@pytest.mark.parametrize("rle", ["uncompressed", "compressed"])
def test_coco_polygons_rle_and_bbox_only_annotations_read_back(tmp_path, rle):
    root = scene_folder(tmp_path)
    write_coco(root / "parts" / "instances_default.json", SCENE, rle=rle)
    ds = open_dataset("coco", root, options("instances_default.json", defect_classes=DEFECTS))
    assert_reads_back(ds)
    nok = samples_by_id(ds)["part_03.png"]
    assert nok.meta["defect_type"] == "dent+void" and nok.meta["split"] == "test"
    assert nok.meta["annotation_file"].endswith("instances_default.json")


def test_every_class_is_a_defect_unless_defect_classes_says_otherwise(tmp_path):
    root = scene_folder(tmp_path)
    write_coco(root / "parts" / "coco.json", SCENE)
    everything = open_dataset("coco", root, options("coco.json"))
    assert samples_by_id(everything)["part_04.png"].label == "NOK"  # the fiducial box counts
    only_voids = open_dataset("coco", root, options("coco.json", defect_classes=["void"]))
    assert_reads_back(only_voids, defects=["void"])


def test_one_export_is_split_by_train_fraction_and_seed(tmp_path):
    root = scene_folder(tmp_path)
    write_coco(root / "parts" / "coco.json", SCENE)
    ds = open_dataset("coco", root, options("coco.json", defect_classes=DEFECTS, train_fraction=0.4, seed=3))
    assert len(ds.train) == 2 and len(ds.test) == 6 and ds.test.n_defective == 3  # 5 OK images: 2 trained on
    assert set(ds.train.ids).isdisjoint(ds.test.ids)
    assert ds.reference.id == ds.train.ids[0]
    assert {s.meta["split"] for s in ds.train} == {"train"} and {s.meta["split"] for s in ds.test} == {"test"}
    again = open_dataset("coco", root, options("coco.json", defect_classes=DEFECTS, train_fraction=0.4, seed=3))
    assert again.train.ids == ds.train.ids
    draws = {tuple(open_dataset("coco", root, options("coco.json", train_fraction=0.4, seed=s)).train.ids)
             for s in range(8)}
    assert len(draws) > 1
    default = open_dataset("coco", root, options("coco.json", defect_classes=DEFECTS))
    assert len(default.train) == round(5 * 0.5)


def test_a_named_reference_leaves_both_splits(tmp_path):
    root = scene_folder(tmp_path)
    write_coco(root / "parts" / "coco.json", SCENE)
    ds = open_dataset("coco", root, options("coco.json", defect_classes=DEFECTS, reference="part_06.png"))
    assert ds.reference.id == "part_06.png" and ds.reference.label == "OK"
    assert "part_06.png" not in ds.train.ids + ds.test.ids
    with pytest.raises(DataError, match=r"option reference names part_01.png, which image id 2 .*marks defective"):
        open_dataset("coco", root, options("coco.json", reference="part_01.png"))


def test_one_export_per_split(tmp_path):
    root = scene_folder(tmp_path)
    write_coco(root / "parts" / "train.json", [SCENE[0], SCENE[2]])
    write_coco(root / "parts" / "test.json", [SCENE[1], SCENE[3], SCENE[6]])
    ds = open_dataset("coco", root, {"annotations": {"train": "parts/train.json", "test": "parts/test.json"},
                                     "images": "parts/images"})
    assert ds.train.ids == ["part_00.png", "part_02.png"]
    assert ds.test.ids == ["part_01.png", "part_03.png", "part_06.png"] and ds.test.n_defective == 2
    write_coco(root / "parts" / "train.json", [SCENE[0], SCENE[1]])
    with pytest.raises(DataError, match=r"train\.json: image id 2 \(part_01.png\) is in the train "
                                        r"export but has defect annotation 1 \(scratch\)"):
        open_dataset("coco", root, {"annotations": {"train": "parts/train.json", "test": "parts/test.json"},
                                    "images": "parts/images"})
    write_coco(root / "parts" / "train.json", [SCENE[0], SCENE[6]])
    with pytest.raises(DataError, match=r"test\.json: image id 3 \(part_06.png\) and image id 2 \(part_06.png\) of "
                                        r".*train\.json both name image part_06.png"):
        open_dataset("coco", root, {"annotations": {"train": "parts/train.json", "test": "parts/test.json"},
                                    "images": "parts/images"})


def narrower_rle():
    """pycocotools' compressed counts of a 47-pixel-wide mask: well-formed, one column short of the image."""
    from pycocotools import mask as coco_mask

    return coco_mask.encode(np.asfortranarray(blob(20, 20).pixels()[:, :-1].astype(np.uint8)))["counts"].decode()


def bad_coco(tmp_path, edit):
    root = scene_folder(tmp_path)
    data = write_coco(root / "parts" / "coco.json", SCENE, rle="compressed")
    edit(data)
    (root / "parts" / "coco.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["images"][1].update(file_name="lost.png"),
     r"coco\.json: image id 2 \(lost\.png\): image 'lost\.png' not found in .*images"),
    (lambda d: d["annotations"][0].update(segmentation=[[60, 50, 80, 50, 80, 70, 60, 70]]),
     r"coco\.json: image id 2 \(part_01.png\), annotation 1 \(scratch\): lies wholly outside its 48x40 image"),
    (lambda d: d["annotations"][1]["segmentation"].update(size=[HEIGHT, WIDTH + 1]),
     r"coco\.json: image id 4 \(part_03.png\), annotation 2 \(void\): its RLE is 49x40 .* but the image is 48x40"),
    (lambda d: d["annotations"][1].update(segmentation={"counts": [100, 20, 30], "size": [HEIGHT, WIDTH]}),
     r"annotation 2 \(void\): its RLE runs cover 150 pixels but the 48x40 image has 1920"),
    (lambda d: d["annotations"][1]["segmentation"].update(counts=narrower_rle()),
     r"annotation 2 \(void\): its RLE runs cover 1880 pixels but the 48x40 image has 1920"),
    (lambda d: d["annotations"][1]["segmentation"].update(counts="P"), r"annotation 2 \(void\): its RLE counts are "
                                                                        r"malformed"),
    (lambda d: d["annotations"][0].update(segmentation=[[10, 5, 20, 5]]),
     r"annotation 1 \(scratch\): a polygon needs at least 3 points"),
    (lambda d: d["annotations"][0].update(category_id=99), r"coco\.json: annotation 1: category_id 99 is not among"),
    (lambda d: d["annotations"][0].update(image_id=99), r"coco\.json: annotation 1: image_id 99 is not among"),
    (lambda d: d["images"].append(dict(d["images"][0], id=99)),
     r"coco\.json: image id 99 \(part_00.png\) and image id 1 \(part_00.png\) both name image part_00.png"),
    (lambda d: d.pop("annotations"), r"coco\.json: not a COCO export"),
])
def test_bad_coco_exports_name_the_file_and_the_annotation(tmp_path, edit, match):
    root = bad_coco(tmp_path, edit)
    with pytest.raises(DataError, match=match):
        open_dataset("coco", root, options("coco.json"))


def test_unknown_defect_class_is_named_with_the_classes_the_export_has(tmp_path):
    root = scene_folder(tmp_path)
    write_coco(root / "parts" / "coco.json", SCENE)
    with pytest.raises(ConfigError, match=r"\[datasets\.coco\]: option defect_classes: unknown class in .*coco\.json "
                                          r"'scrach' \(did you mean scratch\?\); known: dent, fiducial, scratch, void"):
        open_dataset("coco", root, options("coco.json", defect_classes=["void", "scrach"]))


def test_file_names_are_found_through_the_exports_folders_and_ambiguity_is_refused(tmp_path):
    scene = [SceneImage("lotA/001.png", [square(4, 4, 6)]), SceneImage("lotB/001.png"), SceneImage("lotB/002.png")]
    root = scene_folder(tmp_path, scene)
    exported = [SceneImage(f"/mnt/share/task_7/{i.name}", i.defects) for i in scene]  # the tool's own prefix
    write_coco(root / "parts" / "coco.json", exported)
    ds = open_dataset("coco", root, options("coco.json"))
    assert samples_by_id(ds)["lotA/001.png"].label == "NOK" and samples_by_id(ds)["lotB/001.png"].label == "OK"
    write_coco(root / "parts" / "coco.json", [SceneImage("001.png", [square(4, 4, 6)])])  # which 001.png?
    with pytest.raises(DataError, match=r"image id 1 \(001.png\): image '001.png' matches 2 files in .*: "
                                        r"lotA/001.png, lotB/001.png"):
        open_dataset("coco", root, options("coco.json"))


def test_an_image_file_of_another_size_than_declared_is_named_when_read(tmp_path):
    root = scene_folder(tmp_path)
    write_coco(root / "parts" / "coco.json", SCENE)
    Image.fromarray(np.zeros((HEIGHT * 2, WIDTH * 2), np.uint8)).save(root / "parts" / "images" / "part_01.png")
    ds = open_dataset("coco", root, options("coco.json", defect_classes=DEFECTS))
    with pytest.raises(DataError, match=r"coco\.json: image id 2 \(part_01.png\) declares the image 48x40 but "
                                        r".*part_01\.png is 96x80"):
        samples_by_id(ds)


def test_a_defect_that_draws_no_pixel_is_an_error_or_excluded(tmp_path):
    scene = [SceneImage("a.png", [Defect("scratch", "polygon", [(5.2, 5.2), (5.4, 5.2), (5.3, 5.4)])]),
             SceneImage("b.png")]
    root = scene_folder(tmp_path, scene)
    write_coco(root / "parts" / "coco.json", scene)
    ds = open_dataset("coco", root, options("coco.json", train_fraction=0.0))
    with pytest.raises(DataError, match=r"coco\.json: defective \(NOK\) image a.png has an empty mask"):
        ds.test[0]
    ds = open_dataset("coco", root, options("coco.json", train_fraction=0.0, empty_nok_masks="exclude"))
    assert ds.test[0].mask is None and ds.excluded_from_iou == ["a.png"]


@pytest.mark.parametrize("given,match", [
    ({"images": "parts/images"}, r"\[datasets\.coco\]: option\(s\) annotations missing"),
    ({"annotations": {"train": "a.json"}, "images": "x"}, r"\[datasets\.coco\]: option annotations: a table of one "
                                                          r"export per split takes train and test \(test required\)"),
    ({"annotations": {"test": "a.json"}, "images": "x", "train_fraction": 0.3},
     r"option train_fraction splits one export"),
    ({"annotations": "a.json", "images": "x", "train_fraction": 1.0}, r"train_fraction must lie in \[0, 1\)"),
    ({"annotations": ["a.json"], "images": "x"}, r"option annotations must be a string or a table of strings"),
])
def test_options_are_checked(tmp_path, given, match):
    with pytest.raises(ConfigError, match=match):
        open_dataset("coco", tmp_path, given)


def test_paths_are_relative_to_the_data_root(tmp_path):
    root = scene_folder(tmp_path)
    write_coco(root / "parts" / "coco.json", SCENE)
    with pytest.raises(ConfigError, match=r"option images = 'parts/images' is relative to the data root"):
        open_dataset("coco", None, options("coco.json"))
    absolute = {"annotations": str(root / "parts" / "coco.json"), "images": str(root / "parts" / "images")}
    assert len(open_dataset("coco", None, absolute).test) > 0


def test_without_pycocotools_the_dataset_names_the_extra(tmp_path, monkeypatch):
    import fmtest.util.extras

    monkeypatch.setattr(fmtest.util.extras, "installed", lambda module: module != "pycocotools")
    with pytest.raises(Unavailable, match=r"dataset coco needs pycocotools, not installed: pip install "
                                          r"'fmtest\[labels\]'"):
        open_dataset("coco", tmp_path, options("coco.json"))


# --------------------------------------------------------------------------- CVAT


CVAT_SCENE = [*SCENE, SceneImage("part_08.png", [Defect("scratch", "box", (1, 1, 47, 3)), blob(0, 0, "void")])]


def test_cvat_polygons_boxes_and_masks_read_back(tmp_path):
    root = scene_folder(tmp_path, CVAT_SCENE)
    write_cvat(root / "parts" / "annotations.xml", CVAT_SCENE, prefix="task_7/")
    ds = open_dataset("cvat", root, options("annotations.xml", defect_classes=DEFECTS))
    assert_reads_back(ds, CVAT_SCENE)


def test_cvat_rotated_boxes_and_ellipses_are_drawn_as_cvat_draws_them(tmp_path):
    root = scene_folder(tmp_path, [SceneImage("a.png"), SceneImage("b.png")])
    xml = write_cvat(root / "parts" / "annotations.xml", [SceneImage("a.png"), SceneImage("b.png")])
    xml = xml.replace('<image id="0" name="a.png" width="48" height="40">',
                      '<image id="0" name="a.png" width="48" height="40">\n'
                      '    <box label="scratch" source="manual" occluded="0" xtl="14.00" ytl="18.00" xbr="34.00" '
                      'ybr="22.00" rotation="90.00" z_order="0">\n    </box>\n'
                      '    <ellipse label="void" source="manual" occluded="0" cx="10.00" cy="10.00" rx="6.00" '
                      'ry="3.00" z_order="0">\n    </ellipse>')
    (root / "parts" / "annotations.xml").write_text(xml)
    mask = samples_by_id(open_dataset("cvat", root, options("annotations.xml")))["a.png"].mask
    ys, xs = np.nonzero(mask[:, 20:])  # the box, turned upright about its centre (24, 20): x 22..26, y 10..30
    assert (xs.min() + 20, xs.max() + 20, ys.min(), ys.max()) == (22, 25, 10, 29)
    ellipse = mask[:, :20]
    assert ellipse[10, 4:16].all() and not ellipse[10, 3] and not ellipse[10, 17] and ellipse[7:13, 10].all()


@pytest.mark.parametrize("edit,match", [
    (lambda x: x.replace('<mask label="void" source="manual" occluded="0" rle="', '<mask label="void" source="manual" '
                         'occluded="0" rle="1, '),
     r"annotations\.xml: image 'part_03.png', mask #1 \(void\): its RLE runs cover 43 pixels but its 7x6 box has 42"),
    (lambda x: x.replace('left="20" top="20" width="7"', 'left="45" top="20" width="7"'),
     r"image 'part_03.png', mask #1 \(void\): its box \(left 45, top 20, 7x6\) does not fit in the 48x40 image"),
    (lambda x: x.replace('points="10.00,5.00;20.00,5.00;20.00,15.00;10.00,15.00"',
                         'points="100.00,50.00;120.00,50.00;120.00,60.00"'),
     r"image 'part_01.png', polygon #1 \(scratch\): lies wholly outside its 48x40 image"),
    (lambda x: x.replace('name="part_05.png"', 'name="gone.png"'), r"image 'gone.png': image 'gone.png' not found"),
    (lambda x: x.replace("<polygon", "<polyline").replace("</polygon>", "</polyline>"),
     r"image 'part_01.png', polyline #1 \(scratch\): a polyline marks no area"),
    (lambda x: x.replace("</annotations>", '<track id="0" label="scratch"></track></annotations>'),
     r"a CVAT for video export"),
    (lambda x: x.replace("</annotations>", "<annotations>"), r"annotations\.xml:\d+: not XML"),
])
def test_bad_cvat_exports_name_the_file_and_the_shape(tmp_path, edit, match):
    root = scene_folder(tmp_path)
    path = root / "parts" / "annotations.xml"
    path.write_text(edit(write_cvat(path, SCENE)))
    with pytest.raises(DataError, match=match):
        open_dataset("cvat", root, options("annotations.xml", defect_classes=DEFECTS))


def test_a_polyline_of_a_class_that_is_no_defect_is_fine(tmp_path):
    scene = [SceneImage("a.png", [Defect("guide", "polyline", [(1, 1), (20, 20)]), square(4, 4, 5)])]
    root = scene_folder(tmp_path, scene)
    write_cvat(root / "parts" / "annotations.xml", scene)
    ds = open_dataset("cvat", root, options("annotations.xml", defect_classes=["scratch"], train_fraction=0.0))
    assert ds.test[0].label == "NOK"


# --------------------------------------------------------------------------- Label Studio


def test_brush_rle_decodes_label_studio_converters_own_test_vector():
    # label-studio-converter's tests/test_brush.py encodes this array to these bytes with brush.encode_rle
    encoded = [0, 0, 0, 18, 57, 27, 252, 96, 32, 1, 0, 6, 0, 40, 0, 192, 3, 128, 17, 56, 32]
    assert decode_brush_rle(encoded).tolist() == [1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 4, 4, 4, 4, 4, 4, 4, 4]
    values = np.random.default_rng(0).integers(0, 3, 500).repeat(np.random.default_rng(1).integers(1, 40, 500))
    assert decode_brush_rle(brush_rle(values)).tolist() == values.tolist()
    long_run = np.full(70_000, 255)  # longer than one 16-bit run
    assert decode_brush_rle(brush_rle(long_run)).tolist() == long_run.tolist()


def test_label_studio_polygons_rectangles_and_brushes_read_back(tmp_path):
    root = scene_folder(tmp_path)
    tasks = write_label_studio(root / "parts" / "export.json", SCENE)
    tasks[0]["annotations"][0]["result"].append(  # an image-level choice is not a region
        {"value": {"choices": ["NOK"]}, "id": "c1", "from_name": "verdict", "to_name": "image", "type": "choices"})
    (root / "parts" / "export.json").write_text(json.dumps(tasks))
    ds = open_dataset("label_studio", root, options("export.json", defect_classes=DEFECTS))
    assert_reads_back(ds)  # found as part_03.png though uploaded as 1a2b3c44-part_03.png


def test_label_studio_upload_names_are_found_as_uploaded_too(tmp_path):
    scene = [SceneImage("1a2b3c41-part_00.png", [square(3, 3, 5)]), SceneImage("1a2b3c42-part_01.png")]
    root = scene_folder(tmp_path, scene)  # images copied from Label Studio's media/upload folder
    write_label_studio(root / "parts" / "export.json", [SceneImage("part_00.png", scene[0].defects),
                                                        SceneImage("part_01.png")])
    ds = open_dataset("label_studio", root, options("export.json", train_fraction=0.0))
    assert ds.test.ids == ["1a2b3c41-part_00.png", "1a2b3c42-part_01.png"] and ds.test.n_defective == 1


def test_brush_alpha_marks_the_defect_not_the_colour(tmp_path):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[10:14, 30:40] = True
    scene = [SceneImage("a.png", [Defect("void", "mask", mask)])]
    root = scene_folder(tmp_path, scene)
    tasks = write_label_studio(root / "parts" / "export.json", scene)
    value = tasks[0]["annotations"][0]["result"][0]["value"]
    value["rle"] = brush_rle(brush_values(mask, colour=(200, 200, 200)))  # colour everywhere, alpha on the defect
    (root / "parts" / "export.json").write_text(json.dumps(tasks))
    ds = open_dataset("label_studio", root, options("export.json", train_fraction=0.0))
    np.testing.assert_array_equal(ds.test[0].mask, mask)


def test_label_studio_ground_truth_and_unlabelled_tasks(tmp_path):
    scene = [SceneImage("a.png"), SceneImage("b.png"), SceneImage("c.png")]
    root = scene_folder(tmp_path, scene)
    defect = ls_result(square(2, 2, 6), "r1")
    first = ls_task(1, "1a2b3c41-a.png", [])
    first["annotations"].append(dict(first["annotations"][0], id=99, result=[defect], ground_truth=True))
    second = ls_task(2, "1a2b3c42-b.png", [defect])
    second["annotations"].append(dict(second["annotations"][0], id=98, result=[], was_cancelled=True))
    unlabelled = ls_task(3, "1a2b3c43-c.png", None)
    (root / "parts" / "export.json").write_text(json.dumps([first, second, unlabelled]))
    ds = open_dataset("label_studio", root, options("export.json", train_fraction=0.0))
    assert ds.test.ids == ["a.png", "b.png"] and ds.test.labels == ["NOK", "NOK"]
    assert ds.describe().endswith("1 unlabelled entries left out")
    first["annotations"][1]["ground_truth"] = False
    (root / "parts" / "export.json").write_text(json.dumps([first, second, unlabelled]))
    with pytest.raises(DataError, match=r"export\.json: task 1: 2 annotations \(10, 99\) and none is the one ground "
                                        r"truth; mark one as ground truth in Label Studio"):
        open_dataset("label_studio", root, options("export.json"))


@pytest.mark.parametrize("edit,match", [
    (lambda r: r["value"].update(rle=brush_rle(brush_values(np.ones((HEIGHT, WIDTH + 1), bool))), ),
     r"task 4, annotation 40, result 'r4x0' \(void\): its brush RLE holds 7840 values but a 48x40 RGBA image has 7680"),
    (lambda r: r.update(original_width=WIDTH * 2),
     r"task 4: annotation 40, result 'r4x1' is on a 48x40 image, another result on a 96x40 one"),
    (lambda r: r.update(image_rotation=90), r"task 4, annotation 40, result 'r4x0': drawn on the image rotated by 90 "
                                            r"degrees"),
    (lambda r: r.update(type="keypointlabels", value={"x": 50, "y": 50, "width": 0.5, "keypointlabels": ["void"]}),
     r"task 4, annotation 40, result 'r4x0' \(void\): a key point marks no area"),
])
def test_bad_label_studio_exports_name_the_file_task_and_result(tmp_path, edit, match):
    root = scene_folder(tmp_path)
    tasks = write_label_studio(root / "parts" / "export.json", SCENE)
    edit(tasks[3]["annotations"][0]["result"][0])  # part_03.png's brushed void
    (root / "parts" / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(DataError, match=r"export\.json: " + f"({match})"):
        open_dataset("label_studio", root, options("export.json", defect_classes=DEFECTS))


def test_label_studio_missing_image_and_polygon_outside(tmp_path):
    root = scene_folder(tmp_path)
    tasks = write_label_studio(root / "parts" / "export.json", SCENE)
    tasks[1]["annotations"][0]["result"][0]["value"]["points"] = [[120, 120], [150, 120], [150, 150]]
    (root / "parts" / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(DataError, match=re.escape("task 2, annotation 20, result 'r2x0' (scratch): lies wholly "
                                                  "outside its 48x40")):
        open_dataset("label_studio", root, options("export.json"))
    tasks[1]["data"]["image"] = "/data/upload/3/deadbeef-missing.png"
    (root / "parts" / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(DataError, match=r"task 2: image '/data/upload/3/deadbeef-missing.png' not found"):
        open_dataset("label_studio", root, options("export.json"))
