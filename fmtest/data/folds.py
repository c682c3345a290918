"""Stratified k-fold splits of a SampleSet, for pipelines that learn from labelled OK and NOK images.

The study scores its supervised reference by stratified five-fold cross-validation: every labelled
image is predicted exactly once, by the model fitted on the other folds, and each fold keeps the
share of defectives of the whole set. Within each label the images are shuffled with the seed and
dealt round-robin to the folds, so fold sizes differ by at most one per label (and overall), and
the same seed always gives the same folds.
"""

from __future__ import annotations

import numpy as np

from fmtest.data.sample import LABELS, SampleSet
from fmtest.errors import ConfigError, DataError


def stratified_folds(samples: SampleSet, k: int, seed: int) -> list[tuple[SampleSet, SampleSet]]:
    """`k` (train, held_out) pairs; the held-out sets partition `samples` and keep its label proportions.

    Both sets keep the samples' original order. Raises DataError when a label that occurs has fewer
    than `k` images: some fold would then train without, or hold out none of, that label.
    """
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {k}")
    refs = samples.refs
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(refs), dtype=int)
    dealt = 0  # the next label continues the deal where the last stopped, so fold sizes also balance overall
    for label in LABELS:
        members = np.array([i for i, r in enumerate(refs) if r.label == label], dtype=int)
        if 0 < len(members) < k:
            raise DataError(f"{k}-fold cross-validation needs at least {k} {label} images, found {len(members)}")
        fold_of[rng.permutation(members)] = (dealt + np.arange(len(members))) % k
        dealt += len(members)
    return [(SampleSet([r for r, f in zip(refs, fold_of, strict=True) if f != fold]),
             SampleSet([r for r, f in zip(refs, fold_of, strict=True) if f == fold]))
            for fold in range(k)]
