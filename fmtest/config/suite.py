"""The suite config (`fmtest.toml` beside the suites): thresholds, pipelines and their variants,
datasets, prompts, and the settings of every gate.

The whole file is checked against one schema (`fmtest.config.schema`) when it loads, before any
case runs: a key nobody reads, a value of the wrong type or range, a case id or a name that does not
exist is one line naming the table, the key and what is accepted. Pipeline and dataset tables are
checked by the pipeline and dataset classes themselves (`read_options`), so an unknown option
fails at load time, not when its case runs.

Pipelines come from three places: built-in, installed through the entry-point group
`fmtest.pipelines`, or defined here: `[pipelines.<name>] uses = "<pipeline>"` is a variant (its
base's settings with this table's on top) and `class = "module:Class"` is the user's own class,
imported with the config's folder on `sys.path`. Datasets likewise (`fmtest.datasets`, `class`).
Options and prompts can be set per dataset (`[pipelines.<name>.per_dataset.<dataset>]`) and per
dataset group (`[pipelines.<name>.per_group."<dataset>/<group>"]`); `pipeline_options` and
`prompt_for` give the effective value for one group, and `fmtest config --case` prints them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import re
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fmtest.config import schema
from fmtest.config.rules import CompareRules, RegionRules, RiskRules, RunRules
from fmtest.data import Dataset, dataset_class, known_datasets, load_dataset
from fmtest.data.departures import Departure
from fmtest.errors import ConfigError
from fmtest.metrics.specs import METRICS
from fmtest.pipelines import (
    Pipeline,
    Task,
    known_pipelines,
    load_pipeline,
    pipeline_class,
    pipeline_task,
)
from fmtest.pipelines.base import PipelineContext
from fmtest.util.extensions import named, unknown_name
from fmtest.util.redact import redact_option

DEFAULT_PROMPT = "defect"
DEFAULT_PROMPTS = {"industrialsat": "defect", "mvtec": "defect", "oxford_pets": "cat", "satsim": "defect",
                   "elpv": "defect", "folder": "defect"}
RUN_OPTIONS = tuple(s.key for s in schema.RUN_SETTINGS)  # settable at top level; the command line wins
ENTRY_KEYS = ("uses", "class", "per_dataset", "per_group")  # keys of [pipelines.<name>] that are no option


@dataclass(frozen=True)
class PipelineEntry:
    """One `[pipelines.<name>]` table: its options, its per-dataset and per-group layers, where its class is."""

    name: str
    options: dict[str, object]
    per_dataset: dict[str, dict[str, object]] = field(default_factory=dict)
    per_group: dict[str, dict[str, object]] = field(default_factory=dict)  # "<dataset>/<group>" -> layer
    uses: str | None = None
    class_path: str | None = None


@dataclass(frozen=True)
class Layer:
    """Settings from one table, for one pipeline on one dataset group; later layers win."""

    where: str
    values: dict[str, object]


@dataclass
class SuiteConfig:
    path: Path | None = None
    default_datasets: list[str] = field(default_factory=lambda: list(schema.TOP.setting("default_datasets").default))
    default_pipelines: list[str] | None = None  # None: every pipeline that applies
    thresholds: dict[str, float] = field(default_factory=lambda: schema.THRESHOLDS.check({}, "[thresholds]", None))
    case_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline_tolerance: float = schema.BASELINE.setting("tolerance").default
    pipelines: dict[str, dict] = field(default_factory=dict)  # each table's own options, for the results JSON
    datasets: dict[str, dict] = field(default_factory=dict)  # each dataset's options
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    robustness: dict = field(default_factory=lambda: schema.ROBUSTNESS.check({}, "[robustness]", None))
    risk: dict = field(default_factory=lambda: schema.RISK.check({}, "[risk]", None))
    regions: dict = field(default_factory=lambda: schema.REGIONS.check({}, "[regions]", None))
    guardrails: dict = field(default_factory=lambda: schema.GUARDRAILS.check({}, "[guardrails]", None))
    file_settings: dict[str, dict[str, object]] = field(default_factory=dict)  # table -> the keys the file sets
    # that a command-line option also sets (fmtest.config.settings resolves which wins)
    bootstrap_resamples: int = schema.TOP.setting("bootstrap_resamples").default
    seed: int = schema.TOP.setting("seed").default
    history_url: str | None = None
    compare: dict[str, CompareRules] = field(default_factory=dict)
    study_results: dict[str, dict[str, float]] = field(default_factory=dict)  # case id -> metric -> published
    study_cases: list[str] | None = None  # [study] cases: the published grid; None: every applicable case
    pipeline_entries: dict[str, PipelineEntry] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    _pipeline_classes: dict[str, type[Pipeline]] = field(default_factory=dict, repr=False)
    _dataset_classes: dict[str, type[Dataset]] = field(default_factory=dict, repr=False)

    @property
    def directory(self) -> Path:
        return self.path.parent if self.path else Path(".")

    def resolve_path(self, value: str | Path) -> Path:
        """Paths in the config file are relative to the file; on the command line, to the cwd."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.directory / p

    # ---- what exists: built-in, installed, and defined in this file

    def pipeline_names(self) -> list[str]:
        return [*known_pipelines(), *(n for n in self._pipeline_classes if n not in known_pipelines())]

    def dataset_names(self) -> list[str]:
        return [*known_datasets(), *(n for n in self._dataset_classes if n not in known_datasets())]

    def pipeline_class(self, name: str) -> type[Pipeline]:
        """The class a pipeline name runs: a variant is its base class under the variant's name."""
        if name in self._pipeline_classes:
            return self._pipeline_classes[name]
        if name not in self.pipeline_names():
            raise ConfigError(unknown_name("pipeline", name, self.pipeline_names()))
        return pipeline_class(name)

    def pipeline_task(self, name: str) -> Task:
        return self._pipeline_classes[name].task if name in self._pipeline_classes else pipeline_task(name)

    def dataset_class(self, name: str) -> type[Dataset]:
        if name in self._dataset_classes:
            return self._dataset_classes[name]
        if name not in self.dataset_names():
            raise ConfigError(unknown_name("dataset", name, self.dataset_names()))
        return dataset_class(name)

    def check_selection(self, datasets: Sequence[str], pipelines: Sequence[str]) -> None:
        """Refuse a dataset or pipeline name a run was asked for (--fm-dataset, --fm-pipeline) that does not exist."""
        for option, names, known, kind in (("--fm-dataset", datasets, self.dataset_names(), "dataset"),
                                           ("--fm-pipeline", pipelines, self.pipeline_names(), "pipeline")):
            for name in names:
                if name not in known:
                    raise ConfigError(f"{option}: {unknown_name(kind, name, known)}")

    def case_ids(self) -> dict[str, tuple[str, str]]:
        """Every `<pipeline>-<dataset>` this config can run -> (pipeline, dataset)."""
        return {f"{p}-{d}": (p, d) for p in self.pipeline_names() for d in self.dataset_names()}

    def split_case_id(self, case_id: str, where: str) -> tuple[str, str]:
        """(pipeline, dataset) of a case id, or one line naming `where` it was written and the close match."""
        cases = self.case_ids()
        if case_id not in cases:
            hint = difflib.get_close_matches(case_id, list(cases), n=1)
            raise ConfigError(f"{where}: unknown case {case_id!r}{f' (did you mean {hint[0]}?)' if hint else ''}; "
                              f"a case is <pipeline>-<dataset>, pipelines: {', '.join(self.pipeline_names())}; "
                              f"datasets: {', '.join(self.dataset_names())}", self.path)
        return cases[case_id]

    @property
    def rules(self) -> RunRules:
        """What every verdict of a run depends on besides the measured rows (recorded in the results)."""
        return RunRules(thresholds=dict(self.thresholds), case_thresholds=dict(self.case_thresholds),
                        bootstrap_resamples=self.bootstrap_resamples, seed=self.seed,
                        baseline_tolerance=self.baseline_tolerance, risk=RiskRules.from_table(self.risk, self.path),
                        compare=dict(self.compare), study_results=dict(self.study_results),
                        regions=RegionRules.from_table(self.regions, self.path))

    # ---- the settings of one case

    def thresholds_for(self, case_id: str, metrics: list[str] | None = None) -> dict[str, float]:
        """Thresholds a case is held to: defaults, then the case's overrides, restricted to `metrics`."""
        merged = {**self.thresholds, **self.case_thresholds.get(case_id, {})}
        if metrics is not None:
            merged = {k: v for k, v in merged.items() if k in metrics}
        return merged

    def layers(self, pipeline: str, dataset: str | None = None, group: str | None = None) -> list[Layer]:
        """The tables that set a pipeline's options on a dataset group, least specific first.

        A variant's layers follow all of its base's: the variant's own table beats even the base's
        per-group settings, since the variant was defined to differ from its base.
        """
        entry = self.pipeline_entries.get(pipeline)
        if entry is None:
            return []
        layers = self.layers(entry.uses, dataset, group) if entry.uses else []
        layers.append(Layer(f"[pipelines.{pipeline}]", entry.options))
        if dataset is not None and dataset in entry.per_dataset:
            layers.append(Layer(f"[pipelines.{pipeline}.per_dataset.{dataset}]", entry.per_dataset[dataset]))
        key = f"{dataset}/{group}"
        if group is not None and key in entry.per_group:
            layers.append(Layer(f'[pipelines.{pipeline}.per_group."{key}"]', entry.per_group[key]))
        return layers

    def pipeline_options(self, pipeline: str, dataset: str, group: str | None = None) -> dict[str, object]:
        """The options a pipeline runs with on a dataset (group): what its PipelineContext gets."""
        merged: dict[str, object] = {}
        for layer in self.layers(pipeline, dataset, group):
            merged.update({k: v for k, v in layer.values.items() if k != "prompt"})
        return merged

    def prompt_for(self, dataset: str, group: str | None = None, pipeline: str | None = None) -> str:
        """The prompt: the pipeline's per-group, then per-dataset setting, then `[prompts]` for the
        group, then for the dataset, then "defect"."""
        for layer in reversed(self.layers(pipeline, dataset, group) if pipeline else []):
            if "prompt" in layer.values:
                return str(layer.values["prompt"])
        if group is not None and f"{dataset}/{group}" in self.prompts:
            return self.prompts[f"{dataset}/{group}"]
        return self.prompts.get(dataset, DEFAULT_PROMPT)

    def case_departures(self, pipeline: str, dataset: str, weights_dir: Path | None = None) -> tuple[Departure, ...]:
        """How a case departs from the study's run of it, for this config's settings: the pipeline's departures over
        every group of the dataset, then the dataset's. `weights_dir` decides what runs where a file may be missing
        (the supervised reference's ResNet-50). Loads no model and reads no data."""
        pipeline_class = self.pipeline_class(pipeline)
        dataset_class = self.dataset_class(dataset)
        dataset_options = self.datasets.get(dataset, {})
        found: list[Departure] = []
        for group in dataset_class.group_names(dataset_options):
            context = PipelineContext(dataset=dataset, group=group, options=self.pipeline_options(pipeline, dataset, group),
                                      weights_dir=weights_dir, prompt=self.prompt_for(dataset, group, pipeline),
                                      suite_dir=self.directory)
            found += [d for d in pipeline_class.departures(context) if d not in found]
        return (*found, *dataset_class.departures(dataset_options))

    def effective_options(self, pipeline: str, dataset: str) -> dict[str, object]:
        """Every option a pipeline runs with on a dataset, its defaults and what a variant inherits from its base
        included, secrets hidden: what a case records of its settings (`fmtest config --case` shows them with
        their sources). Options a pipeline sets per group (SAA+'s prompts) are the dataset's, not a group's."""
        given = self.pipeline_options(pipeline, dataset)
        parsed = self.pipeline_class(pipeline).options_for(PipelineContext(dataset=dataset, options=given))
        return {k: redact_option(k, v) for k, v in _with_defaults(parsed, given).items()}

    def guardrails_for(self, dataset: str) -> dict[str, object]:
        """`[guardrails]` with the dataset's own `[guardrails.<dataset>]` on top."""
        return {**{k: v for k, v in self.guardrails.items() if not isinstance(v, dict)},
                **self.guardrails.get(dataset, {})}

    def check_groups(self, dataset: str, groups: Sequence[str]) -> None:
        """Refuse settings for a group the opened dataset does not have (known only once it is open)."""
        wheres = [(f'[prompts] "{k}"', k) for k in self.prompts]
        wheres += [(f'[pipelines.{e.name}.per_group."{k}"]', k) for e in self.pipeline_entries.values()
                   for k in e.per_group]
        for where, key in wheres:
            name, _, group = key.partition("/")
            if name == dataset and group and group not in groups:
                raise ConfigError(f"{where}: {unknown_name(f'group of {dataset}', group, list(groups))}", self.path)

    def effective_settings(self, case_id: str, group: str | None = None) -> str:
        """A case's settings as TOML, every option with its default, each commented with its source."""
        pipeline, dataset = self.split_case_id(case_id, "--case")
        cls = self.pipeline_class(pipeline)
        layers = self.layers(pipeline, dataset, group)
        given = self.pipeline_options(pipeline, dataset, group)
        from_table = _with_defaults(cls.read_options(given), given)
        options = _with_defaults(cls.options_for(PipelineContext(dataset=dataset, group=group, options=given)), given)
        given_dataset = self.datasets.get(dataset, {})
        dataset_options = _with_defaults(self.dataset_class(dataset).read_options(given_dataset), given_dataset)

        def source(key: str) -> str:
            if options.get(key) is None and from_table.get(key) is not None:
                return f"not used by {pipeline} with these settings"
            if options.get(key) != from_table.get(key):
                return f"set by {pipeline} for {dataset}{f'/{group}' if group else ''}"
            return next((layer.where for layer in reversed(layers) if key in layer.values), "default")

        chain, entry = [], self.pipeline_entries.get(pipeline)
        while entry is not None and entry.uses:
            chain.append(entry.uses)
            entry = self.pipeline_entries.get(entry.uses)
        head = [("case", case_id, None), ("pipeline", pipeline, None),
                ("uses", " -> ".join(chain), "variant of") if chain else None,
                ("class", f"{cls.__module__}:{cls.__qualname__.split('[')[0]}", None),
                ("dataset", dataset, None), ("group", group, None) if group else None,
                ("prompt", self.prompt_for(dataset, group, pipeline), source("prompt") if source("prompt") != "default"
                 else "[prompts]")]
        sections = [(None, [row for row in head if row]),
                    ("thresholds", [(k, v, None) for k, v in self.thresholds_for(case_id).items()]),
                    ("pipeline_options", [(k, redact_option(k, v), source(k)) for k, v in options.items()]),
                    ("dataset_options", [(k, v, None if k in given_dataset else "default")
                                         for k, v in dataset_options.items()])]
        if case_id in self.study_results:
            sections.append(("study_results", [(k, v, None) for k, v in self.study_results[case_id].items()]))
        where = f"config {self.path}" if self.path else "built-in defaults (no config file)"
        return f"# effective settings of case {case_id}{f', group {group}' if group else ''}; {where}\n" + \
            to_toml(sections)


