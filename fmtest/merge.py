"""`fmtest merge`: the partial results of a sharded run (`--fm-shard=K/N`) joined into one verdict.

Nothing a shard judged is kept: every metric, interval, breakdown, risk figure, threshold verdict and
baseline comparison is recomputed from the merged per-image rows, put back in the unsharded image
order (each shard records its images' positions), so the merged results equal an unsharded run's.
Shards of different configs, code versions or datasets, and a shard set with a shard missing or
given twice, are refused with one line naming the mismatch and the files.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from fmtest.errors import DataError
from fmtest.verdict.gates import judge
from fmtest.verdict.regression import baseline_failures
from fmtest.verdict.results import N_THUMBNAILS, CaseResult, ImageResult, RunResults, case_properties, read_json
from fmtest.verdict.scoring import badness, record_invalid_answers, risk_summary, score_case

SHARD_KEY = "shard"  # a shard's record, in the run's config and in each case's extra


class MergeError(DataError):
    """The files cannot be merged into one run: one line naming the mismatch and the files."""


@dataclass(frozen=True)
class ShardFile:
    path: Path
    results: RunResults

    @property
    def shard(self) -> tuple[int, int]:
        text = self.results.config.get(SHARD_KEY)
        try:
            index, count = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise MergeError(f"not a shard's results (config shard = {text!r}); run with --fm-shard=K/N",
                             self.path) from None
        return index, count


def merge_files(paths: list[Path], baseline: RunResults | None = None) -> RunResults:
    return merge_shards([ShardFile(Path(p), read_json(Path(p))) for p in paths], baseline)


def merge_shards(shards: list[ShardFile], baseline: RunResults | None = None) -> RunResults:
    """One run from its shards; `baseline`, when given, is compared against as the run would have."""
    _check_compatible(shards)
    config = {k: v for k, v in shards[0].results.config.items() if k != SHARD_KEY}
    first = shards[0].results
    cases = [merge_case([s.results.case(c.id) for s in shards], config, baseline) for c in first.cases]
    return RunResults(cases=cases, config={**config, SHARD_KEY: None, "merged_shards": len(shards)},
                      environment=first.environment, git_commit=first.git_commit,
                      fmtest_version=first.fmtest_version)


def _names(shards: list[ShardFile]) -> str:
    return ", ".join(str(s.path) for s in shards)


def _check_compatible(shards: list[ShardFile]) -> None:
    if not shards:
        raise MergeError("no results files to merge")
    by_index: dict[int, ShardFile] = {}
    counts = {s.shard[1] for s in shards}
    if len(counts) > 1:
        raise MergeError(f"shards of different splits (N = {sorted(counts)}): {_names(shards)}")
    (count,) = counts
    for s in shards:
        index = s.shard[0]
        if index in by_index:
            raise MergeError(f"shard {index}/{count} given twice: {by_index[index].path}, {s.path}")
        by_index[index] = s
        if s.results.interrupted or s.results.unfinished:
            raise MergeError(f"shard {index}/{count} did not finish (unfinished: {', '.join(s.results.unfinished)})",
                             s.path)
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in by_index]
    if missing:
        raise MergeError(f"incomplete shard set: {', '.join(missing)} missing from {_names(shards)}")
    head = shards[0]
    for s in shards[1:]:
        for what, a, b in (("code versions (fmtest_version)", head.results.fmtest_version, s.results.fmtest_version),
                           ("code versions (git commit)", head.results.git_commit, s.results.git_commit)):
            if a != b:
                raise MergeError(f"different {what}: {a} in {head.path}, {b} in {s.path}")
        for key in sorted(set(head.results.config) | set(s.results.config)):
            if key != SHARD_KEY and head.results.config.get(key) != s.results.config.get(key):
                raise MergeError(f"different configs ({key}): {head.path}, {s.path}")
        ids_a, ids_b = [c.id for c in head.results.cases], [c.id for c in s.results.cases]
        if sorted(ids_a) != sorted(ids_b):
            odd = sorted(set(ids_a) ^ set(ids_b))
            raise MergeError(f"different cases ({', '.join(odd)} in only one): {head.path}, {s.path}")
        for case in head.results.cases:
            other = s.results.case(case.id)
            for field in ("dataset_fingerprint", "config_fingerprint", "model_sha256", "thresholds"):
                if getattr(case, field) != getattr(other, field):
                    what = "datasets" if field == "dataset_fingerprint" else "configs"
                    raise MergeError(f"different {what} for case {case.id} ({field}): {head.path}, {s.path}")


def merge_case(parts: list[CaseResult], config: dict, baseline: RunResults | None) -> CaseResult:
    """One case from its shards, scored, judged and compared as `Evaluator.evaluate` does."""
    first = parts[0]
    if first.task == "robustness":
        raise MergeError(f"case {first.id}: robustness cases cannot be merged from shards; run them unsharded")
    unscored = next((p for p in parts if SHARD_KEY not in p.extra), None)
    if unscored is not None:  # skipped (weights missing) or errored before scoring in some shard
        return unscored
    images = _images_in_order(parts)
    segmentation = first.task == "segmentation" and any("iou" in p.metrics for p in parts)
    task = "segmentation" if segmentation else "classification"
    n_resamples, seed = int(config.get("bootstrap_resamples", 1000)), int(config.get("seed", 0))
    result = CaseResult(id=first.id, pipeline=first.pipeline, dataset=first.dataset, task=first.task, images=images,
                        model_sha256=first.model_sha256, config_fingerprint=first.config_fingerprint,
                        dataset_fingerprint=first.dataset_fingerprint, thresholds=dict(first.thresholds))
    score_case(result, task=task, n_resamples=n_resamples, seed=seed)
    predicted = sum(_cache(p)["predicted"] for p in parts)
    seconds = sum(_cache(p)["predicted"] / p.metrics["images_per_second"] for p in parts
                  if _cache(p)["predicted"] and _finite(p.metrics.get("images_per_second")))
    result.metrics["images_per_second"] = predicted / seconds if seconds else math.nan
    result.metrics["fit_seconds"] = sum(p.metrics.get("fit_seconds") or 0.0 for p in parts)
    result.extra["cache"] = {"hits": sum(_cache(p)["hits"] for p in parts), "predicted": predicted}
    record_invalid_answers(result)
    usage: dict[str, float] = {}
    for p in parts:
        for k, v in (p.extra.get("usage") or {}).items():
            usage[k] = usage.get(k, 0.0) + float(v)
    if usage:
        result.extra["usage"] = usage
    result.thumbnails = _worst_thumbnails(parts, images)
    result.duration_s = sum(p.duration_s or 0.0 for p in parts)
    train_scores = first.extra.get("train_scores")
    if train_scores is not None:
        result.extra["train_scores"] = train_scores
    risk = config.get("risk") or {}
    result.extra["risk"] = risk_summary(images, train_scores,
                                        target_slip_rate=float(risk.get("target_slip_rate", 0.01)),
                                        false_alarm_budget=float(risk.get("false_alarm_budget", 0.01)))
    if first.extra.get("data_quality"):
        result.extra["data_quality"] = first.extra["data_quality"]
    regression = []
    if baseline is not None:
        regression = baseline_failures(result, baseline, float(config.get("baseline_tolerance", 0.02)),
                                       n_resamples=n_resamples, seed=seed)
    return judge(result, regression)


def _images_in_order(parts: list[CaseResult]) -> list[ImageResult]:
    """The shards' rows at their recorded positions; a gap or an overlap means the shards do not fit."""
    n = int(parts[0].extra[SHARD_KEY]["n_images"])
    slots: list[ImageResult | None] = [None] * n
    for p in parts:
        record = p.extra[SHARD_KEY]
        if int(record["n_images"]) != n or len(record["positions"]) != len(p.images):
            raise MergeError(f"case {p.id}: shard {record['shard']} holds {len(p.images)} of "
                             f"{record['n_images']} images, another shard counts {n}: different datasets")
        for position, row in zip(record["positions"], p.images, strict=True):
            if slots[position] is not None:
                raise MergeError(f"case {p.id}: image {row.id} scored by two shards")
            slots[position] = row
    missing = [i for i, row in enumerate(slots) if row is None]
    if missing:
        raise MergeError(f"case {parts[0].id}: {len(missing)} of {n} images scored by no shard")
    return slots  # type: ignore[return-value]


