"""Datasets by name: the built-in ones, and those other packages install through entry points.

Each module defines one Dataset subclass; `open_dataset` builds one from config. A package adds
its own under the entry-point group `fmtest.datasets`; a suite config names one by path
(`[datasets.<name>] class = "module:Class"`, see `fmtest.config.suite`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fmtest.data.base import Dataset, Group
from fmtest.data.sample import LABELS, NOK, OK, Label, Sample, SampleRef, SampleSet
from fmtest.util.extensions import load_class, named, registered_class, registered_names

ENTRY_POINT_GROUP = "fmtest.datasets"
# name -> "module:Class"; imported on use so a dataset's dependencies load only when it runs.
DATASETS: dict[str, str] = {
    "satsim": "fmtest.data.satsim:SatSim",
    "elpv": "fmtest.data.elpv:Elpv",
    "mvtec": "fmtest.data.mvtec:MVTecAD",
    "mvtec_ad2": "fmtest.data.mvtec_ad2:MVTecAD2",
    "visa": "fmtest.data.visa:VisA",
    "oxford_pets": "fmtest.data.oxford_pets:OxfordPets",
    "industrialsat": "fmtest.data.folder:IndustrialSAT",
    "folder": "fmtest.data.folder:FolderDataset",
    "coco": "fmtest.data.coco:CocoDataset",
    "cvat": "fmtest.data.cvat:CvatDataset",
    "label_studio": "fmtest.data.label_studio:LabelStudioDataset",
}


def known_datasets() -> list[str]:
    """Built-in datasets, then installed ones, which may not take a built-in name."""
    return registered_names(DATASETS, ENTRY_POINT_GROUP, "dataset")


def dataset_class(name: str) -> type[Dataset]:
    """The class of a built-in or installed dataset."""
    return registered_class(name, DATASETS, ENTRY_POINT_GROUP, "dataset", load_dataset)


def load_dataset(spec: str, name: str, what: str) -> type[Dataset]:
    """A user's Dataset subclass ("module:Class"), checked, under the name the suite knows it by."""
    return named(load_class(spec, Dataset, what), name)


def open_dataset(name: str, root: Path | None, options: Mapping[str, object] | None = None) -> Dataset:
    return dataset_class(name).from_config(root, dict(options or {}))


__all__ = [
    "DATASETS",
    "ENTRY_POINT_GROUP",
    "LABELS",
    "NOK",
    "OK",
    "Dataset",
    "Group",
    "Label",
    "Sample",
    "SampleRef",
    "SampleSet",
    "dataset_class",
    "known_datasets",
    "load_dataset",
    "open_dataset",
]
