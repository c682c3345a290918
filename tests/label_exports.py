"""Labelling-tool exports written as the tools write them, for the coco, cvat and label_studio datasets.

- COCO instances JSON as CVAT's "COCO 1.0" export and pycocotools write it (polygons, `iscrowd` RLE
  uncompressed and compressed, bbox-only annotations).
- CVAT for images 1.1 XML as CVAT's XML dumper writes it (coordinates with 2 decimals, mask RLE as
  "n1, n2, ..." row-major over the mask's box, background first).
- Label Studio's JSON export (Export -> JSON): tasks with annotations, region values in percent of
  original_width/height, brush masks in Label Studio's bit-packed RLE of the RGBA image (word size 8,
  run-length widths 3, 4, 8, 16, the widths label-studio-converter's encoder uses).

The encoders here are written from the format descriptions, independently of fmtest's decoders.
Every scene image is dark with its defects painted bright, so `toy_threshold` (pixels > 0.6) finds
exactly the annotated pixels.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

WIDTH, HEIGHT = 48, 40


@dataclass
class Defect:
    """One annotation: `kind` polygon (points in pixels), box (x0, y0, x1, y1) or mask (bool HxW)."""

    label: str
    kind: str
    data: object

    def pixels(self) -> np.ndarray:
        """The pixels the annotation covers, drawn independently of fmtest (PIL for polygons and boxes,
        whose pixel i spans [i, i + 1): a pixel is in when its centre is)."""
        if self.kind == "mask":
            return np.asarray(self.data, bool)
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
        if self.kind == "box":
            x0, y0, x1, y1 = self.data
            return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        from matplotlib.path import Path as Polygon

        inside = Polygon(np.asarray(self.data, float)).contains_points(np.stack([xs.ravel(), ys.ravel()], 1))
        return inside.reshape(HEIGHT, WIDTH)


@dataclass
class SceneImage:
    name: str  # file name in the images folder (may include a sub-folder)
    defects: list[Defect] = field(default_factory=list)


def mask_of(defects: list[Defect], labels=None) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    for d in defects:
        if labels is None or d.label in labels:
            mask |= d.pixels()
    return mask


def write_images(folder: Path, scene: list[SceneImage]) -> None:
    """Dark noisy parts, each annotated area painted bright."""
    for i, image in enumerate(scene):
        rng = np.random.default_rng(i)
        pixels = 0.2 + 0.03 * rng.standard_normal((HEIGHT, WIDTH))
        pixels[mask_of(image.defects)] = 0.9
        path = folder / image.name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(path)


def square(x, y, size, label="scratch") -> Defect:
    return Defect(label, "polygon", [(x, y), (x + size, y), (x + size, y + size), (x, y + size)])


def blob(x, y, label="void") -> Defect:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y:y + 5, x:x + 7] = True
    mask[y + 5, x + 2] = True
    return Defect(label, "mask", mask)


# --------------------------------------------------------------------------- COCO


def write_coco(path: Path, scene: list[SceneImage], rle: str = "uncompressed") -> dict:
    """COCO instances JSON; masks as `iscrowd` RLE, uncompressed (`counts` a list, as CVAT writes) or compressed."""
    labels = sorted({d.label for image in scene for d in image.defects} | {"scratch", "void", "dent"})
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(labels)]
    cat = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for image_id, image in enumerate(scene, start=1):
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT, "file_name": image.name, "license": 0,
                       "flickr_url": "", "coco_url": "", "date_captured": 0})
        for d in image.defects:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat[d.label],
                   "attributes": {"occluded": False}}
            if d.kind == "polygon":
                flat = [float(v) for point in d.data for v in point]
                xs, ys = flat[0::2], flat[1::2]
                ann.update(segmentation=[flat], iscrowd=0,
                           bbox=[min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)])
            elif d.kind == "box":
                x0, y0, x1, y1 = d.data
                ann.update(segmentation=[], iscrowd=0, bbox=[x0, y0, x1 - x0, y1 - y0])
            else:
                encoded = coco_mask.encode(np.asfortranarray(d.pixels().astype(np.uint8)))
                if rle == "uncompressed":
                    segmentation = {"counts": column_major_runs(d.pixels()), "size": [HEIGHT, WIDTH]}
                else:
                    segmentation = {"counts": encoded["counts"].decode("ascii"), "size": [HEIGHT, WIDTH]}
                ann.update(segmentation=segmentation, iscrowd=1, bbox=coco_mask.toBbox(encoded).tolist())
            ann["area"] = float(d.pixels().sum())
            annotations.append(ann)
    data = {"licenses": [{"name": "", "id": 0, "url": ""}],
            "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
            "categories": categories, "images": images, "annotations": annotations}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


def column_major_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: runs down the columns, starting with background (0 when the first pixel is set)."""
    flat = mask.ravel(order="F")
    runs = [len(list(g)) for _, g in itertools.groupby(flat)]
    return [0, *runs] if flat[0] else runs


