"""Datasets of several products (categories), each fitted and aligned on its own: MVTec AD, MVTec AD 2, VisA.

A subclass says where a category's images are (`category_split`: training images, good and defective
test images); this base turns that into the dataset: one `Group` per category with its own training
images and reference, the case pooling every category's test images, and the seeded subsets
`n_good` / `n_defective`, stratified by category so a quick run still covers them all. Every draw
is seeded per category (`seed` and the category's name): adding a category does not change the
images drawn for the others.

A subclass's options are a frozen dataclass with at least `categories`, `n_good`, `n_defective`,
`seed` and `empty_nok_masks` (checked by `check_category_options`).
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from fmtest.data.base import Dataset, Group
from fmtest.data.io import list_images, read_image, read_mask
from fmtest.data.options import (
    check_mask_options,
    dataset_folder,
    require_non_negative,
    seeded_subset,
)
from fmtest.data.sample import NOK, Label, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError


@dataclass(frozen=True)
class CategorySplit:
    """One category's images: what a pipeline may fit on, and the good and defective images scored."""

    train: list[SampleRef]
    good: list[SampleRef]
    defective: list[SampleRef]


def check_category_options(dataset: str, options: object) -> None:
    """The options every category dataset shares: counts >= 0, mask handling, at least one category."""
    require_non_negative(dataset, n_good=options.n_good, n_defective=options.n_defective)
    check_mask_options(dataset, getattr(options, "mask_threshold", None), options.empty_nok_masks)
    if not options.categories:
        raise ConfigError("option categories must name at least one category", f"[datasets.{dataset}]")


class CategoryDataset(Dataset):
    """Categories, each with its training images and reference; test images pooled over all of them."""

    folder_name: ClassVar[str | None] = None  # the dataset's folder under the data root; None: its `name`
    title: ClassVar[str]  # the dataset's published name, for messages
    has_masks = True

    def __init__(self, folder: Path, options):
        self.folder = folder
        self.options = options
        self._train_by_category: dict[str, list[SampleRef]] = {}
        good: dict[str, list[SampleRef]] = {}
        defective: dict[str, list[SampleRef]] = {}
        for category in options.categories:
            split = self.category_split(category)
            self._train_by_category[category] = split.train
            good[category], defective[category] = split.good, split.defective
        good = self._stratified(good, options.n_good, "OK images")
        defective = self._stratified(defective, options.n_defective, "defective images")
        categories = options.categories
        super().__init__(train=SampleSet([r for c in categories for r in self._train_by_category[c]]),
                         test=SampleSet([r for c in categories for r in good[c]]
                                        + [r for c in categories for r in defective[c]]))

    @property
    def folders(self) -> tuple[Path, ...]:
        return tuple(self.folder / category for category in self.options.categories)

    @abstractmethod
    def category_split(self, category: str) -> CategorySplit:
        """The category's training, good and defective images; a missing folder or file names itself."""

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> CategoryDataset:
        return cls(dataset_folder(root, cls.folder_name or cls.name, cls.name), cls.read_options(options))

    @classmethod
    def group_names(cls, options: Mapping[str, object]) -> list[str]:
        return list(cls.read_options(options).categories)

    def rng(self, category: str, purpose: str) -> np.random.Generator:
        """The category's own seeded stream: its draws do not depend on which other categories run."""
        return np.random.default_rng([self.options.seed, zlib.crc32(category.encode()),
                                      zlib.crc32(purpose.encode())])

    def _stratified(self, pools: dict[str, list[SampleRef]], n: int | None, what: str) -> dict[str, list[SampleRef]]:
        """`n` images over all categories, each category drawing its share of `n` from its own pool."""
        if not n:
            return pools
        sizes = [len(pools[c]) for c in self.options.categories]
        if n > sum(sizes):
            raise DataError(f"asked for {n} {what} but the chosen categories hold {sum(sizes)}", self.folder)
        shares = proportional_shares(n, sizes)
        return {c: draw(pools[c], share, self.rng(c, what), what, self.folder)
                for c, share in zip(self.options.categories, shares, strict=True)}

    @property
    def reference(self) -> Sample:
        return self.reference_for_category(self.options.categories[0])

    def groups(self) -> list[Group]:
        """One group per category: its own reference, its own training images, its own fitted model."""
        return [
            Group(category, SampleSet(self._train_by_category[category]),
                  self.test.filter(lambda r, c=category: r.id.startswith(f"{c}/")),
                  lambda c=category: self.reference_for_category(c))
            for category in self.options.categories
        ]

    def reference_for(self, sample: Sample) -> Sample:
        """The defect-free reference of the sample's own category."""
        return self.reference_for_category(str(sample.meta["category"]))

    def reference_for_category(self, category: str) -> Sample:
        """The category's first training image (never one of its scored images)."""
        return self._train_by_category[category][0].get()

    def category_dir(self, category: str, *parts: str) -> Path:
        """A folder of the category; a missing category is named as such, before its subfolders."""
        for path in (self.folder / category, self.folder.joinpath(category, *parts)):
            if not path.is_dir():
                raise DataError(f"{self.title} category {category!r}: folder not found", path)
        return path

    def folder_images(self, category: str, *parts: str, what: str) -> list[Path]:
        """The images of a category's folder, sorted; none is an error naming the folder."""
        folder = self.category_dir(category, *parts)
        images = list_images(folder)
        if not images:
            raise DataError(f"{self.title} category {category!r}: no {what}", folder)
        return images

    def read_defect_mask(self, path: Path, shape: tuple[int, ...]) -> np.ndarray:
        """A defective image's stored mask as bool HxW (`mask_threshold` applies; see io.binarise_mask)."""
        return read_mask(path, shape, self.options.mask_threshold)

    def sample_ref(self, category: str, split: str, defect: str, label: Label, image_path: Path,
                   mask_path: Path | None) -> SampleRef:
        """A lazily decoded sample with id `<category>/<split>/<defect>/<stem>`; a NOK image's mask is read
        from `mask_path` and checked (`empty_nok_masks`); a good image's mask is empty."""
        sample_id = f"{category}/{split}/{defect}/{image_path.stem}"
        meta = {"category": category, "defect_type": defect, "split": split,
                **({"mask_file": str(mask_path)} if label == NOK and mask_path else {})}

        def load() -> Sample:
            image = read_image(image_path)
            mask = np.zeros(image.shape[:2], bool)
            if label == NOK:
                mask = self.checked_defect_mask(self.read_defect_mask(mask_path, image.shape), sample_id, mask_path,
                                                self.options.empty_nok_masks)
            return Sample(id=sample_id, image=image, label=label, mask=mask, meta=meta, source=str(image_path))

        return SampleRef(id=sample_id, label=label, load=load)


def draw(pool: list[SampleRef], n: int, rng: np.random.Generator, what: str, where: Path) -> list[SampleRef]:
    """Exactly `n` of the pool, seeded, in their original order (0 means none here, not all)."""
    return seeded_subset(pool, n, rng, what, where) if n else []


def proportional_shares(n: int, sizes: Sequence[int]) -> list[int]:
    """`n` split over pools of `sizes` in proportion (largest remainder; ties go to the earlier pool)."""
    total = sum(sizes)
    exact = [n * size / total for size in sizes]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: n - sum(shares)]:
        shares[i] += 1
    return shares
