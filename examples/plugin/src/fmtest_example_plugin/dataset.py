"""A folder of part images: `<data root>/<folder>/{train/good, test/good, test/defect, masks}`.

Every defective test image `test/defect/<name>.png` has its mask at `masks/<name>.png`; a missing
mask is an error naming the path it should have, before any case runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmtest.data import NOK, OK, Dataset, Sample, SampleRef, SampleSet
from fmtest.data.io import list_images, read_image, read_mask
from fmtest.data.options import dataset_folder
from fmtest.errors import DataError


@dataclass(frozen=True)
class PartsFolderOptions:
    """`[datasets.parts]`."""

    folder: str = "parts"  # under the data root


class PartsFolder(Dataset):
    name = "parts"
    has_masks = True
    options_type = PartsFolderOptions

    @classmethod
    def from_config(cls, root: Path | None, options: Mapping[str, object]) -> PartsFolder:
        opts: PartsFolderOptions = cls.read_options(options)
        folder = dataset_folder(root, opts.folder, cls.name)
        train = [_ref(folder, "train/good", image, None) for image in list_images(folder / "train" / "good")]
        test = [_ref(folder, "test/good", image, None) for image in list_images(folder / "test" / "good")]
        for image in list_images(folder / "test" / "defect"):
            mask = folder / "masks" / f"{image.stem}.png"
            if not mask.is_file():
                raise DataError(f"mask of defective image {image.name} not found", mask)
            test.append(_ref(folder, "test/defect", image, mask))
        if not train or not test:
            raise DataError("needs images in train/good and in test/good or test/defect", folder)
        return cls(SampleSet(train), SampleSet(test))


def _ref(folder: Path, split: str, image: Path, mask: Path | None) -> SampleRef:
    label = NOK if mask is not None else OK
    sample_id = f"{split}/{image.stem}"

    def load() -> Sample:
        pixels = read_image(image)
        truth = read_mask(mask, pixels.shape) if mask else np.zeros(pixels.shape[:2], bool)
        return Sample(id=sample_id, image=pixels, label=label, mask=truth, source=str(image))

    return SampleRef(sample_id, label, load)
