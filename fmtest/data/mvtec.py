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
- `subset_file = "<file>"`: exactly the images the file lists, one per line as its path in the MVTec AD
  folder (`carpet/test/hole/000.png`; `#` starts a comment; relative to the dataset folder
  `<root>/mvtec`, or absolute). A `train/good` or `test/good` image is an OK test image (one drawn from
  train/good leaves the training split, as in "study"), a `test/<defect>` image a NOK one. For a list
  the study's authors give you, or one to pin a run to; takes the place of `subset`.
- `n_good` / `n_defective`: a seeded subset of those OK / NOK images, stratified by category: each
  category keeps its share of the total (largest remainder), so a quick run still covers them all.
Draws are seeded per category (`seed` and the category name): adding a category does not change
the images drawn for the others. Groups, references and subsets are `fmtest.data.categories`'s,
shared with MVTec AD 2 and VisA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from fmtest.data.categories import (
    CategoryDataset,
    CategorySplit,
    check_category_options,
    draw,
)
from fmtest.data.departures import Departure
from fmtest.data.io import IMAGE_SUFFIXES, list_images
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
    subset_file: str | None = None  # the exact images scored, listed in a file (instead of `subset`)

    def __post_init__(self) -> None:
        check_category_options("mvtec", self)
        if self.subset not in SUBSETS:
            raise ConfigError(f"option subset must be one of {', '.join(SUBSETS)}, got {self.subset!r}",
                              "[datasets.mvtec]")
        if self.subset_file is not None and self.subset != "all":
            raise ConfigError(f"options subset_file and subset = {self.subset!r} both choose the scored images; "
                              "set one of them", "[datasets.mvtec]")


class MVTecAD(CategoryDataset):
    name = "mvtec"
    title = "MVTec AD"
    options_type = MVTecOptions

    def category_split(self, category: str) -> CategorySplit:
        """train/good, test/good and test/<defect>; with `subset = "study"` the OK images are drawn from
        train/good (and leave the training split) and the defective ones are a 20 % draw; with
        `subset_file` the listed ones (a listed train/good image leaves the training split)."""
        train, test = self._train_refs(category), self._test_refs(category)
        defective = [r for r in test if r.label == NOK]
        if self.options.subset_file is not None:
            chosen = self._listed(category, train + test)
            listed = {r.id for r in chosen}
            return CategorySplit([r for r in train if r.id not in listed], [r for r in chosen if r.label == OK],
                                 [r for r in chosen if r.label == NOK])
        if self.options.subset != "study":
            return CategorySplit(train, [r for r in test if r.label == OK], defective)
        rng = self.rng(category, "study")
        good = draw(train, study_count(len(train)), rng, "train/good images", self.folder)
        defective = draw(defective, study_count(len(defective)), rng, "defective test images", self.folder)
        drawn = {r.id for r in good}
        return CategorySplit([r for r in train if r.id not in drawn], good, defective)

    @cached_property
    def subset_path(self) -> Path:
        """`subset_file`, relative to the dataset folder unless absolute."""
        path = Path(str(self.options.subset_file)).expanduser()
        return path if path.is_absolute() else self.folder / path

    @cached_property
    def _subset(self) -> dict[str, ListedImage]:
        return read_subset_file(self.subset_path, self.options.categories)

    def _listed(self, category: str, refs: list[SampleRef]) -> list[SampleRef]:
        """The category's images the subset file lists, in the file's order; every listed one must exist."""
        by_id = {r.id: r for r in refs}
        wanted = [entry for entry in self._subset.values() if entry.category == category]
        if not wanted:
            raise DataError(f"lists no image of category {category!r}; list some, or leave it out of categories",
                            self.subset_path)
        for entry in wanted:
            if entry.sample_id not in by_id:
                raise DataError(f"{entry.path!r} is not an image of the dataset (no such file with a known image "
                                "suffix, or a defective image without its mask)", f"{self.subset_path}:{entry.line}")
        return [by_id[entry.sample_id] for entry in wanted]

    @classmethod
    def departures(cls, options: Mapping[str, object]) -> list[Departure]:
        """The study scored carpet, grid, leather, tile and wood: 253 OK + 76 defective images, not listed."""
        o = cls.read_options(options)
        study_images = "253 OK + 76 defective images of the five categories, which ones not published"
        found = []
        if tuple(o.categories) != TEXTURE_CATEGORIES:
            found.append(Departure("categories", ", ".join(o.categories), ", ".join(TEXTURE_CATEGORIES),
                                   "set by categories"))
        if o.subset_file is not None:
            found.append(Departure("scored images", f"the images listed in {o.subset_file}", study_images,
                                   "pinned by subset_file: the study's list is not published, so the file's "
                                   "provenance decides how close it is", kind="unstated"))
        elif o.subset == "study":
            found.append(Departure(
                "reconstructed subset", "our reconstruction: per category a seeded 20 % of train/good as OK and of "
                f"the defective test images as NOK (seed {o.seed}; 253 + 76 on the five categories)", study_images,
                "the test splits hold only 133 OK images, so the study's 253 must include train/good ones; this "
                "draw reproduces both counts exactly", kind="unstated"))
        else:
            found.append(Departure("scored images", "the published test split (133 OK + 382 defective on the five "
                                   "categories)", study_images, 'set by subset = "all"'))
        if o.n_good or o.n_defective:
            found.append(Departure("subsample", f"a seeded subsample: {o.n_good or 'all'} OK, "
                                   f"{o.n_defective or 'all'} defective", study_images, "set by n_good / n_defective"))
        return found

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


@dataclass(frozen=True)
class ListedImage:
    """One line of a subset file: the image's path in the MVTec AD folder and the sample id it names."""

    path: str
    category: str
    sample_id: str
    line: int


def read_subset_file(path: Path, categories: Sequence[str]) -> dict[str, ListedImage]:
    """The images a subset file lists, by sample id, in the file's order.

    Each line is `<category>/train/good/<name>` or `<category>/test/<defect>/<name>` (an image suffix
    optional); `#` starts a comment. A path elsewhere, of another category or listed twice is an error
    naming the line.
    """
    if not path.is_file():
        raise DataError("subset_file not found", path)
    listed: dict[str, ListedImage] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = Path(text).parts
        where = f"{path}:{number}"
        if len(parts) != 4 or parts[1] not in ("train", "test") or (parts[1] == "train" and parts[2] != "good"):
            raise DataError(f"{text!r} is not <category>/train/good/<image> or <category>/test/<defect>/<image>", where)
        if parts[0] not in categories:
            raise DataError(f"{text!r} is of category {parts[0]!r}, not one of the chosen {', '.join(categories)}",
                            where)
        name = Path(parts[3])
        sample_id = "/".join([*parts[:3], name.stem if name.suffix.lower() in IMAGE_SUFFIXES else name.name])
        if sample_id in listed:
            raise DataError(f"{text!r} is listed twice (first on line {listed[sample_id].line})", where)
        listed[sample_id] = ListedImage(text, parts[0], sample_id, number)
    if not listed:
        raise DataError("subset_file lists no image", path)
    return listed


def study_count(n: int) -> int:
    """How many of `n` images the study reconstruction draws: 20 %, rounded to the nearest image."""
    return round(n * STUDY_FRACTION)
