"""Generated samples kept beside the prediction cache (fmtest.run.samples): read back equal, in content and types."""

from __future__ import annotations

import numpy as np

from fmtest.data.sample import Sample, SampleRef
from fmtest.data.satsim import SatSim, SatSimOptions
from fmtest.run.samples import SampleStore


def _same(a: Sample, b: Sample) -> bool:
    return (a.id, a.label, a.source, a.meta) == (b.id, b.label, b.source, b.meta) \
        and all(type(a.meta[k]) is type(b.meta[k]) for k in a.meta) \
        and a.image.dtype == b.image.dtype and np.array_equal(a.image, b.image) and a.sha256 == b.sha256 \
        and (a.mask is None) == (b.mask is None) and (a.mask is None or np.array_equal(a.mask, b.mask))


def test_generated_samples_come_back_identical_and_are_not_generated_again(tmp_path):
    group = SatSim(SatSimOptions(n_train=2, n_test_good=1, n_test_defective=2, size=64)).groups()[0]
    refs = group.train.refs + group.test.refs
    stored = [SampleStore(tmp_path).ref(r).load() for r in refs]
    assert len(list(tmp_path.glob("*.npz"))) == len(refs)
    calls = []
    again = [SampleStore(tmp_path).ref(SampleRef(r.id, r.label, lambda r=r: calls.append(r) or r.load(),
                                                 content_key=r.content_key)).load() for r in refs]
    assert calls == []  # read, not rendered
    assert all(_same(a, b) and _same(a, r.load()) for a, b, r in zip(stored, again, refs, strict=True))


def test_a_damaged_or_foreign_file_is_generated_again(tmp_path):
    ref = SatSim(SatSimOptions(n_train=1, n_test_good=1, n_test_defective=1, size=64)).test.refs[1]
    store = SampleStore(tmp_path)
    store.ref(ref).load()
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])
    assert _same(store.ref(ref).load(), ref.load())
    other = SatSim(SatSimOptions(n_train=1, n_test_good=1, n_test_defective=1, size=64, seed=1)).test.refs[1]
    store.ref(other).load()
    (other_path,) = set(tmp_path.glob("*.npz")) - {path}
    path.write_bytes(other_path.read_bytes())  # a file holding another sample's content key
    assert _same(store.ref(ref).load(), ref.load())


def test_samples_without_a_content_key_are_left_alone(tmp_path):
    ref = SampleRef("a", "OK", lambda: Sample("a", np.zeros((4, 4), np.float32), "OK"))
    assert SampleStore(tmp_path).ref(ref) is ref