def _with_defaults(parsed: object, given: dict[str, object]) -> dict[str, object]:
    """Every option of a parsed options dataclass; what was given when the class keeps no dataclass."""
    return dataclasses.asdict(parsed) if dataclasses.is_dataclass(parsed) else dict(given)


# --------------------------------------------------------------------------- finding and loading


def load_config(path: Path | None) -> SuiteConfig:
    """Read and check a suite config; None means the built-in defaults."""
    if path is None:
        return parse_config({})
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("suite config not found", path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e.reason} at byte {e.start}", path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path) from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: Path | None = None) -> SuiteConfig:
    """Check every table of `raw` against the schema and build the SuiteConfig."""
    cfg = SuiteConfig(path=path.resolve() if path else None, raw=raw)
    where = cfg.path
    for key in raw:
        home = next((t.name for t in schema.SCHEMA if t.name and t is not schema.COMMAND_LINE and t.setting(key)),
                    None)
        if schema.TOP.setting(key) is None and home is not None:
            raise ConfigError(f"{key}: not a top-level key; it belongs in {home}", where)
    top = schema.TOP.check(raw, "", where)
    _parse_datasets(cfg, top.get("datasets", {}))
    _parse_pipelines(cfg, top.get("pipelines", {}))
    cfg.default_datasets = _names(top["default_datasets"], "default_datasets", cfg.dataset_names(), "dataset", where)
    if "default_pipelines" in top:
        cfg.default_pipelines = _names(top["default_pipelines"], "default_pipelines", cfg.pipeline_names(),
                                       "pipeline", where)
    run = {k: top[k] for k in RUN_OPTIONS if k in raw}
    for key, known, kind in (("dataset", cfg.dataset_names(), "dataset"), ("pipeline", cfg.pipeline_names(), "pipeline")):
        if key in run:
            run[key] = _names([n.strip() for v in run[key] for n in v.split(",") if n.strip()], key, known, kind, where)
    cfg.bootstrap_resamples, cfg.seed = top["bootstrap_resamples"], top["seed"]
    cfg.history_url = top.get("history_url")
    _parse_thresholds(cfg, top.get("thresholds", {}))
    baseline = schema.BASELINE.check(top.get("baseline", {}), "[baseline]", where)
    cfg.baseline_tolerance = baseline["tolerance"]
    _parse_prompts(cfg, top.get("prompts", {}))
    cfg.risk = schema.RISK.check(top.get("risk", {}), "[risk]", where)
    cfg.regions = schema.REGIONS.check(top.get("regions", {}), "[regions]", where)
    cfg.robustness = _parse_robustness(top.get("robustness", {}), where)
    cfg.guardrails = _parse_guardrails(cfg, top.get("guardrails", {}))
    _parse_compare(cfg, top.get("compare", {}))
    _parse_study(cfg, top.get("study", {}))
    cfg.file_settings = {
        schema.TOP.name: run,
        schema.BASELINE.name: {k: v for k, v in baseline.items() if k in top.get("baseline", {})},
        schema.MLFLOW.name: schema.MLFLOW.check(top.get("mlflow", {}), "[mlflow]", where, fill=False),
        schema.EXECUTOR.name: schema.EXECUTOR.check(top.get("executor", {}), "[executor]", where, fill=False),
    }
    return cfg


