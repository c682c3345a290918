"""Prediction cache: round trips, isolation by key, damage handling, concurrency, info/clear, CLI."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sqlite3

import numpy as np
import pytest
from fakes import REPO

from fmtest.cli.cache import register_cli
from fmtest.errors import ConfigError
from fmtest.pipelines.base import Prediction
from fmtest.run.cache import (
    DB_NAME,
    CacheCorruptionWarning,
    CacheUnavailableWarning,
    PredictionCache,
    decode_prediction,
    encode_prediction,
)


def _blob_mask(shape, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(shape) > 0.6


def _same(a: Prediction, b: Prediction) -> bool:
    masks_equal = (a.mask is None and b.mask is None) or (
        a.mask is not None and b.mask is not None and a.mask.dtype == b.mask.dtype == np.bool_
        and a.mask.shape == b.mask.shape and np.array_equal(a.mask, b.mask)
    )
    return masks_equal and (a.label, a.score, a.reasoning, a.error, dict(a.usage)) == (
        b.label, b.score, b.reasoning, b.error, dict(b.usage))


@pytest.fixture
def cache(tmp_path):
    with PredictionCache(tmp_path / "cache") as c:
        yield c


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (3, 1), (1, 9), (17, 5), (64, 64)])
def test_mask_round_trip_keeps_odd_sizes(cache, shape):
    pred = Prediction.from_mask(_blob_mask(shape, 1), score=0.25, usage={"seconds": 0.5})
    cache.put_many("fp", "model", {"img": pred}, pipeline="padim")
    assert _same(cache.get("fp", "model", "img"), pred)


@pytest.mark.parametrize("pred", [
    Prediction(label="OK"),
    Prediction(label="NOK", score=0.93, reasoning="crack at the lower left lead — ≥2 mm",
               usage={"input_tokens": 1200.0, "output_tokens": 35.0}),
    Prediction.failed("answer was not JSON: 'Sure! Here...'", usage={"input_tokens": 10.0}),
    Prediction.from_mask(np.zeros((5, 3), bool)),
], ids=["bare", "classification", "failed", "empty-mask"])
def test_every_field_round_trips(cache, pred):
    cache.put_many("fp", "model", {"img": pred}, pipeline="gemini_basic")
    assert _same(cache.get("fp", "model", "img"), pred)


def test_encoding_rejects_masks_that_are_not_2d_bool():
    with pytest.raises(TypeError, match="2-D bool"):
        encode_prediction(Prediction(label="NOK", mask=np.ones((4, 4), np.uint8)))


def test_other_fingerprint_or_model_misses_and_stats_count(cache):
    pred = Prediction(label="OK", score=0.1)
    cache.put_many("fp-a", "model-1", {"img": pred}, pipeline="padim")
    assert cache.get("fp-b", "model-1", "img") is None  # one setting of the pipeline changed
    assert cache.get("fp-a", "model-2", "img") is None  # new weights
    assert cache.get("fp-a", "model-1", "other") is None
    assert cache.get("fp-a", "model-1", "img") is not None
    assert cache.stats.as_dict() == {"hits": 1, "misses": 3, "corrupt": 0, "writes": 1}


def test_batch_put_and_get(cache):
    preds = {f"img{i}": Prediction.from_mask(_blob_mask((9, 11), i), score=i / 10) for i in range(30)}
    cache.put_many("fp", "model", preds, pipeline="padim")
    found = cache.get_many("fp", "model", [*preds, "missing-1", "missing-2"])
    assert set(found) == set(preds)
    assert all(_same(found[k], preds[k]) for k in preds)
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (30, 2, 30)


def test_changing_one_pipeline_setting_invalidates_only_that_pipeline(cache):
    cache.put_many("padim-fp", "m", {"img": Prediction(label="OK")}, pipeline="padim")
    cache.put_many("diff-fp-threshold-0.3", "m", {"img": Prediction(label="NOK")}, pipeline="reference_diff")
    assert cache.get("padim-fp", "m", "img") is not None
    assert cache.get("diff-fp-threshold-0.4", "m", "img") is None


def _set_payload(cache_dir, transform) -> None:
    with sqlite3.connect(cache_dir / DB_NAME) as conn:
        (payload,) = conn.execute("SELECT payload FROM predictions").fetchone()
        conn.execute("UPDATE predictions SET payload=?", (transform(payload),))


def test_truncated_entry_is_reported_discarded_and_missed(cache, tmp_path):
    cache.put_many("fp", "model", {"abc123": Prediction.from_mask(_blob_mask((32, 32), 0))}, pipeline="padim")
    cache.close()
    _set_payload(tmp_path / "cache", lambda p: p[: len(p) // 2])
    with pytest.warns(CacheCorruptionWarning, match="abc123"):
        assert cache.get("fp", "model", "abc123") is None
    assert cache.stats.corrupt == 1 and cache.stats.misses == 1 and cache.stats.hits == 0
    assert cache.info()["entries"] == 0  # discarded, so the recomputed prediction replaces it
    assert cache.get("fp", "model", "abc123") is None
    assert cache.stats.corrupt == 1


def test_flipped_byte_is_caught_by_the_checksum(cache, tmp_path):
    cache.put_many("fp", "model", {"img": Prediction(label="OK", score=0.5)}, pipeline="padim")
    cache.close()
    _set_payload(tmp_path / "cache", lambda p: p[:-1] + bytes([p[-1] ^ 0x01]))
    with pytest.warns(CacheCorruptionWarning, match="checksum"):
        assert cache.get("fp", "model", "img") is None
    assert cache.stats.corrupt == 1


def test_undecodable_payload_raises_corrupt_entry():
    from fmtest.run.cache import CorruptEntry

    good = encode_prediction(Prediction.from_mask(np.ones((4, 4), bool)))
    with pytest.raises(CorruptEntry):
        decode_prediction(good[:-3])
    with pytest.raises(CorruptEntry):
        decode_prediction(b"not zlib at all")


def test_unreadable_database_file_is_moved_aside_and_rebuilt(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / DB_NAME).write_bytes(b"this is not an SQLite database" * 100)
    cache = PredictionCache(folder)
    with pytest.warns(CacheCorruptionWarning, match="unreadable"):
        assert cache.get("fp", "m", "img") is None
    cache.put_many("fp", "m", {"img": Prediction(label="OK")}, pipeline="padim")
    assert cache.get("fp", "m", "img") is not None
    assert any(p.name.startswith(f"{DB_NAME}.corrupt-") for p in folder.iterdir())
    cache.close()


def test_unopenable_cache_is_a_config_error_naming_the_file(tmp_path):
    (tmp_path / DB_NAME).mkdir()  # a folder where the database file should be
    with pytest.raises(ConfigError, match=f"{DB_NAME}: cannot open the prediction cache"):
        PredictionCache(tmp_path).get("fp", "m", "img")


def _killed_mid_commit(folder) -> None:
    """Child process: write a batch, and die by SIGKILL just before the transaction commits."""
    cache = PredictionCache(folder)
    conn = cache._connect()

    class DiesOnCommit:
        def __getattr__(self, name):
            return getattr(conn, name)

        def execute(self, sql, *args):
            if sql == "COMMIT":
                os.kill(os.getpid(), signal.SIGKILL)
            return conn.execute(sql, *args)

    cache._conn = DiesOnCommit()
    preds = {f"img{i}": Prediction.from_mask(_blob_mask((64, 64), i)) for i in range(50)}
    cache.put_many("fp", "m", preds, pipeline="padim")


def test_killed_writer_leaves_no_entry(tmp_path):
    folder = tmp_path / "cache"
    with PredictionCache(folder) as cache:
        cache.put_many("fp", "m", {"kept": Prediction(label="OK")}, pipeline="padim")
    child = multiprocessing.get_context("spawn").Process(target=_killed_mid_commit, args=(folder,))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with PredictionCache(folder) as cache:
        assert cache.info()["entries"] == 1
        assert cache.get_many("fp", "m", [f"img{i}" for i in range(50)]) == {}
        assert cache.get("fp", "m", "kept") is not None
        assert cache.stats.corrupt == 0


def _write_and_exit_without_close(folder) -> None:
    cache = PredictionCache(folder)
    cache.put_many("fp", "m", {f"img{i}": Prediction.from_mask(_blob_mask((64, 64), i)) for i in range(20)},
                   pipeline="padim")
    cache.keep_alive = cache  # held till interpreter exit, as the session's cache is


def test_database_file_alone_holds_every_entry_after_the_writer_exits(tmp_path):
    """A CI cache step may save only the main file: the WAL must be folded into it at exit."""
    folder = tmp_path / "cache"
    child = multiprocessing.get_context("spawn").Process(target=_write_and_exit_without_close, args=(folder,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    copy = tmp_path / "restored"
    copy.mkdir()
    (copy / DB_NAME).write_bytes((folder / DB_NAME).read_bytes())
    with PredictionCache(copy) as restored:
        assert len(restored.get_many("fp", "m", [f"img{i}" for i in range(20)])) == 20


def _hammer(cache: PredictionCache, worker: int, n_keys: int) -> dict[str, int]:
    """Child process: every worker writes and reads the same keys, one at a time and in batches."""
    for i in range(n_keys):
        key = f"img{(i + worker * 7) % n_keys}"
        seed = int(key[3:])
        cache.put_many("fp", "m", {key: Prediction.from_mask(_blob_mask((40, 24), seed), score=seed)}, pipeline="padim")
        got = cache.get("fp", "m", f"img{(i * 3) % n_keys}")
        if got is not None:
            assert np.array_equal(got.mask, _blob_mask((40, 24), int(got.score)))
    batch = {f"batch{worker}-{j}": Prediction(label="OK", score=j) for j in range(20)}
    cache.put_many("fp", "m", batch, pipeline="reference_diff")
    return cache.stats.as_dict()


def test_processes_writing_and_reading_the_same_keys(tmp_path):
    cache = PredictionCache(tmp_path / "cache")  # handed to the workers: each reconnects
    n_workers, n_keys = 4, 40
    with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
        stats = pool.starmap(_hammer, [(cache, w, n_keys) for w in range(n_workers)])
    assert all(s["corrupt"] == 0 and s["writes"] == n_keys + 20 for s in stats)
    found = cache.get_many("fp", "m", [f"img{i}" for i in range(n_keys)])
    assert len(found) == n_keys
    for key, pred in found.items():
        assert pred.score == int(key[3:])
        assert np.array_equal(pred.mask, _blob_mask((40, 24), int(key[3:])))
    info = cache.info()
    assert info["pipelines"]["padim"]["entries"] == n_keys
    assert info["pipelines"]["reference_diff"]["entries"] == 20 * n_workers
    cache.close()


def test_info_reports_entries_and_sizes(cache):
    big = {f"i{k}": Prediction.from_mask(_blob_mask((128, 128), k)) for k in range(10)}
    cache.put_many("fp1", "m", big, pipeline="padim")
    cache.put_many("fp2", "m", {"i0": Prediction(label="OK")}, pipeline="gemini_basic")
    info = cache.info()
    assert info["entries"] == 11
    assert info["pipelines"]["padim"]["entries"] == 10
    assert info["pipelines"]["gemini_basic"]["entries"] == 1
    # random masks barely compress: each is close to its 2 KiB of packed bits
    assert 10 * 1800 < info["pipelines"]["padim"]["payload_bytes"] < 10 * 2400
    assert info["payload_bytes"] == sum(p["payload_bytes"] for p in info["pipelines"].values())
    assert info["bytes"] >= info["payload_bytes"]


def test_clear_one_pipeline_then_all(cache):
    cache.put_many("fp1", "m", {"a": Prediction(label="OK")}, pipeline="padim")
    cache.put_many("fp1", "m", {"b": Prediction(label="OK")}, pipeline="padim")
    cache.put_many("fp2", "m", {"a": Prediction(label="NOK")}, pipeline="gemini_basic")
    assert cache.clear("padim") == 2
    assert cache.get("fp1", "m", "a") is None and cache.get("fp2", "m", "a") is not None
    assert cache.clear() == 1
    assert cache.info()["entries"] == 0


def test_clear_gives_the_disk_space_back(cache):
    cache.put_many("fp", "m", {f"i{k}": Prediction.from_mask(_blob_mask((256, 256), k)) for k in range(40)},
                   pipeline="padim")
    full = cache.info()["bytes"]
    assert full > 40 * 8192  # 40 random 256x256 masks: about 8 KiB each
    cache.clear()
    assert cache.info()["bytes"] < full / 4


def _cli(argv):
    parser = argparse.ArgumentParser(prog="fmtest")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_info_and_clear(tmp_path, capsys):
    folder = tmp_path / "cache"
    with PredictionCache(folder) as cache:
        cache.put_many("fp", "m", {f"i{k}": Prediction(label="OK") for k in range(3)}, pipeline="padim")
        cache.put_many("fp2", "m", {"i0": Prediction(label="OK")}, pipeline="sam_clip")
        cache.put_file("thumbnails", "a.png", b"png")
        cache.put_file("samples", "b.npz", b"npz")
    assert _cli(["cache", "info", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "4 entries" in out and "padim" in out and "sam_clip" in out
    assert _cli(["cache", "clear", "--dir", str(folder), "--pipeline", "padim"]) == 0
    assert "removed 3 entries (pipeline padim); 1 left" in capsys.readouterr().out
    assert (folder / "thumbnails" / "a.png").exists()  # one pipeline's clear keeps the shared derived files
    assert _cli(["cache", "clear", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "removed 1 entry (all pipelines); 0 left" in out and "removed 2 derived files" in out
    assert not (folder / "thumbnails").exists() and not (folder / "samples").exists()


def test_cli_on_a_folder_without_cache(tmp_path, capsys):
    assert _cli(["cache", "info", "--dir", str(tmp_path)]) == 0
    assert "no prediction cache" in capsys.readouterr().out
    assert not (tmp_path / DB_NAME).exists()


def _load_benchmark(monkeypatch):
    import importlib.util
    import sys

    path = REPO / "benchmarks" / "bench_warm_cache.py"
    spec = importlib.util.spec_from_file_location("bench_warm_cache", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_rescoring_from_cache_matches_scoring_in_memory(cache, monkeypatch):
    from fmtest.metrics import functional as metrics

    bench = _load_benchmark(monkeypatch)
    run = bench.fill_cache(cache, n_images=60, size=32, n_distinct=10, progress=False)
    summary = bench.rescore(cache, run, n_resamples=50, progress=False)
    assert cache.stats.hits == 60 and cache.stats.misses == 0

    stored = [cache.get(bench.FINGERPRINT, bench.MODEL_ID, sha) for sha in run.image_sha256s]
    truth = [run.target(i) for i in range(60)]
    y_true = np.array([t.any() for t in truth])
    expected_iou = np.mean([metrics.iou(p.mask, t) for p, t in zip(stored, truth) if t.any()])
    assert summary["iou"] == pytest.approx(expected_iou)
    assert summary["f2"] == pytest.approx(metrics.f2(metrics.confusion_counts(y_true, [p.label for p in stored])))
    assert 0 < summary["iou"] < 1  # shifted masks: neither trivial case


def test_a_cache_folder_that_cannot_be_created_degrades_to_no_cache_with_one_warning(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(CacheUnavailableWarning) as caught:
        assert PredictionCache.open_or_none(blocker / "cache") is None
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(blocker / "cache") in message and "goes on without the prediction cache" in message


def test_an_unopenable_database_degrades_to_no_cache(tmp_path):
    (tmp_path / DB_NAME).mkdir()
    with pytest.warns(CacheUnavailableWarning, match=f"{DB_NAME}: cannot open the prediction cache"):
        assert PredictionCache.open_or_none(tmp_path) is None


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders")
@pytest.mark.parametrize("existing", [False, True], ids=["empty folder", "existing database"])
def test_a_read_only_cache_folder_degrades_to_no_cache(tmp_path, existing):
    folder = tmp_path / "cache"
    if existing:
        with PredictionCache(folder) as cache:
            cache.put_many("fp", "m", {"img": Prediction(label="OK")}, pipeline="padim")
        (folder / DB_NAME).chmod(0o444)
    else:
        folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.warns(CacheUnavailableWarning, match="goes on without the prediction cache"):
            assert PredictionCache.open_or_none(folder) is None
    finally:
        folder.chmod(0o755)


def test_a_writable_cache_opens_and_the_probe_leaves_no_entry(tmp_path):
    cache = PredictionCache.open_or_none(tmp_path / "cache")
    assert cache is not None and cache.info()["entries"] == 0
    cache.close()


def test_merging_shard_caches_is_a_union_keeping_the_newer_entry_and_skipping_damaged_ones(tmp_path, capsys):
    """Shards on a network file system each write their own cache folder; `fmtest cache merge` joins them."""
    with PredictionCache(tmp_path / "shard1") as one:
        one.put_many("fp", "m", {"a": Prediction(label="OK", score=0.1), "b": Prediction(label="OK", score=0.2)},
                     pipeline="padim")
    with PredictionCache(tmp_path / "shard2") as two:
        two.put_many("fp", "m", {"b": Prediction(label="NOK", score=0.9), "c": Prediction(label="NOK", score=0.8),
                                 "d": Prediction(label="OK", score=0.3)}, pipeline="padim")
    conn = sqlite3.connect(tmp_path / "shard2" / DB_NAME)
    (payload,) = conn.execute("SELECT payload FROM predictions WHERE image_sha256 = 'd'").fetchone()
    conn.execute("UPDATE predictions SET payload = ? WHERE image_sha256 = 'd'", (payload + b"\0",))
    conn.commit()
    conn.close()
    assert _cli(["cache", "merge", str(tmp_path / "shard1"), str(tmp_path / "shard2"),
                 "--into", str(tmp_path / "all")]) == 0
    out = capsys.readouterr().out
    assert "shard1: 2 entries merged" in out and "shard2: 2 entries merged, 1 damaged entries skipped" in out
    with PredictionCache(tmp_path / "all") as merged:
        found = merged.get_many("fp", "m", ["a", "b", "c", "d"])
    assert {k: p.score for k, p in found.items()} == {"a": 0.1, "b": 0.9, "c": 0.8}  # b: shard2 wrote it later
    with PredictionCache(tmp_path / "shard1") as one:
        assert one.merge_from(tmp_path / "all") == (2, 0)  # b (newer) and c; its own a is not newer
    with pytest.raises(ConfigError, match="no prediction cache to merge"):
        PredictionCache(tmp_path / "all").merge_from(tmp_path / "nowhere")


def _score_map(shape, seed=2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (2.5 * rng.random(shape)).astype(np.float32)


@pytest.mark.parametrize("shape", [(48, 64), (600, 300)])
def test_the_score_map_is_kept_as_the_viewer_draws_it(cache, shape):
    from fmtest.imaging.overlay import image_layers

    mask = _blob_mask(shape, 3)
    score_map = np.where(mask, 1.5, 0.3).astype(np.float32) * _score_map(shape)
    pred = Prediction.from_mask(mask, score=0.9, score_map=score_map)
    cache.put_many("fp", "model", {"img": pred}, pipeline="padim")
    back = cache.get("fp", "model", "img")
    assert _same(back, pred) and back.score_map is not None
    assert max(back.score_map.shape) == min(max(shape), 256)  # the viewer's colour levels, at most 256 px
    image = np.full(shape, 0.5, np.float32)
    fresh, cached = (image_layers(image, p.mask, score_map=p.score_map, max_side=256)["score_map"] for p in (pred, back))
    import io

    from PIL import Image
    fresh_px, cached_px = (np.asarray(Image.open(io.BytesIO(png))) for png in (fresh, cached))
    assert fresh_px.shape == cached_px.shape
    assert np.array_equal(fresh_px, cached_px)  # the layer a cached run draws is the fresh run's


def test_an_entry_written_before_score_maps_were_kept_still_reads(cache):
    import json
    import struct
    import zlib

    meta = {"label": "NOK", "score": 0.5, "reasoning": None, "error": None, "usage": {}, "mask_shape": [2, 4]}
    head = json.dumps(meta).encode()
    old = zlib.compress(struct.pack("<I", len(head)) + head + np.packbits(np.ones(8, bool)).tobytes())
    back = decode_prediction(old)
    assert back.mask.all() and back.score_map is None


def test_a_truncated_score_map_is_a_damaged_entry():
    import zlib

    from fmtest.run.cache import CorruptEntry

    payload = zlib.decompress(encode_prediction(Prediction.from_mask(np.ones((4, 4), bool), score_map=_score_map((4, 4)))))
    with pytest.raises(CorruptEntry):
        decode_prediction(zlib.compress(payload[:-3]))


def _summary(seed: int):
    from fmtest.metrics.region import summarise_image

    rng = np.random.default_rng(seed)
    truth = np.zeros((16, 16), bool)
    truth[3:7, 3:7] = True
    scores = rng.random((16, 16)).astype(np.float32) + truth
    return summarise_image("", scores, truth, scores > 1.2)


def test_region_summaries_are_kept_by_prediction_and_truth_merged_cleared_and_checked(tmp_path):
    a, b = PredictionCache(tmp_path / "a"), PredictionCache(tmp_path / "b")
    a.put_regions("fp", "m", {"img1": ("truth1", _summary(1)), "img2": ("truth2", _summary(2))}, pipeline="p")
    found = a.get_regions("fp", "m", {"img1": "truth1", "img2": "other truth", "img3": "truth1"})
    assert list(found) == ["img1"] and found["img1"].to_dict() == _summary(1).to_dict()
    assert a.get_regions("other fp", "m", {"img1": "truth1"}) == {}

    b.merge_from(tmp_path / "a")  # shard caches merged: the summaries come along
    assert b.get_regions("fp", "m", {"img2": "truth2"})["img2"].to_dict() == _summary(2).to_dict()
    with sqlite3.connect(b.path) as db:  # a damaged summary is reported, dropped and recomputed
        db.execute("UPDATE region_summaries SET payload = x'00' WHERE image_sha256 = 'img2'")
    with pytest.warns(CacheCorruptionWarning, match="damaged region summary"):
        assert b.get_regions("fp", "m", {"img2": "truth2"}) == {}
    assert b.stats.corrupt == 1
    a.clear("p")
    assert a.get_regions("fp", "m", {"img1": "truth1"}) == {}


def test_a_version_1_cache_keeps_its_predictions_and_gains_the_region_table(tmp_path):
    (tmp_path / "c").mkdir()
    with sqlite3.connect(tmp_path / "c" / "predictions.sqlite") as db:
        db.executescript("""CREATE TABLE predictions (fingerprint TEXT NOT NULL, model_id TEXT NOT NULL,
            image_sha256 TEXT NOT NULL, pipeline TEXT NOT NULL, payload BLOB NOT NULL, checksum BLOB NOT NULL,
            created REAL NOT NULL, PRIMARY KEY (fingerprint, model_id, image_sha256)) WITHOUT ROWID;
            PRAGMA user_version=1;""")
    old = PredictionCache(tmp_path / "c")
    old.put_many("fp", "m", {"img": Prediction("OK", score=0.5)}, pipeline="p")
    old.close()
    with sqlite3.connect(tmp_path / "c" / "predictions.sqlite") as db:
        db.execute("PRAGMA user_version=1")
        db.execute("DROP TABLE region_summaries")
    upgraded = PredictionCache(tmp_path / "c")
    assert upgraded.get("fp", "m", "img").score == 0.5
    upgraded.put_regions("fp", "m", {"img": ("t", _summary(3))}, pipeline="p")
    assert list(upgraded.get_regions("fp", "m", {"img": "t"})) == ["img"]
