"""MVTec AD in its published layout: `<root>/mvtec/<category>/{train/good, test/<defect>, ground_truth/<defect>}`.

The study scores the texture categories (carpet, grid, leather, tile, wood) together and does not
distinguish defect types. Grid is greyscale (HxW), the others RGB. A defective test image must have
`ground_truth/<defect>/<stem>_mask.png`; its absence is reported up front, naming the expected path,
and an empty one when it is read (or, with `empty_nok_masks = "exclude"`, the image is left out of
IoU and counted). `mask_threshold` sets the binarisation level (see `fmtest.data.io.binarise_mask`).
References are per category (`reference_for`): aligning a carpet to a wood reference means nothing.

Which images are scored (`[datasets.mvtec]`):
- `subset = "all"` (default): the published test split, every category's test/good and test/<defect>.
- `subset = "study"`: OUR RECONSTRUCTION of the study's 253 OK + 76 defective images, which the paper
  does not describe. The five categories' test splits hold only 133 good images, so the study's OK
  images must come from train/good. Per category, a seeded 20 % of train/good (rounded) are the OK
  test images and a seeded 20 % of the defective test images the NOK ones: 1266 -> 253 and
  382 -> 76 on the five categories, both counts exact. The drawn OK images leave the training split,
  so they are never fitted on and never the reference; test/good is not used.
- `n_good` / `n_defective`: a seeded subset of those OK / NOK images, stratified by category: each
  category keeps its share of the total (largest remainder), so a quick run still covers them all.
Draws are seeded per category (`seed` and the category name): adding a category does not change
the images drawn for the others. Groups, references and subsets are `fmtest.data.categories`'s,
shared with MVTec AD 2 and VisA.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtest.data.categories import CategoryDataset, CategorySplit, check_category_options, draw
from fmtest.data.io import list_images
from fmtest.data.sample import NOK, OK, SampleRef
from fmtest.errors import ConfigError, DataError

TEXTURE_CATEGORIES = ("carpet", "grid", "leather", "tile", "wood")
SUBSETS = ("all", "study")
STUDY_FRACTION = 0.2  # of each category's train/good (OK) and defective test images, in our reconstruction


@dataclass(frozen=True)
class MVTecOptions:
    categories: tuple[str, ...] = TEXTURE_CATEGORIES
    subset: str = "all"  # "all": the test split; "study": our reconstruction of the study's test set
    n_good: int | None = None  # stratified seeded subset of the OK images scored; None or 0: all
    n_defective: int | None = None  # stratified seeded subset of the defective images scored; None or 0: all
    seed: int = 0
    mask_threshold: int | None = None  # 8-bit level a defect pixel is above; None: 127, refusing non-two-level masks
    empty_nok_masks: str = "error"  # or "exclude": leave defective images with empty masks out of IoU, counted

    def __post_init__(self) -> None:
        check_category_options("mvtec", self)
        if self.subset not in SUBSETS:
            raise ConfigError(f"option subset must be one of {', '.join(SUBSETS)}, got {self.subset!r}",
                              "[datasets.mvtec]")


class MVTecAD(CategoryDataset):
    name = "mvtec"
    folder_name = "mvtec"
    title = "MVTec AD"
    options_type = MVTecOptions

    def category_split(self, category: str) -> CategorySplit:
        """train/good, test/good and test/<defect>; with `subset = "study"` the OK images are drawn from
        train/good (and leave the training split) and the defective ones are a 20 % draw."""
        train, test = self._train_refs(category), self._test_refs(category)
        defective = [r for r in test if r.label == NOK]
        if self.options.subset != "study":
            return CategorySplit(train, [r for r in test if r.label == OK], defective)
        rng = self.rng(category, "study")
        good = draw(train, study_count(len(train)), rng, "train/good images", self.folder)
        defective = draw(defective, study_count(len(defective)), rng, "defective test images", self.folder)
        drawn = {r.id for r in good}
        return CategorySplit([r for r in train if r.id not in drawn], good, defective)

    def _train_refs(self, category: str) -> list[SampleRef]:
        images = self.folder_images(category, "train", "good", what="training images")
        return [self.sample_ref(category, "train", "good", OK, image, None) for image in images]

    def _test_refs(self, category: str) -> list[SampleRef]:
        test_dir = self.category_dir(category, "test")
        refs = []
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            defect = defect_dir.name
            for image in list_images(defect_dir):
                mask = None
                if defect != "good":
                    mask = self.folder / category / "ground_truth" / defect / f"{image.stem}_mask.png"
                    if not mask.is_file():
                        raise DataError(f"mask of defective image {image} not found", mask)
                refs.append(self.sample_ref(category, "test", defect, OK if defect == "good" else NOK, image, mask))
        if not refs:
            raise DataError(f"{self.title} category {category!r}: no test images", test_dir)
        return refs


def study_count(n: int) -> int:
    """How many of `n` images the study reconstruction draws: 20 %, rounded to the nearest image."""
    return round(n * STUDY_FRACTION)
