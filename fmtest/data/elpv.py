"""elpv: electroluminescence images of solar cells, from the `elpv-dataset` package (labels only).

2,624 greyscale 300x300 cells, each with an expert's defect probability in {0, 1/3, 2/3, 1} and a
cell type (mono/poly). A probability of 0 is OK and one of at least 0.5 is NOK by default; the
uncertain cells in between are left out (counted in `describe()`), so the labels are not noisy.
The labels are read on construction; each image is decoded from the package's PNG when it is used,
so a run that scores 200 cells reads 200 files, not all 2,624.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmtest.data.base import Dataset
from fmtest.data.io import read_image
from fmtest.data.options import require_non_negative, seeded_subset
from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError

CELL_TYPES = ("mono", "poly")


@dataclass(frozen=True)
class ElpvLabels:
    """labels.csv of the package: one row per cell, in the order load_dataset() returns images."""

    path: Path
    names: list[str]
    probabilities: np.ndarray
    cell_types: list[str]


@functools.cache
def elpv_labels() -> ElpvLabels:
    from elpv_dataset import utils

    path = Path(utils.__file__).parent / "data" / "labels.csv"
    names, probabilities, cell_types = [], [], []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            name, probability, cell_type = parts
            probabilities.append(float(probability))
        except ValueError:
            raise DataError(f"line {line_number}: expected 'path probability type', got {line!r}", path) from None
        names.append(Path(name).name)
        cell_types.append(cell_type)
    return ElpvLabels(path, names, np.array(probabilities), cell_types)


@dataclass(frozen=True)
class ElpvOptions:
    n_train: int = 60
    n_test_good: int | None = 150  # None or 0: every good cell not used for training
    n_test_defective: int | None = 50  # None or 0: every defective cell
    seed: int = 0
    ok_max_probability: float = 0.0
    nok_min_probability: float = 0.5
    cell_type: str | None = None  # mono or poly; None: both

    def __post_init__(self) -> None:
        where = "[datasets.elpv]"
        require_non_negative("elpv", n_train=self.n_train, n_test_good=self.n_test_good,
                             n_test_defective=self.n_test_defective)
        if not 0.0 <= self.ok_max_probability < self.nok_min_probability <= 1.0:
            raise ConfigError("need 0 <= ok_max_probability < nok_min_probability <= 1, got "
                              f"{self.ok_max_probability} and {self.nok_min_probability}", where)
        if self.cell_type is not None and self.cell_type not in CELL_TYPES:
            raise ConfigError(f"option cell_type must be mono or poly, got {self.cell_type!r}", where)


class Elpv(Dataset):
    name = "elpv"
    options_type = ElpvOptions
    has_masks = False

    def __init__(self, options: ElpvOptions = ElpvOptions()):
        self.options = options
        labels = elpv_labels()
        wanted = [i for i, t in enumerate(labels.cell_types) if options.cell_type in (None, t)]
        good = [i for i in wanted if labels.probabilities[i] <= options.ok_max_probability]
        defective = [i for i in wanted if labels.probabilities[i] >= options.nok_min_probability]
        self.n_left_out = len(wanted) - len(good) - len(defective)

        rng = np.random.default_rng(options.seed)
        train = seeded_subset(good, options.n_train, rng, "good cells for training", labels.path) \
            if options.n_train else []
        remaining = sorted(set(good) - set(train))
        test_good = seeded_subset(remaining, options.n_test_good, rng, "remaining good cells", labels.path)
        test_defective = seeded_subset(defective, options.n_test_defective, rng, "defective cells", labels.path)
        test = [self._ref(i, OK) for i in test_good] + [self._ref(i, NOK) for i in test_defective]
        super().__init__(train=SampleSet([self._ref(i, OK) for i in train]), test=SampleSet(test))

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> Elpv:
        return cls(cls.read_options(options))

    def _ref(self, index: int, label: str) -> SampleRef:
        labels = elpv_labels()
        sample_id = f"elpv/{labels.names[index]}"
        meta = {"probability": float(labels.probabilities[index]), "cell_type": labels.cell_types[index]}
        source = str(labels.path.parent / "images" / labels.names[index])

        def load() -> Sample:
            return Sample(id=sample_id, image=read_image(source), label=label, meta=meta, source=source)

        return SampleRef(id=sample_id, label=label, load=load)

    def describe(self) -> str:
        return f"{super().describe()}; {self.n_left_out} uncertain cells left out"
