"""MVTec AD in its published layout: `<root>/mvtec/<category>/{train/good, test/<defect>, ground_truth/<defect>}`.

The study scores the texture categories (carpet, grid, leather, tile, wood) together and does not
distinguish defect types. Grid is greyscale (HxW), the others RGB. A defective test image must have
`ground_truth/<defect>/<stem>_mask.png`; its absence is reported up front, naming the expected path,
and an empty one when it is read (or, with `empty_nok_masks = "exclude"`, the image is left out of
IoU and counted). `mask_threshold` sets the binarisation level (see `fmtest.data.io.binarise_mask`).
References are per category (`reference_for`): aligning a carpet to a wood reference means nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmtest.data.base import Dataset, Group
from fmtest.data.io import list_images, read_image, read_mask
from fmtest.data.options import check_mask_options, dataset_folder, require_non_negative, seeded_subset
from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError

TEXTURE_CATEGORIES = ("carpet", "grid", "leather", "tile", "wood")


@dataclass(frozen=True)
class MVTecOptions:
    categories: tuple[str, ...] = TEXTURE_CATEGORIES
    n_good: int | None = None  # seeded subset of the defect-free test images; None or 0: all
    n_defective: int | None = None  # seeded subset of the defective test images; None or 0: all
    seed: int = 0
    mask_threshold: int | None = None  # 8-bit level a defect pixel is above; None: 127, refusing non-two-level masks
    empty_nok_masks: str = "error"  # or "exclude": leave defective images with empty masks out of IoU, counted

    def __post_init__(self) -> None:
        require_non_negative("mvtec", n_good=self.n_good, n_defective=self.n_defective)
        check_mask_options("mvtec", self.mask_threshold, self.empty_nok_masks)
        if not self.categories:
            raise ConfigError("option categories must name at least one category", "[datasets.mvtec]")


class MVTecAD(Dataset):
    name = "mvtec"
    options_type = MVTecOptions
    has_masks = True

    def __init__(self, folder: Path, options: MVTecOptions = MVTecOptions()):
        self.folder = folder
        self.options = options
        train, good, defective = [], [], []
        self._train_by_category: dict[str, list[SampleRef]] = {}
        for category in options.categories:
            category_train = self._train_refs(category)
            self._train_by_category[category] = category_train
            train += category_train
            for ref in self._test_refs(category):
                (good if ref.label == OK else defective).append(ref)
        rng = np.random.default_rng(options.seed)
        good = seeded_subset(good, options.n_good, rng, "defect-free test images", folder)
        defective = seeded_subset(defective, options.n_defective, rng, "defective test images", folder)
        super().__init__(train=SampleSet(train), test=SampleSet(good + defective))

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> MVTecAD:
        return cls(dataset_folder(root, "mvtec", cls.name), cls.read_options(options))

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
        return self._train_by_category[category][0].get()

    def _category_dir(self, category: str, *parts: str) -> Path:
        """A folder of the category; a missing category is named as such, before its subfolders."""
        for path in (self.folder / category, self.folder.joinpath(category, *parts)):
            if not path.is_dir():
                raise DataError(f"MVTec AD category {category!r}: folder not found", path)
        return path

    def _train_refs(self, category: str) -> list[SampleRef]:
        folder = self._category_dir(category, "train", "good")
        images = list_images(folder)
        if not images:
            raise DataError(f"MVTec AD category {category!r}: no training images", folder)
        return [self._ref(category, "train", "good", image, None) for image in images]

    def _test_refs(self, category: str) -> list[SampleRef]:
        test_dir = self._category_dir(category, "test")
        refs = []
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            defect = defect_dir.name
            for image in list_images(defect_dir):
                mask = None
                if defect != "good":
                    mask = self.folder / category / "ground_truth" / defect / f"{image.stem}_mask.png"
                    if not mask.is_file():
                        raise DataError(f"mask of defective image {image} not found", mask)
                refs.append(self._ref(category, "test", defect, image, mask))
        if not refs:
            raise DataError(f"MVTec AD category {category!r}: no test images", test_dir)
        return refs

    def _ref(self, category: str, split: str, defect: str, image_path: Path, mask_path: Path | None) -> SampleRef:
        sample_id = f"{category}/{split}/{defect}/{image_path.stem}"
        label = OK if defect == "good" else NOK
        meta = {"category": category, "defect_type": defect, "split": split}

        def load() -> Sample:
            image = read_image(image_path)
            mask = np.zeros(image.shape[:2], bool)
            if mask_path:
                mask = self.checked_defect_mask(read_mask(mask_path, image.shape, self.options.mask_threshold),
                                                sample_id, mask_path, self.options.empty_nok_masks)
            return Sample(id=sample_id, image=image, label=label, mask=mask, meta=meta, source=str(image_path))

        return SampleRef(id=sample_id, label=label, load=load)
