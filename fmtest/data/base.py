"""Dataset: the splits a pipeline may learn from (train, reference) and the split it is scored on (test)."""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from fmtest.data.departures import Departure
from fmtest.data.options import parse_options
from fmtest.data.sample import NOK, OK, Sample, SampleSet
from fmtest.errors import ConfigError, DataError

MAX_NAMED_EMPTY_MASKS = 10  # an error about empty masks names this many, then counts the rest


@dataclass(frozen=True)
class Group:
    """Images that share one reference and one fitted model, such as one MVTec AD category.

    A carpet aligned to a wood reference, or a Gaussian fitted on carpet and grid at once, means
    nothing: each group gets its own fitted pipeline, and the case's metrics pool all groups' images.
    """

    name: str
    train: SampleSet
    test: SampleSet
    load_reference: Callable[[], Sample | None]


class Dataset(ABC):
    """A named collection of samples in three roles.

    - `test`: the scored images (OK and NOK).
    - `train`: defect-free images a pipeline may fit on (PaDiM statistics, score thresholds).
    - `reference`: the one defect-free image every test image is aligned to, or None.

    Pipelines see only `train` and `reference` when fitting: thresholds are never tuned on test images.
    Subclasses hand both splits to `__init__`; one that builds them on access overrides the properties.
    """

    name: str = ""
    has_masks: bool = True  # False: labels only, so only classification is scored
    options_type: ClassVar[type | None] = None  # frozen dataclass of `[datasets.<name>]`; None: no options

    def __init__(self, train: SampleSet, test: SampleSet):
        self._train = train
        self._test = test
        self._excluded_from_iou: dict[str, str] = {}  # image id -> its mask's file
        self._empty_masks: list[str] | None = None  # while every defective image is checked: those found empty

    @classmethod
    def read_options(cls, options: Mapping[str, object]) -> object:
        """The dataset's options from its `[datasets.<name>]` table, checked (names, types, ranges).

        Reads no data: the suite config calls it for every dataset table when it loads, so a typo
        fails before any case runs.
        """
        if cls.options_type is None:
            if options:
                raise ConfigError(f"takes no options, got {', '.join(sorted(options))}", f"[datasets.{cls.name}]")
            return None
        return parse_options(cls.options_type, options, cls.name)

    @classmethod
    def departures(cls, options: Mapping[str, object]) -> list[Departure]:
        """How this dataset, with its `[datasets.<name>]` options, departs from the study's (which images
        are scored, how they are annotated); [] when faithful. Reads no data. The default declares none:
        only the study's datasets have a published version to depart from."""
        return []

    @classmethod
    def group_names(cls, options: Mapping[str, object]) -> list[str]:
        """The names `groups()` will give, from the options alone (no data read): one group by default."""
        return [cls.name]

    @classmethod
    @abstractmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> Dataset:
        """Build from the data root (may be None for generated or packaged data) and `[datasets.<name>]`."""

    @property
    def folders(self) -> tuple[Path, ...]:
        """The folders on disk the dataset reads its images and masks from; a symbolic link in one that leaves
        the data root is refused (`fmtest.data.io.refuse_links_leaving`). None for generated or packaged data."""
        return ()

    @property
    def test(self) -> SampleSet:
        return self._test

    @property
    def train(self) -> SampleSet:
        return self._train

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

    @property
    def excluded_from_iou(self) -> list[str]:
        """Defective images left out of IoU because their mask is empty (`empty_nok_masks = "exclude"`),
        among those loaded so far: complete once the test split has been read."""
        return sorted(self.excluded_mask_files)

    @property
    def excluded_mask_files(self) -> dict[str, str]:
        """The images of `excluded_from_iou` with the file (mask or annotation export) that left them empty
        (none for a dataset that builds its splits itself, without `Dataset.__init__`)."""
        return dict(sorted(getattr(self, "_excluded_from_iou", {}).items()))

    def checked_defect_mask(self, mask: np.ndarray, sample_id: str, path: object, empty: str) -> np.ndarray | None:
        """The mask of a defective (NOK) image. An empty one would score a missed defect as IoU 1.0:
        with `empty` = "error" it raises DataError naming the file, and every other defective test image
        whose mask is empty too, so one run finds all of them; with "exclude" the image keeps its label, is
        left out of IoU (mask None) and is listed in `excluded_from_iou`."""
        if mask.any():
            return mask
        if empty == "error":
            if self._empty_masks is not None:  # checking every defective image: collect, do not stop
                self._empty_masks.append(f"{sample_id} ({path})")
                return None
            found = self._all_empty_masks()
            listed = "; ".join(found[:MAX_NAMED_EMPTY_MASKS]) + (
                f"; and {len(found) - MAX_NAMED_EMPTY_MASKS} more" if len(found) > MAX_NAMED_EMPTY_MASKS else "")
            raise DataError(f"defective (NOK) image {sample_id} has an empty mask, which would score a missed defect "
                            f"as IoU 1.0; {len(found)} of the {self.test.n_defective} defective test images have one: "
                            f"{listed}; fix the masks, or set empty_nok_masks = \"exclude\" in "
                            f"[datasets.{self.name}] to leave such images out of IoU", path)
        self._excluded_from_iou[sample_id] = str(path)
        return None

    def _all_empty_masks(self) -> list[str]:
        """Every defective test image whose mask is empty, `id (file)` each: read once, on the error path only."""
        self._empty_masks = []
        try:
            for ref in self.test.refs:
                if ref.label == NOK:
                    with contextlib.suppress(DataError):  # another problem with that image is told when it loads
                        ref.load()  # not through the memo: nothing read here is kept
        finally:
            found, self._empty_masks = self._empty_masks, None
        return found

    def groups(self) -> list[Group]:
        """One group by default; datasets of several products (MVTec categories) override this."""
        return [Group(self.name, self.train, self.test, lambda: self.reference)]

    def describe(self) -> str:
        t = self.test
        return f"{self.name}: {len(t)} test images ({t.n_defective} defective), {len(self.train)} train"