def _worst_thumbnails(parts: list[CaseResult], images: list[ImageResult]) -> list:
    """The shards' thumbnails, worst first: wrong verdicts, then poor overlap (as evaluate ranks them)."""
    order = {row.id: (-badness(row.label, row.predicted, row.iou), i) for i, row in enumerate(images)}
    thumbnails = {t.id: t for p in parts for t in p.thumbnails if t.id in order}
    return sorted(thumbnails.values(), key=lambda t: order[t.id])[:N_THUMBNAILS]


def _cache(case: CaseResult) -> dict:
    return case.extra.get("cache") or {"hits": 0, "predicted": 0}


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


# -- JUnit ------------------------------------------------------------------------------------------
def junit_xml(results: RunResults) -> str:
    """One testcase per case, named as the suite's tests are, its figures as properties."""
    outcomes = [c.outcome for c in results.cases]
    suite = ET.Element("testsuite", name="fmtest", tests=str(len(outcomes)), failures=str(outcomes.count("failed")),
                       errors=str(outcomes.count("error")), skipped=str(outcomes.count("skipped")))
    for case in results.cases:
        test = f"test_{case.task}"
        element = ET.SubElement(suite, "testcase", classname=test, name=f"{test}[{case.id}]",
                                time=f"{case.duration_s or 0.0:.3f}")
        properties = ET.SubElement(element, "properties")
        for name, value in case_properties(case).items():
            ET.SubElement(properties, "property", name=name, value=str(value))
        tag = {"failed": "failure", "error": "error", "skipped": "skipped"}.get(case.outcome)
        if tag:
            ET.SubElement(element, tag, message=case.message or case.outcome)
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
