"""The `fmtest` command line: version, one size unit in every table, JSON output, exit codes,
checkpoint verification by key or path, and cache pruning by age."""

from __future__ import annotations

import json
import sqlite3

import pytest

from fmtest import __version__
from fmtest.cli import main
from fmtest.cli.format import format_bytes, print_table
from fmtest.models import registry
from fmtest.models.registry import WeightSpec
from fmtest.pipelines.base import Prediction
from fmtest.run.cache import DB_NAME, PredictionCache


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"fmtest {__version__}\n"


@pytest.mark.parametrize(("n", "text"), [(None, "unknown"), (0, "0 B"), (1023, "1023 B"), (1536, "1.50 KiB"),
                                         (375_042_383, "357.7 MiB"), (2_564_550_879, "2.39 GiB"),
                                         (1024**2 - 1, "1.00 MiB"), (3 * 1024**5, "3072.0 TiB")])
def test_sizes_use_binary_units(n, text):
    assert format_bytes(n) == text


def test_table_pads_columns_and_right_aligns_numbers(capsys):
    print_table(("name", "size"), [("a", "1.0 KiB"), ("longer", "357.7 MiB")], right=("size",), indent="  ")
    assert capsys.readouterr().out.splitlines() == ["  name         size", "  a         1.0 KiB",
                                                    "  longer  357.7 MiB"]


def test_weights_list_table_and_json(tmp_path, capsys):
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert main(["weights", "list", "--weights", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "357.7 MiB" in next(line for line in lines if line.startswith("sam_vit_b "))
    assert not any(" GB" in line or " MB" in line for line in lines)  # one unit style
    assert main(["weights", "list", "--weights", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["folder"] == str(tmp_path)
    entries = {e["key"]: e for e in data["weights"]}
    assert set(entries) == set(registry.WEIGHTS)
    assert entries["sam_vit_b"]["present"] is True and entries["sam_vit_h"]["present"] is False
    assert entries["sam_vit_h"]["size_bytes"] == 2_564_550_879
    assert entries["sam_vit_h"]["path"] == str(tmp_path / "sam_vit_h_4b8939.pth")


@pytest.fixture
def small_sam_b(tmp_path, monkeypatch):
    """sam_vit_b's registry entry pointed at a 3-byte file whose sha256 is known."""
    monkeypatch.setitem(registry.WEIGHTS, "sam_vit_b", WeightSpec(
        key="sam_vit_b", filename="sam_vit_b_01ec64.pth", size=3,
        sha256="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", url="https://x/", license="t",
        description="t"))
    path = tmp_path / "elsewhere" / "sam_vit_b_01ec64.pth"
    path.parent.mkdir()
    path.write_bytes(b"abc")
    return path


def test_verify_a_checkpoint_by_path(small_sam_b, capsys):
    assert main(["weights", "verify", str(small_sam_b)]) == 0
    assert capsys.readouterr().out == f"sam_vit_b: OK {small_sam_b}\n"
    missing = small_sam_b.parent / "sam_vit_h_4b8939.pth"
    assert main(["weights", "verify", str(small_sam_b), str(missing)]) == 1
    assert f"sam_vit_h: MISSING {missing}" in capsys.readouterr().out
    assert main(["weights", "verify", str(small_sam_b.parent / "model.bin")]) == 2
    assert "neither a registry key" in capsys.readouterr().err


def test_verify_fails_when_the_weights_folder_is_missing(tmp_path, capsys):
    assert main(["weights", "verify", "--weights", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().out
    assert main(["weights", "verify", "--weights", str(tmp_path)]) == 0  # an existing empty folder: nothing to check
    assert main(["weights", "verify", "sam_vit_h", "--weights", str(tmp_path)]) == 1


def _age_entries(folder, image_ids, days):
    with sqlite3.connect(folder / DB_NAME) as conn:
        conn.executemany("UPDATE predictions SET created = created - ? WHERE image_sha256 = ?",
                         [(days * 86400, i) for i in image_ids])


def test_cache_prune_deletes_entries_older_than_the_given_days(tmp_path, capsys):
    folder = tmp_path / "cache"
    with PredictionCache(folder) as cache:
        cache.put_many("fp", "m", {f"i{k}": Prediction(label="OK") for k in range(4)}, pipeline="padim")
        cache.put_many("fp2", "m", {"j0": Prediction(label="NOK")}, pipeline="sam_clip")
    _age_entries(folder, ["i0", "i1", "j0"], days=10)
    assert main(["cache", "prune", "--dir", str(folder), "--older-than", "7", "--pipeline", "padim"]) == 0
    assert "removed 2 entries older than 7 days (pipeline padim); 3 left" in capsys.readouterr().out
    assert main(["cache", "prune", "--dir", str(folder), "--older-than", "7"]) == 0
    assert "removed 1 entry older than 7 days (all pipelines); 2 left" in capsys.readouterr().out
    with PredictionCache(folder) as cache:
        assert cache.prune(older_than_s=3600) == 0  # the remaining entries were written just now
        assert set(cache.get_many("fp", "m", ["i2", "i3"])) == {"i2", "i3"}
    with pytest.raises(SystemExit):
        main(["cache", "prune", "--dir", str(folder), "--older-than", "-1"])
    assert "--older-than needs a number of days >= 0" in capsys.readouterr().err


def test_a_mistyped_pipeline_is_refused_with_the_nearest_name_not_removed_0_entries(tmp_path, capsys):
    folder = tmp_path / "cache"
    with PredictionCache(folder) as cache:
        cache.put_many("fp", "m", {"i0": Prediction(label="OK")}, pipeline="my_variant")  # a user's variant
    for action in (["clear"], ["prune", "--older-than", "0"], ["info"]):
        assert main(["cache", *action, "--dir", str(folder), "--pipeline", "padimm"]) == 2
        assert capsys.readouterr().err.startswith("fmtest: error: --pipeline: unknown pipeline 'padimm' (did you "
                                                  "mean padim?); known: reference_diff, padim")
    assert main(["cache", "clear", "--dir", str(folder), "--pipeline", "my_variant"]) == 0  # known from the cache
    assert "removed 1 entry (pipeline my_variant); 0 left" in capsys.readouterr().out


def test_cache_info_json(tmp_path, capsys):
    folder = tmp_path / "cache"
    assert main(["cache", "info", "--dir", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(folder / DB_NAME), "entries": 0, "bytes": 0,
                                                    "payload_bytes": 0, "pipelines": {}, "exists": False}
    with PredictionCache(folder) as cache:
        cache.put_many("fp", "m", {f"i{k}": Prediction(label="OK") for k in range(3)}, pipeline="padim")
        cache.put_many("fp2", "m", {"i0": Prediction(label="OK")}, pipeline="sam_clip")
    assert main(["cache", "info", "--dir", str(folder), "--json", "--pipeline", "padim"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["exists"] is True and info["entries"] == 4 and info["bytes"] > 0
    assert list(info["pipelines"]) == ["padim"] and info["pipelines"]["padim"]["entries"] == 3
    assert main(["cache", "info", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "4 entries" in out and " KiB on disk" in out