# --------------------------------------------------------------------------- CVAT


def write_cvat(path: Path, scene: list[SceneImage], prefix: str = "") -> str:
    """CVAT for images 1.1 XML of one task; image names carry `prefix` (a task's folder)."""
    labels = sorted({d.label for image in scene for d in image.defects} | {"scratch", "void", "dent"})
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>", "  <meta>",
             "    <task>", "      <id>7</id>", "      <name>parts</name>", f"      <size>{len(scene)}</size>",
             "      <mode>annotation</mode>", "      <overlap>0</overlap>", "      <labels>"]
    for name in labels:
        lines += ["        <label>", f"          <name>{name}</name>", "          <color>#fa3253</color>",
                  "          <type>any</type>", "          <attributes>", "          </attributes>", "        </label>"]
    lines += ["      </labels>", "    </task>", "    <dumped>2026-01-05 10:00:00.000000+00:00</dumped>", "  </meta>"]
    for image_id, image in enumerate(scene):
        lines.append(f'  <image id="{image_id}" name="{prefix}{image.name}" width="{WIDTH}" height="{HEIGHT}">')
        for d in image.defects:
            common = f'label="{d.label}" source="manual" occluded="0"'
            if d.kind == "polygon":
                points = ";".join(f"{x:.2f},{y:.2f}" for x, y in d.data)
                lines.append(f'    <polygon {common} points="{points}" z_order="0">')
                lines.append("    </polygon>")
            elif d.kind == "box":
                x0, y0, x1, y1 = d.data
                lines.append(f'    <box {common} xtl="{x0:.2f}" ytl="{y0:.2f}" xbr="{x1:.2f}" ybr="{y1:.2f}" '
                             'z_order="0">')
                lines.append("    </box>")
            elif d.kind == "polyline":
                points = ";".join(f"{x:.2f},{y:.2f}" for x, y in d.data)
                lines.append(f'    <polyline {common} points="{points}" z_order="0">')
                lines.append("    </polyline>")
            else:
                runs, left, top, width, height = cvat_mask_rle(d.pixels())
                lines.append(f'    <mask {common} rle="{", ".join(map(str, runs))}" left="{left}" top="{top}" '
                             f'width="{width}" height="{height}" z_order="0">')
                lines.append("    </mask>")
        lines.append("  </image>")
    lines.append("</annotations>")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def cvat_mask_rle(mask: np.ndarray) -> tuple[list[int], int, int, int, int]:
    """CVAT's mask RLE: the mask's bounding box, row by row, runs alternating from background."""
    ys, xs = np.nonzero(mask)
    top, left, bottom, right = ys.min(), xs.min(), ys.max(), xs.max()
    flat = mask[top:bottom + 1, left:right + 1].ravel()
    runs = [len(list(g)) for _, g in itertools.groupby(flat)]
    return ([0, *runs] if flat[0] else runs), int(left), int(top), int(right - left + 1), int(bottom - top + 1)


# --------------------------------------------------------------------------- Label Studio


