"""Shards of a test set: a deterministic, stratified share of the images, for runs spread over CI jobs.

Shard K of N holds, within each label, every N-th image in the order of the hash of its id, so
each shard keeps the set's share of defectives (sizes differ by at most one per label), the split
does not depend on the pipeline (every case of a shard sees the same images), and the N shards
partition the set. `fmtest merge` puts the shards' per-image rows back together.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from fmtest.data.sample import LABELS, SampleRef, SampleSet
from fmtest.errors import ConfigError

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"2/4"` -> Shard(2, 4); anything else is one ConfigError naming the option."""
        match = _SPEC.fullmatch(str(text))
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise ConfigError(f"--fm-shard={text}: expected K/N with 1 <= K <= N, e.g. 2/4")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def refs(self, samples: SampleSet) -> list[SampleRef]:
        """This shard's refs of `samples`, in the set's order."""
        chosen: set[int] = set()
        for label in LABELS:
            members = sorted((i for i, r in enumerate(samples.refs) if r.label == label),
                             key=lambda i: (_id_hash(samples.refs[i].id), i))
            chosen.update(members[self.index - 1 :: self.count])
        return [r for i, r in enumerate(samples.refs) if i in chosen]


def stratified_subset(samples: SampleSet, n: int) -> list[SampleRef]:
    """`n` refs of `samples` keeping the set's share of defectives, at least one of each label the set has (so a
    subset of a set with both labels always holds both), each label's taken in the order of the hash of their ids:
    the same images for every pipeline and run. In the set's order; all of them when `n` covers the set."""
    if n >= len(samples):
        return list(samples.refs)
    by_label = {label: sorted((i for i, r in enumerate(samples.refs) if r.label == label),
                              key=lambda i: (_id_hash(samples.refs[i].id), i)) for label in LABELS}
    present = [label for label in LABELS if by_label[label]]
    want = {label: max(1, round(n * len(by_label[label]) / len(samples))) for label in present}
    while sum(want.values()) > n:  # rounding up both labels of a small subset: the larger gives one back
        largest = max(present, key=lambda label: want[label])
        want[largest] -= 1
    chosen = {i for label in present for i in by_label[label][: want[label]]}
    return [r for i, r in enumerate(samples.refs) if i in chosen]


def _id_hash(image_id: str) -> str:
    return hashlib.sha256(image_id.encode()).hexdigest()
