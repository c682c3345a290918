"""The suite config's schema: every table, every key, what it accepts and what it means, written once.

`fmtest.config.suite` checks a suite config against it before any case runs (a key it does not know or a
value it does not accept is one line naming the table, the key and what is accepted), and the
README's config reference is generated from it (`fmtest config --reference`).

Tables whose keys are names (pipelines, datasets, case ids) are described here by a placeholder
row (`<case>`); `fmtest.config.suite` checks those names against the known pipelines and datasets.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from fmtest.errors import ConfigError
from fmtest.util.text import toml_literal
from fmtest.metrics.specs import (
    CASE_TASKS,
    DEFAULT_FPR_LIMIT,
    DEFAULT_MAX_INVALID_ANSWER_RATE,
    INVALID_ANSWER_GATE,
    MAX_PREFIX,
    METRICS,
)


@dataclass(frozen=True)
class Kind:
    """What a key accepts: `accepts` says it in words; `convert` returns the value or None if refused."""

    accepts: str
    convert: object  # Callable[[object], object | None]

    def __call__(self, value: object) -> object | None:
        return self.convert(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Kind:
    """A finite number (an integer is taken as a float) within the bounds."""
    if low is not None and high is not None:
        words = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        words = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        words = "a number"

    def convert(value):
        if not _is_number(value) or not math.isfinite(value):
            return None
        if low is not None and (value <= low if low_open else value < low):
            return None
        if high is not None and value > high:
            return None
        return float(value)

    return Kind(words, convert)


def integer(low: int | None = None) -> Kind:
    return Kind("an integer" if low is None else f"an integer >= {low}",
                lambda v: v if isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low) else None)


def choice(*options: str) -> Kind:
    return Kind("one of " + ", ".join(f'"{o}"' for o in options), lambda v: v if v in options else None)


BOOL = Kind("true or false", lambda v: v if isinstance(v, bool) else None)
STRING = Kind("a string", lambda v: v if isinstance(v, str) else None)
PATH = Kind("a path (string), relative to the config file", lambda v: v if isinstance(v, str) and v else None)
NAMES = Kind("a name or a list of names", lambda v: [v] if isinstance(v, str) else
             (list(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else None))
NUMBERS = Kind("a non-empty list of numbers",
               lambda v: [float(x) for x in v] if isinstance(v, list) and v and all(_is_number(x) for x in v) else None)
RATE = number(0.0, 1.0)
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE = Kind('"auto", "cpu", "cuda" or "cuda:<index>"',
              lambda v: v if isinstance(v, str) and _DEVICE.fullmatch(v) else None)
CLASS_PATH = Kind('"module:Class", importable from the suite folder or the environment',
                  lambda v: v if isinstance(v, str) and re.fullmatch(r"[\w.]+:[\w.]+", v) else None)
TABLE = Kind("a table", lambda v: v if isinstance(v, dict) else None)


@dataclass(frozen=True)
class Setting:
    """One key. `default` is filled in when the key is absent; `shown_default` documents one set elsewhere.
    A setting with a `flag` is also the pytest option `--fm-<flag>`, and one with an `env` also that
    environment variable: the command line wins, then the environment, then the file, then the default."""

    key: str
    kind: Kind
    meaning: str
    default: object = None
    shown_default: str | None = None
    flag: str | None = None
    env: str | None = None

    @property
    def option(self) -> str | None:
        """`--fm-<flag>`, as the command line spells it."""
        return f"--fm-{self.flag}" if self.flag else None

    @property
    def help(self) -> str:
        """The option's help: the meaning, the environment variable, the default."""
        extra = [f"env {self.env}"] if self.env else []
        if self.default_text and self.kind is not BOOL:
            extra.append(f"default {self.default_text}")
        return self.meaning + (f" ({', '.join(extra)})" if extra else "")

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        return "" if self.default is None else toml_literal(self.default)