def _names(values: list[str], key: str, known: list[str], kind: str, path) -> list[str]:
    for name in values:
        if name not in known:
            raise ConfigError(f"{key}: {unknown_name(kind, name, known)}", path)
    return values


def _check_name(where: str, name: str, known: list[str], kind: str, path) -> None:
    if name not in known:
        raise ConfigError(f"{where}: {unknown_name(kind, name, known)}", path)


@contextlib.contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    """The suite folder on sys.path while a plugin named by `class` is imported, and only then."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _parse_datasets(cfg: SuiteConfig, tables: dict) -> None:
    """Every `[datasets.<name>]`: a built-in or installed dataset's options, the user's class (`class`), or a
    dataset of a built-in, installed or user kind under a name of its own (`uses`, e.g. a labelling tool's
    export, with this table's options); `uses` entries last, so they may name a class defined anywhere."""
    builtin = known_datasets()
    for name, table in tables.items():
        schema.check_value(schema.TABLE, table, "[datasets]", name, cfg.path)
    for name, table in [*((n, t) for n, t in tables.items() if "uses" not in t),
                        *((n, t) for n, t in tables.items() if "uses" in t)]:
        where = f"[datasets.{name}]"
        options = {k: v for k, v in table.items() if k not in ("class", "uses")}
        if "class" in table and "uses" in table:
            raise ConfigError(f"{where}: set uses (a dataset of that kind) or class (your own dataset), not both",
                              cfg.path)
        if "class" in table:
            spec = schema.check_value(schema.CLASS_PATH, table["class"], where, "class", cfg.path)
            if name in builtin:
                raise ConfigError(f"{where} class: {name} is a built-in or installed dataset; give yours "
                                  "another name", cfg.path)
            with _importable_from(cfg.directory):
                cfg._dataset_classes[name] = load_dataset(spec, name, f"{where} class = \"{spec}\"")
        elif "uses" in table:
            base = schema.check_value(schema.STRING, table["uses"], where, "uses", cfg.path)
            if name in builtin:
                raise ConfigError(f"{where} uses: {name} is a built-in or installed dataset; give yours another "
                                  "name", cfg.path)
            kinds = [*builtin, *(n for n, t in tables.items() if "class" in t)]
            _check_name(f"{where} uses", base, kinds, "dataset", cfg.path)
            cfg._dataset_classes[name] = named(cfg.dataset_class(base), name)
        elif name not in builtin:
            raise ConfigError(f"{where}: {unknown_name('dataset', name, builtin)}; for your own dataset set class = "
                              "\"module:Class\", for a named dataset of a known kind uses = \"<dataset>\"", cfg.path)
        _restated(where, cfg.path, cfg.dataset_class(name).read_options, options)
        cfg.datasets[name] = options


def _parse_pipelines(cfg: SuiteConfig, tables: dict) -> None:
    """Every `[pipelines.<name>]`: entries first (so variants may name each other), then classes, then options."""
    builtin = known_pipelines()
    for name, table in tables.items():
        schema.check_value(schema.TABLE, table, "[pipelines]", name, cfg.path)
        cfg.pipeline_entries[name] = _pipeline_entry(cfg, name, table, builtin)
        cfg.pipelines[name] = cfg.pipeline_entries[name].options
    for name in cfg.pipeline_entries:
        _resolve_pipeline(cfg, name, builtin, ())
    checked: set[str] = set()
    for name in cfg.pipeline_entries:
        _check_pipeline_options(cfg, name, checked)


def _check_pipeline_options(cfg: SuiteConfig, name: str, checked: set[str]) -> None:
    """The pipeline's own check on every combination of layers this config makes, bases before variants,
    so an error names the table that introduced it."""
    entry = cfg.pipeline_entries.get(name)
    if entry is None or name in checked:
        return
    if entry.uses:
        _check_pipeline_options(cfg, entry.uses, checked)
    contexts = [(None, None)] + [(d, None) for d in _chain_keys(cfg, name, "per_dataset")]
    contexts += [(key.partition("/")[0], key.partition("/")[2]) for key in _chain_keys(cfg, name, "per_group")]
    cls = cfg.pipeline_class(name)
    for dataset, group in contexts:
        options = cfg.pipeline_options(name, dataset, group)
        _restated(cfg.layers(name, dataset, group)[-1].where, cfg.path, cls.read_options, options)
    checked.add(name)


def _pipeline_entry(cfg: SuiteConfig, name: str, table: dict, builtin: list[str]) -> PipelineEntry:
    where = f"[pipelines.{name}]"
    if "uses" in table and "class" in table:
        raise ConfigError(f"{where}: set uses (a variant) or class (your own pipeline), not both", cfg.path)
    uses = table.get("uses")
    if uses is not None:
        schema.check_value(schema.STRING, uses, where, "uses", cfg.path)
    class_path = table.get("class")
    if class_path is not None:
        schema.check_value(schema.CLASS_PATH, class_path, where, "class", cfg.path)
    if (uses or class_path) and name in builtin:
        raise ConfigError(f"{where} {'uses' if uses else 'class'}: {name} is a built-in or installed pipeline; "
                          "give the variant or your pipeline another name", cfg.path)
    if not (uses or class_path) and name not in builtin:
        raise ConfigError(f"{where}: {unknown_name('pipeline', name, builtin)}; for a variant set uses = "
                          "\"<pipeline>\", for your own class set class = \"module:Class\"", cfg.path)
    options = {k: v for k, v in table.items() if k not in ENTRY_KEYS}
    if "prompt" in options:
        raise ConfigError(f"{where} prompt: a prompt is set per dataset: [prompts] <dataset> = \"...\" or "
                          f"[pipelines.{name}.per_dataset.<dataset>] prompt = \"...\"", cfg.path)
    per_dataset = _layer_tables(cfg, table.get("per_dataset", {}), f"{where[:-1]}.per_dataset", False)
    per_group = _layer_tables(cfg, table.get("per_group", {}), f"{where[:-1]}.per_group", True)
    return PipelineEntry(name, options, per_dataset, per_group, uses, class_path)


def _layer_tables(cfg: SuiteConfig, tables: object, where: str, grouped: bool) -> dict[str, dict]:
    """Per-dataset (`<dataset>`) or per-group (`"<dataset>/<group>"`) tables of a pipeline, their prompts checked."""
    schema.check_value(schema.TABLE, tables, where + "]", "", cfg.path)
    layers = {}
    for key, layer in tables.items():
        dataset, slash, group = key.partition("/")
        if grouped and not (slash and dataset and group):
            raise ConfigError(f'{where}."{key}"]: name the group as "<dataset>/<group>", e.g. "mvtec/carpet"', cfg.path)
        if not grouped and slash:
            raise ConfigError(f'{where}."{key}"]: a group goes in {where.replace("per_dataset", "per_group")}."{key}"]',
                              cfg.path)
        _check_name(f"{where}.{key}]" if not grouped else f'{where}."{key}"]', dataset, cfg.dataset_names(),
                    "dataset", cfg.path)
        table_name = f'{where}."{key}"]' if grouped else f"{where}.{key}]"
        schema.check_value(schema.TABLE, layer, table_name, "", cfg.path)
        if "prompt" in layer:
            schema.check_value(schema.STRING, layer["prompt"], table_name, "prompt", cfg.path)
        layers[key] = dict(layer)
    return layers


def _resolve_pipeline(cfg: SuiteConfig, name: str, builtin: list[str], seen: tuple[str, ...]) -> None:
    """The class of a variant (its base's, renamed) or of a user's pipeline (imported); built-ins stay lazy."""
    if name in cfg._pipeline_classes or name not in cfg.pipeline_entries:
        return
    entry = cfg.pipeline_entries[name]
    where = f"[pipelines.{name}]"
    if entry.class_path:
        with _importable_from(cfg.directory):
            cfg._pipeline_classes[name] = load_pipeline(entry.class_path, name, f"{where} class = \"{entry.class_path}\"")
    elif entry.uses:
        if entry.uses in seen or entry.uses == name:
            raise ConfigError(f"{where} uses: variants name each other in a circle: "
                              f"{' -> '.join((*seen, name, entry.uses))}", cfg.path)
        known = [*builtin, *(n for n in cfg.pipeline_entries if n not in builtin)]
        _check_name(f"{where} uses", entry.uses, known, "pipeline", cfg.path)
        _resolve_pipeline(cfg, entry.uses, builtin, (*seen, name))
        cfg._pipeline_classes[name] = named(cfg.pipeline_class(entry.uses), name)


def _chain_keys(cfg: SuiteConfig, name: str, attribute: str) -> list[str]:
    """Per-dataset or per-group keys of a pipeline and of every pipeline it is a variant of."""
    keys, entry = [], cfg.pipeline_entries.get(name)
    while entry is not None:
        keys += [k for k in getattr(entry, attribute) if k not in keys]
        entry = cfg.pipeline_entries.get(entry.uses) if entry.uses else None
    return keys


def _restated(where: str, path, check, *args) -> None:
    """Run a pipeline's or dataset's own option check; its error names the table the setting is in."""
    try:
        check(*args)
    except ConfigError as e:
        message = str(e).removeprefix(f"{e.path}: ") if e.path is not None else str(e)
        raise ConfigError(f"{where}: {message}" if not message.startswith(where) else message, path) from None


def _parse_thresholds(cfg: SuiteConfig, table: dict) -> None:
    defaults = {k: v for k, v in table.items() if not isinstance(v, dict)}
    cfg.thresholds = schema.THRESHOLDS.check(defaults, "[thresholds]", cfg.path)
    for case_id, overrides in table.items():
        if isinstance(overrides, dict):
            cfg.split_case_id(case_id, f'[thresholds."{case_id}"]')
            cfg.case_thresholds[case_id] = schema.CASE_THRESHOLDS.check(overrides, f'[thresholds."{case_id}"]',
                                                                        cfg.path, fill=False)


def _parse_prompts(cfg: SuiteConfig, table: dict) -> None:
    schema.check_value(schema.TABLE, table, "", "prompts", cfg.path)
    for key, prompt in table.items():
        dataset, slash, group = key.partition("/")
        _check_name(f'[prompts] "{key}"' if slash else f"[prompts] {key}", dataset, cfg.dataset_names(), "dataset",
                    cfg.path)
        if slash and not group:
            raise ConfigError(f'[prompts] "{key}": name the group as "<dataset>/<group>"', cfg.path)
        cfg.prompts[key] = schema.check_value(schema.STRING, prompt, "[prompts]", key, cfg.path)


def _parse_robustness(table: dict, path) -> dict:
    checked = schema.ROBUSTNESS.check(table, "[robustness]", path)
    if "n_images" in checked:
        floor = robustness_floor(checked["max_flip_rate"])
        if checked["n_images"] < floor:
            n = checked["n_images"]
            raise ConfigError(f"[robustness] n_images = {n}: too few images to judge; one flipped verdict would be "
                              f"{1 / n:.1%}, above max_flip_rate {checked['max_flip_rate']:.1%}, so the gate could "
                              f"tolerate no flip; at least {floor} (a stratified subset: good and defective images)",
                              path)
    ladders = checked.pop("ladders", None)
    if "perturbations" not in checked and ladders is None:
        return checked
    from fmtest.imaging.perturb import PERTURBATIONS
    from fmtest.imaging.perturb import ladders as checked_ladders

    for name in checked.get("perturbations", []):
        _check_name("[robustness] perturbations", name, list(PERTURBATIONS), "perturbation", path)
    if ladders is not None:
        for name, levels in ladders.items():
            _check_name("[robustness.ladders]", name, list(PERTURBATIONS), "perturbation", path)
            schema.check_value(schema.NUMBERS, levels, "[robustness.ladders]", name, path)
        _restated("[robustness.ladders]", path, checked_ladders, ladders)
        checked["ladders"] = ladders
    return checked


def robustness_floor(max_flip_rate: float) -> int:
    """The fewest images a robustness subset may have: one of each label, and enough that a single flipped verdict
    is within `max_flip_rate` (fewer, and the tolerance the config sets could not be met by any flip)."""
    return max(2, math.ceil(1 / max_flip_rate - 1e-9)) if max_flip_rate > 0 else 2


def _parse_guardrails(cfg: SuiteConfig, table: dict) -> dict:
    datasets = {k: v for k, v in table.items() if isinstance(v, dict)}
    checked = schema.GUARDRAILS.check({k: v for k, v in table.items() if k not in datasets}, "[guardrails]", cfg.path)
    for name, sub in datasets.items():
        _check_name(f"[guardrails.{name}]", name, cfg.dataset_names(), "dataset", cfg.path)
        checked[name] = schema.DATASET_GUARDRAILS.check(sub, f"[guardrails.{name}]", cfg.path, fill=False)
    return checked


def _parse_compare(cfg: SuiteConfig, table: dict) -> None:
    pipelines = cfg.pipeline_names()
    for candidate, sub in table.items():
        where = f"[compare.{candidate}]"
        schema.check_value(schema.TABLE, sub, "[compare]", candidate, cfg.path)
        _check_name(where, candidate, pipelines, "pipeline", cfg.path)
        checked = schema.COMPARE.check(sub, where, cfg.path)
        if "against" not in checked:
            raise ConfigError(f"{where} against: missing; accepted: the pipeline the candidate would replace", cfg.path)
        _check_name(f"{where} against", checked["against"], pipelines, "pipeline", cfg.path)
        if checked["against"] == candidate:
            raise ConfigError(f"{where} against: a pipeline cannot be compared with itself", cfg.path)
        cfg.compare[candidate] = CompareRules.from_table(candidate, checked, cfg.path)


def _parse_study(cfg: SuiteConfig, table: dict) -> None:
    study = schema.STUDY.check(table, "[study]", cfg.path)
    for case_id, values in study.get("results", {}).items():
        where = f'[study.results."{case_id}"]'
        schema.check_value(schema.TABLE, values, "[study.results]", case_id, cfg.path)
        cfg.split_case_id(case_id, where)
        for metric, value in values.items():
            _check_name(where, metric, list(METRICS), "metric", cfg.path)
            schema.check_value(schema.number(), value, where, metric, cfg.path)
        cfg.study_results[case_id] = {k: float(v) for k, v in values.items()}
    if "cases" in study:
        for case_id in study["cases"]:
            cfg.split_case_id(case_id, "[study] cases")
        cfg.study_cases = list(study["cases"])


# --------------------------------------------------------------------------- TOML out

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(sections: list[tuple[str | None, list[tuple[str, object, str | None]]]]) -> str:
    """Sections of (key, value, comment) rows as TOML; None values become comments (TOML has no null)."""
    out = []
    for name, rows in sections:
        if name is not None:
            out.append(f"\n[{_key(name)}]")
        for key, value, comment in rows:
            note = f"  # {comment}" if comment else ""
            if value is None:
                out.append(f"# {_key(key)} is not set{note.replace('  #', ';', 1)}")
            else:
                out.append(f"{_key(key)} = {_value(value)}{note}")
    return "\n".join(out) + "\n"


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None) + " }"
    return json.dumps(str(value))


__all__ = ["PipelineEntry", "SuiteConfig", "load_config", "parse_config"]
