"""`fmtest merge`: the partial results of a sharded run (`--fm-shard=K/N`) joined into one verdict.

Nothing a shard judged is kept: the merged per-image rows, put back in the unsharded image order
(each shard records its images' positions), are finished by the one function a run finishes a case
with (`fmtest.verdict.finish.finish_case`), with the rules the run recorded, so every metric,
interval, breakdown, risk figure, threshold verdict and baseline comparison equals an unsharded
run's. A candidate-vs-current pair is compared again from its two merged cases.
Shards of different configs, code versions or datasets, and a shard set with a shard missing or
given twice, are refused with one line naming the mismatch and the files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from fmtest.config.rules import RunRules
from fmtest.data.sample import LABELS
from fmtest.errors import DataError
from fmtest.metrics.specs import format_value, spec
from fmtest.run.evaluate import CaseEvidence
from fmtest.verdict.finish import (
    evidence_of,
    finish_case,
    finish_comparison,
    merge_evidence,
)
from fmtest.verdict.results import (
    CaseResult,
    ImageResult,
    RunConfig,
    RunResults,
    to_plain,
)


class MergeError(DataError):
    """The files cannot be merged into one run: one line naming the mismatch and the files."""


@dataclass(frozen=True)
class ShardFile:
    path: Path
    results: RunResults

    @property
    def shard(self) -> tuple[int, int]:
        text = self.results.config.shard
        try:
            index, count = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise MergeError(f"not a shard's results (config shard = {text!r}); run with --fm-shard=K/N",
                             self.path) from None
        return index, count


def merge_shards(shards: list[ShardFile], baseline: RunResults | None = None) -> RunResults:
    """One run from its shards; `baseline`, when given, is compared against as the run would have."""
    for shard in shards:
        _check_shape(shard)
    _check_compatible(shards)
    first = shards[0].results
    rules = first.config.rules or RunRules.from_summary({}, shards[0].path)
    cases = []
    for case in first.cases:
        try:
            cases.append(merge_case([s.results.case(case.id) for s in shards], rules, baseline))
        except (TypeError, ValueError, AttributeError, KeyError) as e:  # a damaged file the checks let through
            raise MergeError(f"case {case.id} is malformed in one of {_names(shards)} ({type(e).__name__}: {e})") \
                from None
    return RunResults(cases=cases, config=replace(first.config, shard=None, merged_shards=len(shards)),
                      environment=first.environment, git_commit=first.git_commit, git_branch=first.git_branch,
                      fmtest_version=first.fmtest_version)


def _check_shape(shard: ShardFile) -> None:
    """Each case's rows and shard record have the types a run writes; else one line naming the file and case."""
    for index, case in enumerate(shard.results.cases, start=1):
        where = f"case {index} ({case.id})" if isinstance(case.id, str) else f"case {index}"
        if not isinstance(case.id, str) or not isinstance(case.task, str):
            raise MergeError(f"{where}: no id or task", shard.path)
        if not isinstance(case.images, list) or not all(isinstance(i, ImageResult) and isinstance(i.id, str)
                                                        and i.label in LABELS for i in case.images):
            raise MergeError(f"{where}: its images are not rows of id, label (OK/NOK) and answer", shard.path)
        record = case.shard
        if record is not None and not (_whole(record.n_images) and isinstance(record.positions, tuple)
                                       and all(_whole(p) for p in record.positions)):
            raise MergeError(f"{where}: its shard record (n_images, positions) is malformed", shard.path)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def shard_disagreements(shards: list[ShardFile]) -> list[str]:
    """Where a shard's recorded figures (counts, metrics) differ from what its own rows give: an edited or
    damaged file. The merge scores the rows whatever the summary says; these lines say so."""
    lines = []
    for shard in shards:
        rules = shard.results.config.rules or RunRules.from_summary({}, shard.path)
        for case in shard.results.cases:
            if case.shard is None or case.task in ("comparison", "robustness"):
                continue  # not scored in this shard: nothing recorded to check
            from_rows = finish_case(evidence_of(case), rules)
            differ = [f"{name} {_shown(case.metrics[name])} recorded, {_shown(value)} from the rows"
                      for name, value in from_rows.metrics.items() if name in case.metrics and _summary_figure(name)
                      and not _same(case.metrics[name], value)]
            if case.invalid_answers != from_rows.invalid_answers:
                differ.append(f"invalid_answers {case.invalid_answers} recorded, {from_rows.invalid_answers} from "
                              "the rows")
            if differ:
                lines.append(f"{shard.path}: case {case.id}: its summary disagrees with its own rows "
                             f"({'; '.join(differ)}); the merge uses the rows")
    return lines


