"""`fmtest merge --store` keeps the merged run (a shard never is kept), and `--baseline` names a stored run."""

from __future__ import annotations

import json

from toy_fmtest import run_suite as run

from fmtest.cli import main
from fmtest.report.runs import list_runs


def test_merged_shards_are_kept_as_one_run(suite, capsys):
    run(suite, "--fm-pipeline=toy_threshold")
    for k in (1, 2):
        run(suite, "--fm-pipeline=toy_threshold", f"--fm-shard={k}/2", f"--fm-results=shard{k}.json")
    folder = suite.path / ".fmtest_runs"
    assert len(list_runs(folder)[0]) == 1  # the shards were not kept
    capsys.readouterr()
    assert main(["merge", "shard1.json", "shard2.json", "--results", "merged.json", "--baseline", "last",
                 "--store"]) == 0
    assert "run kept as " in capsys.readouterr().out
    runs, _ = list_runs(folder)
    assert len(runs) == 2 and runs[-1].merged_shards == 2
    (case,) = json.loads(runs[-1].path.read_text())["cases"]
    assert case["baseline"]["status"] == "compared"  # against the stored unsharded run
    assert main(["runs", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("merged from 2 shards")