def brush_rle(values: np.ndarray, word: int = 8, widths=(3, 4, 8, 16)) -> list[int]:
    """Label Studio's brush RLE (thi.ng rle-pack) of `values`: header (count in 32 bits, word size - 1 in 5,
    four run-length widths - 1 in 4 each), then per run a flag (1 repeated, 0 literal), 2 bits choosing a
    width, the run length - 1 in it, the word(s); single values are written as literal runs of one."""
    out: list[int] = []

    def put(value: int, n: int) -> None:
        out.extend((value >> (n - 1 - k)) & 1 for k in range(n))

    put(len(values), 32)
    put(word - 1, 5)
    for width in widths:
        put(width - 1, 4)
    for value, group in itertools.groupby(int(v) for v in values):
        length = len(list(group))
        while length:
            chunk = min(length, 1 << widths[-1])
            choice = next(i for i, w in enumerate(widths) if chunk - 1 < 1 << w)
            put(0 if chunk == 1 else 1, 1)
            put(choice, 2)
            put(chunk - 1, widths[choice])
            put(value, word)
            length -= chunk
    out += [0] * (-len(out) % 8)
    return np.packbits(np.array(out, np.uint8)).tolist()


def brush_values(mask: np.ndarray, colour=(255, 0, 0)) -> np.ndarray:
    """The RGBA image a brush paints: the label colour everywhere (even unpainted), alpha 255 where painted."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = mask * 255
    return rgba.ravel()


def ls_result(d: Defect, result_id: str) -> dict:
    base = {"original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, "id": result_id,
            "from_name": "label", "to_name": "image", "origin": "manual"}
    if d.kind == "polygon":
        points = [[x / WIDTH * 100, y / HEIGHT * 100] for x, y in d.data]
        return {**base, "value": {"points": points, "closed": True, "polygonlabels": [d.label]},
                "type": "polygonlabels"}
    if d.kind == "box":
        x0, y0, x1, y1 = d.data
        return {**base, "type": "rectanglelabels",
                "value": {"x": x0 / WIDTH * 100, "y": y0 / HEIGHT * 100, "width": (x1 - x0) / WIDTH * 100,
                          "height": (y1 - y0) / HEIGHT * 100, "rotation": 0, "rectanglelabels": [d.label]}}
    if d.kind == "keypoint":
        x, y = d.data
        return {**base, "type": "keypointlabels",
                "value": {"x": x / WIDTH * 100, "y": y / HEIGHT * 100, "width": 0.5, "keypointlabels": [d.label]}}
    return {**base, "type": "brushlabels",
            "value": {"format": "rle", "rle": brush_rle(brush_values(d.pixels())), "brushlabels": [d.label]}}


def ls_task(task_id: int, upload_name: str, results: list[dict] | None, project: int = 3, **annotation) -> dict:
    """A task as Label Studio exports it; `results` None: not annotated yet."""
    annotations = [] if results is None else [{
        "id": task_id * 10, "completed_by": 1, "result": results, "was_cancelled": False, "ground_truth": False,
        "created_at": "2026-01-05T10:00:00.000000Z", "updated_at": "2026-01-05T10:01:00.000000Z", "lead_time": 12.5,
        "prediction": {}, "result_count": 0, "task": task_id, "project": project, "parent_prediction": None,
        "parent_annotation": None, **annotation}]
    return {"id": task_id, "annotations": annotations, "file_upload": upload_name, "drafts": [], "predictions": [],
            "data": {"image": f"/data/upload/{project}/{upload_name}"}, "meta": {},
            "created_at": "2026-01-05T09:00:00.000000Z", "updated_at": "2026-01-05T10:01:00.000000Z",
            "inner_id": task_id, "total_annotations": len(annotations), "cancelled_annotations": 0,
            "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": project, "updated_by": 1, "comment_authors": []}


def write_label_studio(path: Path, scene: list[SceneImage], upload_prefix: str = "1a2b3c4d") -> list[dict]:
    """Label Studio JSON export; every image uploaded as "<8 hex digits>-<name>"."""
    tasks = []
    for task_id, image in enumerate(scene, start=1):
        results = [ls_result(d, f"r{task_id}x{i}") for i, d in enumerate(image.defects)]
        name = Path(image.name).name
        tasks.append(ls_task(task_id, f"{upload_prefix[:7]}{task_id % 10}-{name}", results))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, indent=1))
    return tasks
