"""MVTec AD 2 in its published layout:

```
<root>/mvtec_ad2/<category>/train/good/*.png
<root>/mvtec_ad2/<category>/validation/good/*.png
<root>/mvtec_ad2/<category>/test_public/{good,bad}/*.png
<root>/mvtec_ad2/<category>/test_public/ground_truth/bad/<stem>_mask.png
```

`test_public` is the split with ground truth, so it is the one scored: good images are OK, bad ones
NOK with their masks. The private test sets (`test_private`, `test_private_mixed`) have no ground
truth and are not read. The benchmark lets a method tune on `validation/good` (defect-free), so those
images join the training images (after `train/good`, meta split "validation"); the reference is the
category's first training image. Groups, references and the stratified subsets `n_good` /
`n_defective` are `fmtest.data.categories`'s, as for MVTec AD.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtest.data.categories import (
    CategoryDataset,
    CategorySplit,
    check_category_options,
)
from fmtest.data.io import list_images
from fmtest.data.sample import NOK, OK
from fmtest.errors import DataError

AD2_CATEGORIES = ("can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs", "walnuts")


@dataclass(frozen=True)
class MVTecAD2Options:
    categories: tuple[str, ...] = AD2_CATEGORIES
    n_good: int | None = None  # stratified seeded subset of the OK images scored; None or 0: all
    n_defective: int | None = None  # stratified seeded subset of the defective images scored; None or 0: all
    seed: int = 0
    mask_threshold: int | None = None  # 8-bit level a defect pixel is above; None: 127, refusing non-two-level masks
    empty_nok_masks: str = "error"  # or "exclude": leave defective images with empty masks out of IoU, counted

    def __post_init__(self) -> None:
        check_category_options("mvtec_ad2", self)


class MVTecAD2(CategoryDataset):
    name = "mvtec_ad2"
    title = "MVTec AD 2"
    options_type = MVTecAD2Options

    def category_split(self, category: str) -> CategorySplit:
        train = [self.sample_ref(category, "train", "good", OK, image, None)
                 for image in self.folder_images(category, "train", "good", what="training images")]
        validation = self.folder / category / "validation" / "good"
        if validation.is_dir():
            train += [self.sample_ref(category, "validation", "good", OK, image, None)
                      for image in list_images(validation)]
        good = [self.sample_ref(category, "test_public", "good", OK, image, None)
                for image in self.folder_images(category, "test_public", "good", what="good test images")]
        defective = []
        for image in self.folder_images(category, "test_public", "bad", what="defective test images"):
            mask = self.folder / category / "test_public" / "ground_truth" / "bad" / f"{image.stem}_mask{image.suffix}"
            if not mask.is_file():
                raise DataError(f"mask of defective image {image} not found", mask)
            defective.append(self.sample_ref(category, "test_public", "bad", NOK, image, mask))
        return CategorySplit(train, good, defective)