def _summary_figure(name: str) -> bool:
    """A recorded figure the rows determine (not a timing)."""
    found = spec(name)
    return found is not None and found.kind not in ("throughput", "seconds")


def _same(recorded: object, computed: float) -> bool:
    if not isinstance(recorded, int | float) or isinstance(recorded, bool):
        return False
    if math.isnan(recorded) or math.isnan(computed):
        return math.isnan(recorded) and math.isnan(computed)
    return math.isclose(recorded, computed, rel_tol=1e-9, abs_tol=1e-12)


def _shown(value: object) -> str:
    return format_value(value) if value is not None else "none"


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
        for key in _config_differences(head.results.config, s.results.config):
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


def _config_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """What two shards' configs disagree on, the shard itself aside; the rules by their own keys."""
    plain_a, plain_b = to_plain(a), to_plain(b)
    found = []
    for key in plain_a:
        if key in ("shard", "merged_shards"):
            continue
        if key == "rules" and isinstance(plain_a[key], dict) and isinstance(plain_b[key], dict):
            found += [rule for rule in plain_a[key] if plain_a[key][rule] != plain_b[key].get(rule)]
        elif plain_a[key] != plain_b[key]:
            found.append(key)
    return found


def merge_case(parts: list[CaseResult], rules: RunRules, baseline: RunResults | None) -> CaseResult:
    """One case from its shards, finished as the unsharded run finishes it."""
    first = parts[0]
    if first.task == "comparison":
        return _merge_comparison(parts, rules)
    if first.task == "robustness":  # refused when a shard starts; a file from elsewhere is refused here
        raise MergeError(f"case {first.id}: robustness cases are not sharded; run them unsharded")
    unscored = next((p for p in parts if p.shard is None), None)
    if unscored is not None:  # skipped (weights missing) or errored before scoring in some shard
        return unscored
    return finish_case(merge_evidence([evidence_of(p) for p in parts], _images_in_order), rules, baseline)


def _merge_comparison(parts: list[CaseResult], rules: RunRules) -> CaseResult:
    """A pair compared again from its candidate's and its reference's merged cases (each shard carries both)."""
    unmerged = next((p for p in parts if p.shard_sides is None), None)
    if unmerged is not None:  # skipped (a pipeline cannot run) or errored before comparing in some shard
        return unmerged
    sides = []
    for side in ("candidate", "reference"):
        cases = [getattr(p.shard_sides, side) for p in parts]
        if any(c.shard is None for c in cases):  # could not be scored: the pair errors as the run's did
            return parts[0]
        sides.append(finish_case(merge_evidence([evidence_of(c) for c in cases], _images_in_order), rules))
    candidate, reference = sides
    compare = rules.compare.get(candidate.pipeline)
    if compare is None:
        raise MergeError(f"case {parts[0].id}: the shards' config has no [compare.{candidate.pipeline}]")
    return finish_comparison(candidate, reference, compare, rules)


def _images_in_order(parts: list[CaseEvidence]) -> list[ImageResult]:
    """The shards' rows at their recorded positions; a gap or an overlap means the shards do not fit."""
    n = parts[0].shard.n_images
    slots: list[ImageResult | None] = [None] * n
    for p in parts:
        record = p.shard
        if record.n_images != n or len(record.positions) != len(p.images):
            raise MergeError(f"case {p.id}: shard {record.shard} holds {len(p.images)} of "
                             f"{record.n_images} images, another shard counts {n}: different datasets")
        for position, row in zip(record.positions, p.images, strict=True):
            if not 0 <= position < n or slots[position] is not None:
                raise MergeError(f"case {p.id}: image {row.id} scored by two shards")
            slots[position] = row
    missing = [i for i, row in enumerate(slots) if row is None]
    if missing:
        raise MergeError(f"case {parts[0].id}: {len(missing)} of {n} images scored by no shard")
    return slots  # type: ignore[return-value]
