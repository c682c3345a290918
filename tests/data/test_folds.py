"""Stratified k-fold splits: a partition, label proportions kept, deterministic by seed."""

from __future__ import annotations

import pytest

from fmtest.data.folds import stratified_folds
from fmtest.data.sample import NOK, OK, Sample, SampleRef, SampleSet
from fmtest.errors import ConfigError, DataError


def labelled(n_ok: int, n_nok: int) -> SampleSet:
    def ref(i: int, label: str) -> SampleRef:
        return SampleRef(f"img{i:03d}", label, lambda: Sample(f"img{i:03d}", None, label))  # never loaded here

    labels = [OK] * n_ok + [NOK] * n_nok
    return SampleSet([ref(i, label) for i, label in enumerate(labels)])


def test_every_image_is_held_out_exactly_once_and_never_trained_on_by_its_fold():
    samples = labelled(23, 9)
    folds = stratified_folds(samples, 5, seed=3)
    assert len(folds) == 5
    held_out = [i for _, test in folds for i in test.ids]
    assert sorted(held_out) == sorted(samples.ids)
    for train, test in folds:
        assert set(train.ids).isdisjoint(test.ids) and len(train) + len(test) == len(samples)
        assert train.ids == [i for i in samples.ids if i in set(train.ids)]  # original order kept


def test_label_proportions_and_fold_sizes_are_balanced():
    folds = stratified_folds(labelled(23, 9), 5, seed=0)
    assert sorted(test.n_defective for _, test in folds) == [1, 2, 2, 2, 2]
    assert sorted(len(test) - test.n_defective for _, test in folds) == [4, 4, 5, 5, 5]
    assert sorted(len(test) for _, test in folds) == [6, 6, 6, 7, 7]


def test_deterministic_by_seed():
    samples = labelled(30, 10)
    ids = lambda seed: [test.ids for _, test in stratified_folds(samples, 5, seed)]
    assert ids(7) == ids(7)
    assert ids(7) != ids(8)


def test_too_few_images_of_a_label_and_too_few_folds():
    with pytest.raises(DataError, match="at least 5 NOK images, found 4"):
        stratified_folds(labelled(20, 4), 5, seed=0)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        stratified_folds(labelled(20, 10), 1, seed=0)
    assert len(stratified_folds(labelled(10, 0), 5, seed=0)) == 5  # one label only is fine
