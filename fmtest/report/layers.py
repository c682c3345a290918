"""The scoreboard viewer's full-size image layers on disk: one folder per case, next to the report.

`scoreboard.html` gets `scoreboard_files/<case>/`, holding per scored image its layers as PNG
(image, gt, prediction, score_map; `fmtest.imaging.overlay.image_layers`) and once per reference image
that reference. Evaluation calls `LayerStore.add` as each image is scored, so a run of thousands
of images holds one image's layers in memory at a time. The case records `store.manifest()` as
`CaseResult.image_layers`; the HTML report reads only that manifest (folder and file
names), and the browser loads a layer when it is shown.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fmtest.imaging.overlay import LAYER_MAX_SIDE, image_layers
from fmtest.util.fsutil import atomic_write

if TYPE_CHECKING:
    from fmtest.data.sample import Sample
    from fmtest.pipelines.base import Prediction

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def layers_dir(report: str | os.PathLike) -> Path:
    """`out/scoreboard.html` -> `out/scoreboard_files`: where the viewer of that report finds its layers."""
    report = Path(report)
    return report.with_name(f"{report.stem}_files")


class LayerStore:
    """Writes one case's layers as they come and remembers only their file names."""

    def __init__(self, report: str | os.PathLike, case_id: str, *, max_side: int = LAYER_MAX_SIDE):
        root = layers_dir(report)
        self.folder = root / _file_name(case_id)
        shutil.rmtree(self.folder, ignore_errors=True)  # an earlier run's layers must not mix with this one's
        self.folder.mkdir(parents=True)
        self.max_side = max_side
        self._relative = f"{root.name}/{self.folder.name}"  # as the report's page links it
        self._files: dict[str, dict[str, str]] = {}
        self._references: dict[str, str] = {}  # reference sha256 -> its file: written once, shared

    def add(self, sample: Sample, prediction: Prediction, reference: Sample | None = None) -> None:
        """Draw and write the layers of one scored image; `reference` is the defect-free image of its group."""
        layers = image_layers(sample.image, prediction.mask, sample.mask, sample.ignore, prediction.score_map,
                              max_side=self.max_side, image_id=sample.id)
        stem = f"{len(self._files):05d}-{_file_name(sample.id)[-60:]}"  # the index keeps clashing ids apart
        files = {}
        for name, png in layers.items():
            files[name] = f"{stem}.{name}.png"
            atomic_write(self.folder / files[name], png)
        if reference is not None:
            files["reference"] = self._reference_file(reference)
        self._files[sample.id] = files

    def _reference_file(self, reference: Sample) -> str:
        file = self._references.get(reference.sha256)
        if file is None:
            file = f"reference-{reference.sha256[:16]}.png"
            png = image_layers(reference.image, max_side=self.max_side, image_id=reference.id)["image"]
            atomic_write(self.folder / file, png)
            self._references[reference.sha256] = file
        return file

    def manifest(self) -> dict:
        """{"folder": path relative to the report's folder, "images": {image id: {layer: file}}}."""
        return {"folder": self._relative, "images": dict(self._files)}


def _file_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "_"
