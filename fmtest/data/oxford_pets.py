"""Oxford-IIIT-Pet as a stand-in inspection task: a cat is the 'defect' (NOK), a dog is good (OK).

Layout: `<root>/oxford-iiit-pet/{images/<name>.jpg, annotations/trimaps/<name>.png, annotations/list.txt}`.
Trimap values: 1 pet, 2 background, 3 border. A cat's mask is its pet region; a dog's mask is empty
(nothing defective to find). The border is the annotators' uncertain outline: `trimap_border =
"ignore"` (default) leaves it out of IoU, "pet" counts it as part of the cat's mask, "background" as
outside it (the study does not say which it did).
A cat whose trimap marks no pet pixel is an error naming the trimap (or, with
`empty_nok_masks = "exclude"`, left out of IoU and counted).
The study's test set is a seeded subset of 140 dogs and 60 cats; the remaining dogs are training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmtest.data.base import Dataset
from fmtest.data.departures import NOT_PUBLISHED, Departure
from fmtest.data.io import check_size, read_image, read_pixels
from fmtest.data.options import (
    check_mask_options,
    dataset_folder,
    require_non_negative,
    seeded_subset,
)
from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError

CAT, DOG = "1", "2"  # the SPECIES column of list.txt
PET, BACKGROUND, BORDER = 1, 2, 3  # trimap values
TRIMAP_BORDERS = ("ignore", "pet", "background")  # what the border pixels are in IoU
STUDY_DOGS, STUDY_CATS = 140, 60


@dataclass(frozen=True)
class OxfordPetsOptions:
    n_good: int | None = 140  # dogs in the test set; None or 0: all dogs
    n_defective: int | None = 60  # cats in the test set; None or 0: all cats
    seed: int = 0
    empty_nok_masks: str = "error"  # or "exclude": leave cats without pet pixels out of IoU, counted
    trimap_border: str = "ignore"  # the trimap's border pixels in IoU: "ignore", "pet" or "background"

    def __post_init__(self) -> None:
        require_non_negative("oxford_pets", n_good=self.n_good, n_defective=self.n_defective)
        check_mask_options("oxford_pets", empty_nok_masks=self.empty_nok_masks)
        if self.trimap_border not in TRIMAP_BORDERS:
            raise ConfigError(f"option trimap_border must be one of {', '.join(TRIMAP_BORDERS)}, got "
                              f"{self.trimap_border!r}", "[datasets.oxford_pets]")


@dataclass(frozen=True)
class PetEntry:
    name: str
    species: str
    class_id: str
    line: int


def read_list(path: Path) -> list[PetEntry]:
    """Parse annotations/list.txt: `Image CLASS-ID SPECIES BREED-ID` per line, '#' starts a comment."""
    if not path.is_file():
        raise DataError("annotation list not found", path)
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        columns = line.split()
        if len(columns) != 4:
            raise DataError(f"expected 4 columns 'Image CLASS-ID SPECIES BREED-ID', got {len(columns)}: {line!r}",
                            f"{path}:{number}")
        name, class_id, species, _breed_id = columns
        if species not in (CAT, DOG):
            raise DataError(f"SPECIES must be 1 (cat) or 2 (dog), got {species!r}", f"{path}:{number}")
        entries.append(PetEntry(name=name, species=species, class_id=class_id, line=number))
    return entries


class OxfordPets(Dataset):
    name = "oxford_pets"
    options_type = OxfordPetsOptions
    has_masks = True

    def __init__(self, folder: Path, options: OxfordPetsOptions = OxfordPetsOptions()):
        self.folder = folder
        self.options = options
        list_path = folder / "annotations" / "list.txt"
        entries = read_list(list_path)
        cats = [e for e in entries if e.species == CAT]
        dogs = [e for e in entries if e.species == DOG]
        rng = np.random.default_rng(options.seed)
        test_dogs = seeded_subset(dogs, options.n_good, rng, "dogs", list_path)
        test_cats = seeded_subset(cats, options.n_defective, rng, "cats", list_path)
        chosen = {e.name for e in test_dogs}
        test = [self._ref(e) for e in test_dogs + test_cats]
        for entry in test_dogs + test_cats:
            for path in self._files(entry):
                if not path.is_file():
                    raise DataError(f"file for {entry.name} (list.txt line {entry.line}) not found", path)
        super().__init__(train=SampleSet([self._ref(e) for e in dogs if e.name not in chosen]), test=SampleSet(test))

    @property
    def folders(self) -> tuple[Path, ...]:
        return (self.folder,)

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> OxfordPets:
        folder = dataset_folder(root, "oxford-iiit-pet", cls.name)
        return cls(folder, cls.read_options(options))

    @classmethod
    def departures(cls, options: Mapping[str, object]) -> list[Departure]:
        """The study scored 140 dogs and 60 cats, not listed, and does not say how the trimap border counts."""
        o = cls.read_options(options)
        if (o.n_good, o.n_defective) == (STUDY_DOGS, STUDY_CATS):
            images = Departure("scored images", f"a seeded draw (seed {o.seed}) of {STUDY_DOGS} dogs and "
                               f"{STUDY_CATS} cats", f"{STUDY_DOGS} dogs and {STUDY_CATS} cats, which ones not published",
                               "the study does not list its images", kind="unstated")
        else:
            images = Departure("scored images", f"{o.n_good or 'all'} dogs and {o.n_defective or 'all'} cats",
                               f"{STUDY_DOGS} dogs and {STUDY_CATS} cats", "set by n_good / n_defective")
        border = {"ignore": "left out of IoU", "pet": "counted as the cat's", "background": "counted as background"}
        why = {"ignore": "it is the annotators' uncertain outline; scoring it either way charges a model for it",
               "pet": 'set by trimap_border = "pet"', "background": 'set by trimap_border = "background"'}
        found = [images, Departure("trimap border", f"border pixels {border[o.trimap_border]}", NOT_PUBLISHED,
                                   why[o.trimap_border], kind="unstated")]
        if o.empty_nok_masks == "exclude":
            found.append(Departure("empty masks", "cats without pet pixels left out of IoU", "every cat scored",
                                   'set by empty_nok_masks = "exclude"'))
        return found

    def _files(self, entry: PetEntry) -> tuple[Path, Path]:
        return (self.folder / "images" / f"{entry.name}.jpg",
                self.folder / "annotations" / "trimaps" / f"{entry.name}.png")

    def _ref(self, entry: PetEntry) -> SampleRef:
        is_cat = entry.species == CAT
        sample_id = f"{'cat' if is_cat else 'dog'}/{entry.name}"
        label = NOK if is_cat else OK
        image_path, trimap_path = self._files(entry)
        meta = {"species": "cat" if is_cat else "dog", "breed": entry.name.rsplit("_", 1)[0],
                "class_id": entry.class_id}

        def load() -> Sample:
            image = read_image(image_path)
            trimap = read_trimap(trimap_path, image.shape)
            border = self.options.trimap_border
            mask = np.zeros(trimap.shape, bool)
            if is_cat:
                pet = (trimap == PET) | (trimap == BORDER) if border == "pet" else trimap == PET
                mask = self.checked_defect_mask(pet, sample_id, trimap_path, self.options.empty_nok_masks)
            ignore = trimap == BORDER if border == "ignore" else None
            return Sample(id=sample_id, image=image, label=label, mask=mask, ignore=ignore, meta=meta,
                          source=str(image_path))

        return SampleRef(id=sample_id, label=label, load=load)


def read_trimap(path: Path, shape) -> np.ndarray:
    """A trimap as stored (values 1, 2, 3), checked against its image's size."""
    trimap = read_pixels(path)
    if trimap.ndim != 2:
        raise DataError(f"trimap must have one channel, found shape {trimap.shape}", path)
    check_size(trimap, shape, path)
    values = set(np.unique(trimap).tolist())
    if not values <= {PET, BACKGROUND, BORDER}:
        raise DataError(f"trimap values must be 1, 2 or 3, found {sorted(values - {PET, BACKGROUND, BORDER})}", path)
    return trimap
