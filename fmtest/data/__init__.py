"""Datasets by name. Each module defines one Dataset subclass; `open_dataset` builds one from config."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from fmtest.data.base import Dataset, Group
from fmtest.data.sample import LABELS, NOK, OK, Label, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError

# name -> "module:Class"; imported on use so a dataset's dependencies load only when it runs.
DATASETS: dict[str, str] = {
    "satsim": "fmtest.data.satsim:SatSim",
    "elpv": "fmtest.data.elpv:Elpv",
    "mvtec": "fmtest.data.mvtec:MVTecAD",
    "oxford_pets": "fmtest.data.oxford_pets:OxfordPets",
    "industrialsat": "fmtest.data.folder:IndustrialSAT",
    "folder": "fmtest.data.folder:FolderDataset",
}


def dataset_class(name: str) -> type[Dataset]:
    try:
        module, cls = DATASETS[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
    return getattr(importlib.import_module(module), cls)


def open_dataset(name: str, root: Path | None, options: Mapping[str, object] | None = None) -> Dataset:
    return dataset_class(name).from_config(root, dict(options or {}))


__all__ = [
    "DATASETS", "Dataset", "Group", "LABELS", "Label", "NOK", "OK", "Sample", "SampleRef", "SampleSet",
    "dataset_class", "open_dataset",
]
