"""Dataset: the splits a pipeline may learn from (train, reference) and the split it is scored on (test)."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from fmtest.data.sample import OK, Sample, SampleSet


class Dataset(ABC):
    """A named collection of samples in three roles.

    - `test`: the scored images (OK and NOK).
    - `train`: defect-free images a pipeline may fit on (PaDiM statistics, score thresholds).
    - `reference`: the one defect-free image every test image is aligned to, or None.

    Pipelines see only `train` and `reference` when fitting: thresholds are never tuned on test images.
    """

    name: str = ""
    has_masks: bool = True  # False: labels only, so only classification is scored

    @classmethod
    @abstractmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> Dataset:
        """Build from the data root (may be None for generated or packaged data) and `[datasets.<name>]`."""

    @property
    @abstractmethod
    def test(self) -> SampleSet: ...

    @property
    @abstractmethod
    def train(self) -> SampleSet: ...

    @property
    def reference(self) -> Sample | None:
        """Default: the first defect-free training image. Datasets with a designated reference override."""
        good = self.train.filter(lambda r: r.label == OK)
        return good[0] if len(good) else None

    @property
    def fingerprint(self) -> str:
        """Identifies which images (by id and label) make up the test split."""
        h = hashlib.sha256()
        for ref in self.test.refs:
            h.update(f"{ref.id}\t{ref.label}\n".encode())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        t = self.test
        return f"{self.name}: {len(t)} test images ({t.n_defective} defective), {len(self.train)} train"
