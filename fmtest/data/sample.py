"""The unit of data every layer above shares: a Sample, and a lazily loaded SampleSet.

Images are float32 arrays scaled to [0, 1] (16-bit SAT scans keep their precision), shape HxW for
greyscale or HxWx3 for RGB. Masks are bool HxW at the image's size.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, overload

import numpy as np

Label = Literal["OK", "NOK"]
OK: Label = "OK"
NOK: Label = "NOK"
LABELS: tuple[Label, Label] = (OK, NOK)


@dataclass(frozen=True, eq=False)
class Sample:
    """One image with its ground truth.

    `mask` is None when the dataset has no pixel annotation (classification only); a defect-free
    image of a segmentation dataset has an all-False mask. `ignore` marks pixels left out of IoU
    (the Oxford trimap border).
    """

    id: str
    image: np.ndarray
    label: Label
    mask: np.ndarray | None = None
    ignore: np.ndarray | None = None
    meta: Mapping[str, object] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"{self.source or self.id}: label must be OK or NOK, got {self.label!r}")
        hw = self.image.shape[:2]
        for name in ("mask", "ignore"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != hw:
                raise ValueError(
                    f"{self.source or self.id}: {name} is {arr.shape[1]}x{arr.shape[0]} but the image is "
                    f"{hw[1]}x{hw[0]}"
                )

    @cached_property
    def sha256(self) -> str:
        """Content hash of the decoded image: keys the prediction cache and detects changed data."""
        h = hashlib.sha256()
        h.update(str((self.image.shape, self.image.dtype.str)).encode())
        h.update(np.ascontiguousarray(self.image).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class SampleRef:
    """What is known about a sample without decoding it: enough to count, split and subset.

    `memo=False` for one-off variants (perturbed copies) that should not evict dataset images.
    `content_key`, when a dataset can give one, names everything the decoded sample is a pure function of
    (a generated dataset: its generator's code and version, seed and options), so the run may keep the decoded
    sample between runs (`fmtest.run.samples`); None (files): the sample is decoded, its content hashed.
    """

    id: str
    label: Label
    load: Callable[[], Sample]
    memo: bool = True
    content_key: str | None = None

    def get(self) -> Sample:
        """The decoded sample, from the process-wide memo when it was decoded recently."""
        return _MEMO.get(self) if self.memo else self.load()


class _SampleMemo:
    """Recently decoded samples, bounded in bytes: several pipelines score the same images in a run,
    and decoding or rendering them again would dominate a warm-cache rerun."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[SampleRef, Sample] = OrderedDict()
        self._bytes = 0

    def get(self, ref: SampleRef) -> Sample:
        if ref in self._items:
            self._items.move_to_end(ref)
            return self._items[ref]
        sample = ref.load()
        for array in (sample.image, sample.mask, sample.ignore):
            if array is not None:
                array.setflags(write=False)  # shared by every pipeline: an in-place edit would leak
        size = _nbytes(sample)
        if size <= self.max_bytes:
            self._items[ref] = sample
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= _nbytes(old)
        return sample


def _nbytes(sample: Sample) -> int:
    return sum(a.nbytes for a in (sample.image, sample.mask, sample.ignore) if a is not None)


_MEMO = _SampleMemo(int(os.environ.get("FMTEST_SAMPLE_MEMORY_MB", "1024")) * 2**20)


class SampleSet(Sequence[Sample]):
    """A sequence of samples decoded on access, so a dataset of thousands of images costs no memory."""

    def __init__(self, refs: Sequence[SampleRef]):
        self._refs = list(refs)

    def __len__(self) -> int:
        return len(self._refs)

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> SampleSet: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return SampleSet(self._refs[index])
        return self._refs[index].get()

    @property
    def refs(self) -> list[SampleRef]:
        return list(self._refs)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self._refs]

    @property
    def labels(self) -> list[Label]:
        return [r.label for r in self._refs]

    @property
    def n_defective(self) -> int:
        return sum(r.label == NOK for r in self._refs)

    def filter(self, predicate: Callable[[SampleRef], bool]) -> SampleSet:
        return SampleSet([r for r in self._refs if predicate(r)])

    def batches(self, size: int):
        """Yield lists of decoded samples, `size` at a time."""
        for start in range(0, len(self._refs), size):
            yield [ref.get() for ref in self._refs[start : start + size]]