@dataclass(frozen=True)
class Table:
    """A table of the config (`""` is the top level) and the keys it accepts."""

    name: str
    meaning: str
    settings: tuple[Setting, ...]

    def setting(self, key: str) -> Setting | None:
        return next((s for s in self.settings if s.key == key), None)

    def check(self, values: Mapping[str, object], where: str, path: object, *, fill: bool = True) -> dict:
        """The table's values converted, with defaults filled in; one ConfigError for the first bad key."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be a table, got {values!r}", path)
        checked = {}
        for key, value in values.items():
            setting = self.setting(key)
            if setting is None:
                raise ConfigError(unknown_key(where, key, [s.key for s in self.settings]), path)
            checked[key] = check_value(setting.kind, value, where, key, path)
        if fill:
            for s in self.settings:
                if s.key not in checked and s.default is not None:
                    checked[s.key] = s.default
        return checked


def check_value(kind: Kind, value: object, where: str, key: str, path: object) -> object:
    converted = kind(value)
    if converted is None:
        raise ConfigError(f"{located(where, key)} = {toml_literal(value)}: accepted: {kind.accepts}", path)
    return converted


def located(where: str, key: str) -> str:
    """`[risk] seed`, or just `seed` at the top level."""
    return f"{where} {key}".strip()


def unknown_key(where: str, key: str, known: list[str], what: str = "key") -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{located(where, key)}: unknown {what}{hint}; accepted: {', '.join(known)}"


def threshold_settings() -> tuple[Setting, ...]:
    """One threshold per quality metric of a case: `<metric>` (a minimum) where higher is better,
    `max_<metric>` (a maximum) where lower is better. Robustness gates live in `[robustness]`."""
    defaults = {"iou": 0.60, "f2": 0.80}
    settings = []
    for spec in METRICS.values():
        recorded_by_cases = set(spec.recorded_by) & set(CASE_TASKS)  # a threshold can judge only these
        if spec.higher_is_better is None or spec.kind not in ("score", "rate") or not recorded_by_cases:
            continue
        key = spec.name if spec.higher_is_better else f"{MAX_PREFIX}{spec.name}"
        bound = "minimum" if spec.higher_is_better else "maximum"
        settings.append(Setting(key, RATE, f"{bound} {spec.description}", defaults.get(key),
                                shown_default=toml_literal(DEFAULT_MAX_INVALID_ANSWER_RATE) if key == INVALID_ANSWER_GATE
                                else None))
    return tuple(settings)


THRESHOLDS = Table("[thresholds]", "defaults every case is held to", threshold_settings())
CASE_THRESHOLDS = Table('[thresholds."<case>"]', "one case's thresholds over the defaults; <case> is "
                        "`<pipeline>-<dataset>`", tuple(Setting(s.key, s.kind, s.meaning) for s in THRESHOLDS.settings))
SHARD = Kind("K/N with 1 <= K <= N", lambda v: v if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*/\s*\d+\s*", v)
             else None)
COMMAND_LINE = Table("(command line)", "options that only the command line sets", (
    Setting("config", PATH, "the suite config, TOML", shown_default="fmtest.toml beside the tests named, else "
            "suites/fmtest.toml", flag="config"),
    Setting("shard", SHARD, "score only shard K of N of every case's test images (stratified); `fmtest merge` "
            "joins the shards", flag="shard"),
))
RUN_SETTINGS = (  # also the command line's --fm-<flag> options; the command line wins
    Setting("dataset", NAMES, "datasets to run, comma separated on the command line",
            shown_default="default_datasets", flag="dataset"),
    Setting("pipeline", NAMES, "pipelines to run, comma separated on the command line",
            shown_default="default_pipelines", flag="pipeline"),
    Setting("data_root", PATH, "folder holding the dataset folders", flag="data-root", env="FMTEST_DATA"),
    Setting("follow_outside_links", BOOL, "read files that a symbolic link inside a dataset folder points to outside "
            "the data root (refused otherwise, naming the link)", False, flag="follow-outside-links"),
    Setting("weights", PATH, "folder holding model checkpoints", shown_default="~/.cache/fmtest/weights",
            flag="weights", env="FMTEST_WEIGHTS"),
    Setting("device", DEVICE, "where models run; under -n, workers are spread one per GPU", "auto", flag="device"),
    Setting("report", PATH, "write the HTML scoreboard here", flag="report"),
    Setting("results", PATH, "write the JSON results here", flag="results"),
    Setting("cache", PATH, "prediction cache folder (relative to the current folder unless set in the file)",
            ".fmtest_cache", flag="cache"),
    Setting("no_cache", BOOL, "do not read or write the prediction cache", False, flag="no-cache"),
    Setting("markdown", PATH, "write the scoreboard as a Markdown table here (also appended to "
            "$GITHUB_STEP_SUMMARY when that is set)", flag="markdown"),
    Setting("metrics", PATH, "write a flat metrics file here: .json for DVC, .txt OpenMetrics for GitLab",
            flag="metrics"),
    Setting("strict", BOOL, "a pipeline that cannot run errors instead of skipping", False, flag="strict"),
    Setting("runs_dir", PATH, "keep every run's results in this folder, one file per run (`fmtest runs list`, "
            "`fmtest compare`; relative to the current folder unless set in the file)", ".fmtest_runs",
            flag="runs-dir", env="FMTEST_RUNS"),
    Setting("no_store", BOOL, "do not keep this run's results in the runs folder", False, flag="no-store"),
    Setting("samples", PATH, "write one JSON line per image of every case here (label, prediction, score, IoU, "
            "answer)", flag="samples"),
    Setting("csv", PATH, "write the scoreboard as CSV here: one row per case, each gated metric with its interval "
            "and threshold", flag="csv"),
    Setting("require_judged", BOOL, "a run that judged no case (every case skipped or in error) fails, so CI is "
            "never green on a run that tested nothing", False, flag="require-judged"),
)
TOP = Table("", "top level", (
    Setting("default_datasets", NAMES, "datasets a run uses when none is named", ["satsim", "elpv"]),
    Setting("default_pipelines", NAMES, "pipelines a run uses when none is named",
            shown_default="every pipeline that applies"),
    *RUN_SETTINGS,
    Setting("bootstrap_resamples", integer(1), "resamples of every 95 % bootstrap interval", 1000),
    Setting("seed", integer(0), "seed of the bootstrap and of the perturbations", 0),
    Setting("history_url", STRING, "where `fmtest history` publishes its page; the scoreboard links each case there"),
    *(Setting(name, TABLE, meaning) for name, meaning in (
        ("thresholds", "see [thresholds]"), ("baseline", "see [baseline]"), ("pipelines", "see [pipelines.<name>]"),
        ("datasets", "see [datasets.<name>]"), ("prompts", "see [prompts]"), ("risk", "see [risk]"), ("regions", "see [regions]"),
        ("robustness", "see [robustness]"), ("guardrails", "see [guardrails]"), ("compare", "see [compare.<candidate>]"),
        ("study", "see [study.results.\"<case>\"]"), ("mlflow", "see [mlflow]"),
        ("executor", "see [executor]"))),
))
BASELINE = Table("[baseline]", "the earlier run a metric must not drop against (--fm-baseline)", (
    Setting("tolerance", number(0.0, 1.0), "allowed drop of a gated metric before it is a regression", 0.02),
    Setting("results", PATH, "earlier JSON results, or a stored run: its id, `last`, `last~1`, `main` (the newest "
            "run on branch main); a metric that drops by more than the tolerance fails", flag="baseline"),
))
PROMPTS = Table("[prompts]", "the text prompt per dataset, or per dataset group", (
    Setting("<dataset>", STRING, "prompt for every case of the dataset", shown_default='"defect"'),
    Setting('"<dataset>/<group>"', STRING, "prompt for one group (MVTec AD category) of the dataset"),
))
RISK = Table("[risk]", "factory figures at the operating point", (
    Setting("target_slip_rate", number(0.0, 1.0, low_open=True),
            "how many defectives would prove a slip rate below this?", 0.01),
    Setting("false_alarm_budget", RATE, "recall is reported at this false-alarm rate, set on good training images",
            0.01),
    Setting("n_train_scores", integer(1), "good training images scored to set that operating point", 40),
))
REGIONS = Table("[regions]", "region figures beside IoU and F2 (AU-PRO, pixel AUROC and AP, recall by defect "
                "size): shown, gated only by a threshold you set", (
    Setting("fpr_limit", number(0.0, 1.0, low_open=True), "AU-PRO integrates the per-region overlap up to this "
            "false-positive rate of good pixels", DEFAULT_FPR_LIMIT),
))
ROBUSTNESS = Table("[robustness]", "`pytest suites/test_robustness.py`", (
    Setting("perturbations", NAMES, "perturbations to run", shown_default="all"),
    Setting("gate_level", integer(0), "index into each ladder: the severity the gate is held to",
            shown_default="the middle level"),
    Setting("max_flip_rate", RATE, "share of OK/NOK verdicts allowed to flip at the gate level", 0.10),
    Setting("max_metric_drop", RATE, "allowed drop of IoU or F2 at the gate level", 0.05),
    Setting("include_remote_api", BOOL, "also perturb through API pipelines (costs requests)", False),
    Setting("run_by_default", BOOL, "run robustness cases also when the file is not named", False),
    Setting("n_images", integer(2), "perturb only n test images: a stratified subset (both labels, the test set's "
            "share of defectives, the same images for every pipeline); at least 1 / max_flip_rate", shown_default="all"),
    Setting("min_clean_recall", RATE, "below this recall of the unperturbed run a robustness case is not "
            "meaningful (a model that always answers OK never flips) and is skipped with the reason",
            shown_default="the case's recall threshold, else its f2 threshold"),
    Setting("max_clean_false_alarm_rate", RATE, "above this false-alarm rate of the unperturbed run a robustness "
            "case is not meaningful (a model that always answers NOK never flips) and is skipped with the reason",
            0.5),
    Setting("ladders", TABLE, "see [robustness.ladders]"),
))
LADDERS = Table("[robustness.ladders]", "severity ladders, one per perturbation", (
    Setting("<perturbation>", NUMBERS, "the levels, mildest first (see fmtest.imaging.perturb)",
            shown_default="fmtest.imaging.perturb.DEFAULT_LADDERS"),
))
GUARDRAIL_SETTINGS = (
    Setting("enabled", BOOL, "run the data-quality checks", True),
    Setting("alignment", BOOL, "report images that fail to align to the reference", True),
    Setting("min_alignment_quality", RATE, "alignment quality below this is a finding", 0.5),
    Setting("duplicate_correlation", RATE, "correlation above this across train and test is a near-duplicate", 0.95),
    Setting("outlier_z", number(0.0, low_open=True), "intensity statistics this many robust SDs from training", 5.0),
    Setting("max_mask_coverage", RATE, "a defect mask covering more of its image than this is a finding (an "
            "inverted mask: defect black, background white?)", 0.9),
)
GUARDRAILS = Table("[guardrails]", "data-quality checks before scoring", (
    *GUARDRAIL_SETTINGS, Setting("<dataset>", TABLE, "see [guardrails.<dataset>]")))
DATASET_GUARDRAILS = Table("[guardrails.<dataset>]", "the checks for one dataset, over [guardrails]",
                           tuple(Setting(s.key, s.kind, s.meaning) for s in GUARDRAIL_SETTINGS))
LAYER_NOTE = "the pipeline's own options (as in [pipelines.<name>]) and `prompt`"
PIPELINE = Table("[pipelines.<name>]", "a pipeline's options; a new name defines a variant or a plugin", (
    Setting("uses", STRING, "this entry is a variant of that pipeline: its settings, then this table's"),
    Setting("class", CLASS_PATH, "this entry is the user's Pipeline subclass"),
    Setting("<option>", Kind("what the pipeline accepts", None), "the pipeline's own options, checked by the "
            "pipeline; `fmtest config --case` lists them"),
    Setting("per_dataset", TABLE, "see [pipelines.<name>.per_dataset.<dataset>]"),
    Setting("per_group", TABLE, 'see [pipelines.<name>.per_group."<dataset>/<group>"]'),
))
PER_DATASET = Table("[pipelines.<name>.per_dataset.<dataset>]", "settings for one dataset, over the pipeline's", (
    Setting("prompt", STRING, "the prompt for this pipeline on this dataset", shown_default="[prompts]"),
    Setting("<option>", Kind("what the pipeline accepts", None), "any of the pipeline's options"),
))
PER_GROUP = Table('[pipelines.<name>.per_group."<dataset>/<group>"]', "settings for one dataset group (MVTec AD "
                  "category), over the pipeline's and the dataset's", PER_DATASET.settings)
DATASET = Table("[datasets.<name>]", "a dataset's options; a new name with `uses` or `class` adds a dataset", (
    Setting("uses", STRING, "this entry is a dataset of that kind (coco, cvat, label_studio, mvtec, ...) with this "
            "table's options"),
    Setting("class", CLASS_PATH, "this entry is the user's Dataset subclass"),
    Setting("<option>", Kind("what the dataset accepts", None), "the dataset's own options, checked by the "
            "dataset; `fmtest config --case` lists them"),
))
COMPARE = Table("[compare.<candidate>]", "a candidate pipeline against the one it would replace, on the same "
                "images", (
    Setting("against", STRING, "the reference pipeline (required)"),
    Setting("tolerance", number(0.0, 1.0), "allowed worsening of each gated metric", 0.02),
    Setting("max_new_slips", integer(0), "defective parts the reference caught and the candidate may pass", 0),
))
STUDY_RESULTS = Table('[study.results."<case>"]', "the study's published numbers, shown beside the case", (
    Setting("<metric>", number(), "the published value of a metric (iou, f2, precision, recall, ...)"),
))
STUDY = Table("[study]", "the published study this suite reproduces", (
    Setting("results", TABLE, 'see [study.results."<case>"]'),
    Setting("cases", NAMES, "the study's grid: the run plans exactly these case ids (within the selection)"),
))
MLFLOW = Table("[mlflow]", "log the run to MLflow", (
    Setting("tracking_uri", STRING, "log the run to this MLflow tracking server or folder (needs fmtest[mlflow])",
            flag="mlflow", env="MLFLOW_TRACKING_URI"),
    Setting("experiment", STRING, "the experiment the run is logged under", "fmtest", env="MLFLOW_EXPERIMENT_NAME"),
))
EXECUTORS = ("local", "ray")  # where predictions are computed (fmtest.run.executors)
EXECUTOR = Table("[executor]", "where predictions are computed (--fm-executor)", (
    Setting("kind", choice(*EXECUTORS), "where predictions are computed: local, in the pytest process; ray, "
            "fanned out to Ray actors (needs fmtest[ray])", "local", flag="executor"),
    Setting("address", STRING, 'the Ray cluster: "local" starts one in-process, "auto" joins `ray start --head` '
            "on this machine, ray://host:10001 a remote one", "local", flag="ray-address", env="RAY_ADDRESS"),
    Setting("actors", integer(1), "Ray actors per case group, each holding the pipeline fitted once", 2),
    Setting("num_gpus", number(0.0), "GPUs each actor reserves (its model runs on cuda when > 0)", 0.0),
    Setting("num_cpus", number(0.0), "CPUs each actor reserves", 1.0),
))
SCHEMA: tuple[Table, ...] = (COMMAND_LINE, TOP, THRESHOLDS, CASE_THRESHOLDS, BASELINE, PROMPTS, PIPELINE, PER_DATASET, PER_GROUP,
                             DATASET, RISK, REGIONS, ROBUSTNESS, LADDERS, GUARDRAILS, DATASET_GUARDRAILS, COMPARE, STUDY,
                             STUDY_RESULTS, MLFLOW, EXECUTOR)


def options() -> list[tuple[Table, Setting]]:
    """Every setting the command line sets (`--fm-<flag>`), in the reference's order: the pytest options."""
    return [(table, s) for table in SCHEMA for s in table.settings if s.flag]


def markdown_reference() -> str:
    """The README's reference of every setting: one row per key of every table, with its option and variable."""
    lines = ["| table | key | accepts | default | command line, environment | meaning |", "|---|---|---|---|---|---|"]
    for table in SCHEMA:
        name = table.name or "(top level)"
        for s in table.settings:
            if s.kind is TABLE:
                continue  # a sub-table: it has rows of its own
            switches = ", ".join(f"`{x}`" for x in (s.option, s.env) if x)
            cells = [f"`{name}`", f"`{s.key}`", s.kind.accepts, f"`{s.default_text}`" if s.default_text else "",
                     switches, s.meaning]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["SCHEMA", "Kind", "Setting", "Table", "check_value", "located", "markdown_reference", "unknown_key"]
