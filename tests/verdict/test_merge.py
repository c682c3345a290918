"""Sharded runs (--fm-shard=K/N) and `fmtest merge`: the merged shards equal the unsharded run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from toy_fmtest import run_suite as run

from fmtest.cli import main
from fmtest.data.sample import SampleRef, SampleSet
from fmtest.data.shards import Shard
from fmtest.errors import ConfigError
from fmtest.report.results_file import read_json
from fmtest.run.evaluate import ShardSlice
from fmtest.verdict.merge import MergeError, ShardFile, merge_shards
from fmtest.verdict.results import CaseResult, ImageResult, RunConfig, RunResults

PIPELINES = "--fm-pipeline=toy_threshold,toy_empty,toy_learned"  # toy_learned: 2-fold cross-validation
TIMING = {"images_per_second", "fit_seconds"}


def _refs(n_ok: int, n_nok: int) -> SampleSet:
    return SampleSet([SampleRef(f"img{i:03d}", "NOK" if i >= n_ok else "OK", lambda: None)
                      for i in range(n_ok + n_nok)])


def test_shards_partition_the_set_stratified_and_deterministic():
    samples = _refs(30, 11)
    shards = [Shard(k, 3).refs(samples) for k in (1, 2, 3)]
    ids = [r.id for s in shards for r in s]
    assert sorted(ids) == samples.ids  # a partition: every image in exactly one shard
    assert [sum(r.label == "NOK" for r in s) for s in shards] in ([4, 4, 3], [4, 3, 4], [3, 4, 4])
    assert [sum(r.label == "OK" for r in s) for s in shards] == [10, 10, 10]
    assert [r.id for r in Shard(2, 3).refs(samples)] == [r.id for r in shards[1]]  # same split every time
    assert [r.id for r in shards[0]] == sorted(r.id for r in shards[0])  # the set's order is kept
    assert shards[0] != samples.refs[:14]  # not simply the first images


@pytest.mark.parametrize("text", ["3/2", "0/2", "1-2", "a/b", "2/0"])
def test_a_bad_shard_is_one_line(text):
    with pytest.raises(ConfigError, match=f"--fm-shard={text}: expected K/N"):
        Shard.parse(text)


def merge_files(paths):
    return merge_shards([ShardFile(p, read_json(p)) for p in paths])


def _comparable(case: dict) -> dict:
    """A case without its timing figures, its thumbnails and its shard record."""
    case = {k: v for k, v in case.items() if k not in ("duration_s", "started", "thumbnails")}
    case["metrics"] = {k: v for k, v in case["metrics"].items() if k not in TIMING}
    case.pop("shard", None)
    return case


@pytest.mark.slow
def test_two_shards_merged_equal_the_unsharded_run(suite):
    run(suite, PIPELINES, "--fm-results=all.json")
    for k in (1, 2):
        run(suite, PIPELINES, f"--fm-shard={k}/2", f"--fm-results=shard{k}.json")
    whole = json.loads((suite.path / "all.json").read_text())
    shard1 = json.loads((suite.path / "shard1.json").read_text())
    assert shard1["config"]["shard"] == "1/2"
    assert all(len(c["images"]) == 5 and c["shard"]["shard"] == "1/2" for c in shard1["cases"])
    assert sum(i["label"] == "NOK" for i in shard1["cases"][0]["images"]) == 2  # stratified: 2 of 4 defectives

    code = main(["merge", str(suite.path / "shard2.json"), str(suite.path / "shard1.json"),
                 "--results", str(suite.path / "merged.json"), "--junitxml", str(suite.path / "merged.xml"),
                 "--report", str(suite.path / "merged.html"), "--baseline", str(suite.path / "all.json")])
    assert code == 1  # toy_empty misses every defect, as in the unsharded run
    merged = json.loads((suite.path / "merged.json").read_text())
    assert merged["config"]["merged_shards"] == 2
    assert {k: v for k, v in merged["config"].items() if k != "merged_shards"} == {
        k: v for k, v in whole["config"].items() if k != "merged_shards"}
    assert [c["id"] for c in merged["cases"]] == [c["id"] for c in whole["cases"]]
    assert "paired over 10 images" in merged["cases"][0]["baseline"]["message"]  # merge compared
    for got, want in zip(merged["cases"], whole["cases"], strict=True):
        got["baseline"] = None
        assert _comparable(got) == _comparable(want), got["id"]
    assert merged["cases"][0]["train_scores"]  # the risk table's operating point came along
    assert merged["cases"][0]["risk"]["recall_at_false_alarm_budget"] is not None
    junit = ET.parse(suite.path / "merged.xml")
    cases = junit.findall(".//testcase")
    assert [c.get("name") for c in cases] == [f"test_segmentation[{c['id']}]" for c in whole["cases"]]
    props = {p.get("name"): p.get("value") for p in cases[0].iter("property")}
    assert float(props["iou"]) == pytest.approx(whole["cases"][0]["metrics"]["iou"], abs=1e-6)
    assert [c.find("failure") is not None for c in cases] == [c["outcome"] == "failed" for c in whole["cases"]]
    assert "toy_threshold-toy" in (suite.path / "merged.html").read_text()

    paths = [suite.path / "shard1.json", suite.path / "shard2.json"]
    with pytest.raises(MergeError, match=r"incomplete shard set: 2/2 missing"):
        merge_files(paths[:1])
    with pytest.raises(MergeError, match=r"shard 1/2 given twice: .*shard1.json, .*shard1.json"):
        merge_files([paths[0], paths[0]])
    with pytest.raises(MergeError, match="not a shard's results"):
        merge_files([suite.path / "all.json", paths[0]])
    for edit, message in ((lambda d: d.update(git_commit="0" * 40), r"different code versions \(git commit\)"),
                          (lambda d: d["config"]["rules"]["thresholds"].update(f2=0.5), r"different configs \(thresholds\)"),
                          (lambda d: d["cases"][1].update(dataset_fingerprint="x"),
                           r"different datasets for case toy_empty-toy \(dataset_fingerprint\)")):
        data = json.loads(paths[1].read_text())
        edit(data)
        (suite.path / "edited.json").write_text(json.dumps(data))
        with pytest.raises(MergeError, match=message + r".*shard1.json, .*edited.json"):
            merge_files([paths[0], suite.path / "edited.json"])


def _shard(index: int, positions: list[int], n: int = 4) -> ShardFile:
    rows = [ImageResult(id=f"i{p}", sha256=str(p), label="NOK" if p % 2 else "OK", predicted="OK") for p in positions]
    case = CaseResult(id="a-b", pipeline="a", dataset="b", task="classification", images=rows,
                      shard=ShardSlice(f"{index}/2", n, tuple(positions)))
    return ShardFile(f"s{index}.json", RunResults(cases=[case], config=RunConfig(shard=f"{index}/2"), git_commit="c"))


def test_shards_whose_images_overlap_or_leave_gaps_are_refused():
    assert [i.id for i in merge_shards([_shard(2, [1, 2]), _shard(1, [0, 3])]).cases[0].images] == \
        ["i0", "i1", "i2", "i3"]  # back in the unsharded order
    with pytest.raises(MergeError, match="image i1 scored by two shards"):
        merge_shards([_shard(1, [0, 1]), _shard(2, [1, 2])])
    with pytest.raises(MergeError, match="1 of 4 images scored by no shard"):
        merge_shards([_shard(1, [0]), _shard(2, [1, 2])])


def test_shards_run_with_other_rules_or_code_are_refused():
    """Halves judged under different thresholds, resamples, tolerance or code cannot make one verdict."""
    from dataclasses import replace

    from fmtest.config.rules import RunRules

    rules = RunRules.from_summary({})
    edits = {"thresholds": lambda r: replace(r, thresholds={**r.thresholds, "f2": 0.5}),
             "bootstrap_resamples": lambda r: replace(r, bootstrap_resamples=r.bootstrap_resamples + 1),
             "baseline_tolerance": lambda r: replace(r, baseline_tolerance=r.baseline_tolerance + 0.01)}
    for key, edit in edits.items():
        first, second = _shard(1, [0, 3]), _shard(2, [1, 2])
        first.results.config.rules, second.results.config.rules = rules, edit(rules)
        with pytest.raises(MergeError, match=rf"different configs \({key}\): s1.json, s2.json"):
            merge_shards([first, second])
    other_code = _shard(2, [1, 2])
    other_code.results.git_commit = "d"
    with pytest.raises(MergeError, match=r"different code versions \(git commit\): c in s1.json, d in s2.json"):
        merge_shards([_shard(1, [0, 3]), other_code])


def _written(tmp_path, *shards: ShardFile) -> list:
    """Each shard finished as a run finishes it and written as its results file."""
    from fmtest.config.rules import RunRules
    from fmtest.report.results_file import write_json
    from fmtest.verdict.finish import evidence_of, finish_case

    paths = []
    for shard in shards:
        finished = [finish_case(evidence_of(c), RunRules.from_summary({})) for c in shard.results.cases]
        path = tmp_path / shard.path
        write_json(RunResults(cases=finished, config=shard.results.config, git_commit="c"), path)
        paths.append(path)
    return paths


def _edited(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_merge_says_in_one_line_what_is_wrong_with_a_file(tmp_path, capsys):
    first, second = _written(tmp_path, _shard(1, [0, 3]), _shard(2, [1, 2]))
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)) * 4)
    images = tmp_path / "images.json"
    images.write_text(second.read_text())
    _edited(images, lambda d: d["cases"][0]["images"].__setitem__(0, "not a row"))
    positions = tmp_path / "positions.json"
    positions.write_text(second.read_text())
    _edited(positions, lambda d: d["cases"][0]["shard"].update(positions=None))
    (tmp_path / "folder").mkdir()
    for inputs, output, message in (
            ([binary, second], "merged.json", f"{binary}: not a JSON results file (not UTF-8 text)"),
            ([first, images], "merged.json", f"{images}: malformed results: case 1 (a-b) (AttributeError: "),
            ([first, positions], "merged.json", f"{positions}: case 1 (a-b): its shard record (n_images, positions) "
                                                "is malformed"),
            ([first, second], "folder", f"--results: cannot write {tmp_path / 'folder'}: it is a folder")):
        code = main(["merge", *map(str, inputs), "--results", str(tmp_path / output)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"fmtest: error: {message}") and len(err.splitlines()) == 1, err


def test_a_shard_whose_summary_disagrees_with_its_rows_is_merged_from_the_rows_and_said_so(tmp_path, capsys):
    first, second = _written(tmp_path, _shard(1, [0, 3]), _shard(2, [1, 2]))
    args = ["merge", str(first), str(second), "--results", str(tmp_path / "merged.json")]
    main(args)
    assert "disagrees" not in capsys.readouterr().err  # shards as the run wrote them: nothing to say
    _edited(second, lambda d: d["cases"][0]["metrics"].update(n_images=9, recall=1.0))
    assert main(args) == 1  # the verdict of the rows: every answer OK, F2 0 misses its threshold
    err = capsys.readouterr().err
    assert f"fmtest: warning: {second}: case a-b: its summary disagrees with its own rows (" in err
    assert "n_images 9 recorded, 2 from the rows" in err and "recall 1.000 recorded, 0.000 from the rows" in err
    assert err.rstrip().endswith("the merge uses the rows")
    assert json.loads((tmp_path / "merged.json").read_text())["cases"][0]["metrics"]["n_images"] == 4


def test_a_merge_that_judged_nothing_fails_when_judging_is_required(tmp_path, capsys):
    first, second = _written(tmp_path, _shard(1, [0, 3]), _shard(2, [1, 2]))
    for path in (first, second):
        _edited(path, lambda d: d["cases"][0].update(outcome="skipped", message="no key", shard=None))
    args = ["merge", str(first), str(second), "--results", str(tmp_path / "merged.json")]
    assert main(args) == 0
    assert "NO CASE WAS JUDGED (1 case(s), none passed or failed a gate): --require-judged makes this merge fail" \
        in capsys.readouterr().out
    assert main([*args, "--require-judged"]) == 1
