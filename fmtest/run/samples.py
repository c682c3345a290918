"""Generated samples kept beside the prediction cache, so a warm rerun reads them instead of generating them.

A warm rerun takes every prediction from the cache, but still needs each image's content hash (the cache key)
and its true mask (IoU); for a generated dataset (satsim) that meant rendering every part again, most of what a
warm rerun spent. A sample whose `SampleRef.content_key` names everything it is made from (the generator's code
and library versions, seed, options) is stored once as an uncompressed `.npz` (arrays, no pickle) under
`<cache>/samples/`, named by the hash of that key, and read back from then on: the same arrays and the same
metadata, so the same rows. A file that cannot be read or does not hold that key is generated again and
rewritten. Samples decoded from files (no content key) are decoded as before: their content is the file's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from fmtest.data import Group, Sample, SampleRef, SampleSet
from fmtest.util.fsutil import atomic_write

_PLAIN = (str, int, float, bool, type(None))


class SampleStore:
    """Decoded samples in `directory` (`<cache>/samples`), for refs that carry a content key."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def group(self, group: Group) -> Group:
        return replace(group, train=self.samples(group.train), test=self.samples(group.test))

    def samples(self, samples: SampleSet) -> SampleSet:
        return SampleSet([self.ref(r) for r in samples.refs])

    def ref(self, ref: SampleRef) -> SampleRef:
        if ref.content_key is None or not ref.memo:
            return ref
        return replace(ref, load=lambda: self.load(ref))

    def load(self, ref: SampleRef) -> Sample:
        path = self.directory / f"{hashlib.sha256(ref.content_key.encode()).hexdigest()[:40]}.npz"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return _read(path, ref)
        sample = ref.load()
        data = _encode(sample, ref.content_key)
        if data is not None:
            with contextlib.suppress(OSError):  # a full disk costs the next run a rendering, nothing more
                atomic_write(path, data)
        return sample


def _encode(sample: Sample, content_key: str) -> bytes | None:
    """The sample as .npz bytes; None when its metadata is not plain JSON data (it could not come back equal)."""
    meta = _tagged(sample.meta)
    if meta is None:
        return None
    header = {"content_key": content_key, "id": sample.id, "label": sample.label, "source": sample.source,
              "meta": meta}
    arrays = {"image": sample.image, "header": np.array(json.dumps(header, sort_keys=True))}
    arrays.update({name: a for name, a in (("mask", sample.mask), ("ignore", sample.ignore)) if a is not None})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _read(path: Path, ref: SampleRef) -> Sample:
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(str(npz["header"][()]))
        if header["content_key"] != ref.content_key:
            raise ValueError(f"{path}: holds another sample")
        arrays = {name: npz[name] for name in ("image", "mask", "ignore") if name in npz.files}
    return Sample(id=header["id"], image=arrays["image"], label=header["label"], mask=arrays.get("mask"),
                  ignore=arrays.get("ignore"), meta=_untagged(header["meta"]), source=header["source"])


def _tagged(value):
    """JSON data that `_untagged` turns back into an equal value of the same types (tuples stay tuples)."""
    if type(value) in _PLAIN:
        return value
    if type(value) is tuple or type(value) is list:
        items = [_tagged(v) for v in value]
        if any(i is None and v is not None for i, v in zip(items, value, strict=True)):
            return None
        return {"tuple": items} if type(value) is tuple else {"list": items}
    if isinstance(value, dict) and all(type(k) is str for k in value):
        items = {k: _tagged(v) for k, v in value.items()}
        if any(items[k] is None and value[k] is not None for k in value):
            return None
        return {"dict": items}
    return None


def _untagged(value):
    if not isinstance(value, dict):
        return value
    (kind, items), = value.items()
    if kind == "dict":
        return {k: _untagged(v) for k, v in items.items()}
    return (tuple if kind == "tuple" else list)(_untagged(v) for v in items)
