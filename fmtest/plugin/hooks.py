"""pytest plugin: fmtest options, one parametrized case per (pipeline, dataset), metrics as
properties, and the scoreboard, JSON and HTML at the end of the run.

Hooks and fixtures live here; the settings in fmtest.config.settings, the planned cases in fmtest.run.plan,
measuring and judging a case in fmtest.plugin.session (fmtest.run measures, fmtest.verdict judges),
rendering in fmtest.report.

The plugin loads in every pytest run of an environment where fmtest is installed, so this module
imports nothing heavy and builds a run only when one is wanted: an `--fm-*` option, a suite config
beside the tests named, or a test that asks for an fmtest case.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fmtest.config.lookup import find_config
from fmtest.errors import CannotJudge, ConfigError, FmtestError, Unavailable
from fmtest.plugin.keys import PLANNED_KEY, RESULT_KEY, RESULTS_DIR_KEY, RUN_KEY

JUDGED = ("passed", "failed")  # a case held to its gates; skipped and error cases were not judged

if TYPE_CHECKING:
    from fmtest.run.plan import Case
    from fmtest.verdict.results import CaseResult, RunConfig, RunResults

def pytest_addoption(parser):
    """One `--fm-<flag>` per setting of the schema that has one (its help, env variable and default are there)."""
    from fmtest.config.schema import BOOL, options

    group = parser.getgroup("fmtest", "foundation-model evaluation")
    for _, setting in options():
        dest = f"fm_{setting.flag.replace('-', '_')}"
        if setting.kind is BOOL:
            group.addoption(setting.option, dest=dest, action="store_true", help=setting.help)
        else:
            group.addoption(setting.option, dest=dest, default=None, help=setting.help)


class FmRun:
    """Everything one pytest process knows about the evaluation run."""

    def __init__(self, config: pytest.Config):
        from fmtest.config.settings import resolve_settings
        from fmtest.plugin.session import Session
        from fmtest.plugin.store import ResultStore
        from fmtest.run.plan import check_case_thresholds
        from fmtest.util.threads import pin_one_thread_per_op

        self.unpin_threads = pin_one_thread_per_op()  # the same rows on any core count (fmtest.util.threads)
        self.sigterm = SigtermAsInterrupt()
        self.config = config
        worker = getattr(config, "workerinput", None)
        index = int(worker["workerid"].removeprefix("gw")) if worker else None
        self.settings = resolve_settings(lambda flag: config.getoption(f"fm_{flag.replace('-', '_')}"),
                                         Path(config.invocation_params.dir), worker_index=index,
                                         args=config.args)
        self.is_worker = worker is not None
        if self.settings.baseline_run is not None:  # `--fm-baseline=last`: a stored run; workers use what it was
            from fmtest.report.runs import find_run

            given = worker.get("fmtest_baseline") if worker else None
            self.settings.baseline = Path(given) if given else find_run(self.settings.runs_dir,
                                                                        self.settings.baseline_run).path
        self.store = ResultStore(Path(worker["fmtest_results_dir"]) if worker else _results_dir(config))
        check_case_thresholds(self.settings.config)
        if not worker:
            _check_outputs_writable(self.settings, config)
            if self.settings.executor == "ray":  # a dead cluster address fails now, not after the first fit
                from fmtest.run.executors.ray import check_address

                check_address(self.settings.ray_address)
        on_terminal = sys.stderr.isatty()  # bars on a terminal; a CI log gets one line per finished case
        progress = config.get_verbosity() >= 0 and not self.is_worker and on_terminal
        self.case_lines = config.get_verbosity() >= -1 and not self.is_worker and not on_terminal  # -qq: none
        self.session = Session(self.settings, progress=progress)
        self.results: RunResults | None = None  # all workers' cases, collected at session end
        self.published: list[str] = []  # where the Markdown, metrics file and MLflow run went, or why not
        self.output_problems: list[str] = []  # outputs that could not be written, told in the summary
        self.judged_nothing = False  # no case passed or failed a gate: every one skipped or in error
        self.kept: str | None = None  # where the run was kept in the runs folder, or why not (a warning)

    def collect(self, *, interrupted: bool = False) -> RunResults:
        from fmtest.plugin.store import order_key
        from fmtest.util.provenance import environment, git_branch, git_commit
        from fmtest.util.redact import redact_values
        from fmtest.verdict.results import RunResults

        cases = sorted(self.store.load_all(), key=order_key(self.settings))
        finished = {c.id for c in cases}
        unfinished = [c for c in self.config.stash.get(PLANNED_KEY, []) if c not in finished]
        here = Path(self.config.invocation_params.dir)
        return redact_values(RunResults(cases=cases, config=_config_summary(self.settings), environment=environment(),
                                        git_commit=git_commit(here), git_branch=git_branch(here),
                                        interrupted=interrupted, unfinished=unfinished))


class SigtermAsInterrupt:
    """CI stops a job with SIGTERM (a timeout, a cancel): treated like Ctrl-C, so the session ends as interrupted,
    every output is written with the finished cases and the unfinished ones, and temporary stores are removed.
    Once the outputs are being written (`finishing`), a further SIGTERM is ignored so they are not cut short."""

    def __init__(self):
        self.finishing = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():  # only the main thread may set a handler
            self._previous = signal.signal(signal.SIGTERM, self._interrupt)

    def _interrupt(self, signum, frame):
        if not self.finishing:
            self.finishing = True
            raise KeyboardInterrupt("SIGTERM")

    def restore(self) -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == \
                self._interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)


def _run(config: pytest.Config) -> FmRun:
    """The process's run, built on first need; a bad option or config stops pytest with one line."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        try:
            run = config.stash[RUN_KEY] = FmRun(config)
        except FmtestError as e:
            from fmtest.util.redact import redact

            raise pytest.UsageError(f"fmtest: {redact(str(e))}") from None
    return run


def _results_dir(config: pytest.Config) -> Path:
    """The controller's folder of finished cases (one JSON each), made on first need."""
    if RESULTS_DIR_KEY not in config.stash:
        config.stash[RESULTS_DIR_KEY] = Path(tempfile.mkdtemp(prefix="fmtest-results-"))
    return config.stash[RESULTS_DIR_KEY]


def _wants_run(config: pytest.Config) -> bool:
    """An `--fm-*` option was given or a suite config sits beside the tests named: build the run now, so a
    bad config or an unwritable output stops the session before any case runs."""
    from fmtest.config.schema import options

    if any(config.getoption(f"fm_{s.flag.replace('-', '_')}") for _, s in options()):
        return True
    try:
        return find_config(config.args, Path(config.invocation_params.dir)) is not None
    except FmtestError:
        return True  # let building the run report it


def _check_outputs_writable(settings, config: pytest.Config) -> None:
    """Refuse, before hours of predictions, an output that could not be written at the end (the report's image
    folder included), and two outputs on one path, which would overwrite each other."""
    from fmtest.report.layers import layers_dir
    from fmtest.util.fsutil import why_unwritable

    outputs = {"--fm-results": settings.results, "--fm-report": settings.report, "--fm-markdown": settings.markdown,
               "--fm-metrics": settings.metrics, "--fm-samples": settings.samples, "--fm-csv": settings.csv,
               "--junitxml": config.getoption("xmlpath", None),
               "--html": config.getoption("htmlpath", None), "$GITHUB_STEP_SUMMARY": settings.step_summary}
    taken: dict[Path, str] = {}
    for option, path in outputs.items():
        if not path:
            continue
        problem = why_unwritable(Path(path))
        if problem:
            raise ConfigError(f"{option}: cannot write {path}: {problem}")
        where = Path(path).resolve()
        if where in taken:
            raise ConfigError(f"{option} and {taken[where]} both write {where}: one would overwrite the other; "
                              "give each output its own file")
        taken[where] = option
    if settings.report:
        folder = layers_dir(settings.report)
        problem = why_unwritable(folder, folder=True)
        if problem:
            raise ConfigError(f"--fm-report: cannot write the report's image folder {folder}: {problem}")


def pytest_configure(config: pytest.Config):
    config.addinivalue_line("markers", "fmtest_task(task): parametrize this test over fmtest cases of a task")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "fmtest-xdist")
    if config.getoption("htmlpath", None) or config.getoption("xmlpath", None):
        from fmtest.plugin.reports import (
            register_report_hooks,  # pytest-html rows, JUnit properties (xunit2)
        )

        register_report_hooks(config)
    if _wants_run(config):
        _run(config)


class _XdistHooks:
    """Registered only with pytest-xdist present: hands workers the shared results folder, and tells
    the controller (which collects nothing itself) which cases the workers planned."""

    @pytest.hookimpl
    def pytest_configure_node(self, node):
        node.workerinput["fmtest_results_dir"] = str(_results_dir(node.config))
        run = node.config.stash.get(RUN_KEY, None)
        if run is not None and run.settings.baseline_run is not None:  # every worker compares with the same run
            node.workerinput["fmtest_baseline"] = str(run.settings.baseline)

    @pytest.hookimpl
    def pytest_xdist_node_collection_finished(self, node, ids):
        planned = node.config.stash.setdefault(PLANNED_KEY, [])
        for nodeid in ids:
            case_id = _case_id_of(nodeid)
            if case_id is not None and case_id not in planned:
                planned.append(case_id)


def _case_id_of(nodeid: str) -> str | None:
    """`suites/test_segmentation.py::test_segmentation[padim-satsim]` -> padim-satsim (fmtest suites only)."""
    head, _, param = nodeid.partition("[")
    if not param or not head.rsplit("::", 1)[-1].startswith(("test_segmentation", "test_classification",
                                                            "test_invariance", "test_comparison")):
        return None
    return param.removesuffix("]")


def pytest_generate_tests(metafunc: pytest.Metafunc):
    marker = metafunc.definition.get_closest_marker("fmtest_task")
    if marker is None or "fm_case" not in metafunc.fixturenames:
        return
    from fmtest.run.plan import plan_cases

    run = _run(metafunc.config)
    task = marker.args[0]
    cases = plan_cases(run.settings, task)
    extra = marker.kwargs.get("expand")
    if extra and not (_named_on_command_line(metafunc) or run.settings.config.robustness.get("run_by_default")):
        params, ids = [], []  # robustness multiplies the run's cost: it runs when its file is asked for
    elif extra:  # one test per (case, perturbation)
        params = [(c, x) for c in cases if _robustness_applies(run, c) for x in extra(run.settings)]
        if params and run.settings.shard is not None:
            raise pytest.UsageError(f"fmtest: --fm-shard={run.settings.shard}: robustness cases compare every image "
                                    "with its perturbed copies and are not sharded; run "
                                    f"{Path(str(metafunc.definition.path)).name} unsharded")
        ids = [f"{c.id}-{x}" for c, x in params]
    else:
        params, ids = cases, [c.id for c in cases]
    if params:  # no cases: the test is deselected in pytest_collection_modifyitems, not skipped
        metafunc.parametrize("fm_case", params, ids=ids, indirect=True)


def pytest_collection_modifyitems(config, items):
    unplanned = [i for i in items if i.get_closest_marker("fmtest_task") and not hasattr(i, "callspec")]
    if unplanned:
        config.hook.pytest_deselected(items=unplanned)
        items[:] = [i for i in items if i not in unplanned]
    planned = [i.callspec.id for i in items if i.get_closest_marker("fmtest_task") and hasattr(i, "callspec")]
    if planned:
        config.stash[PLANNED_KEY] = planned


def _robustness_applies(run: FmRun, case: Case) -> bool:
    """API pipelines would send every perturbed image to a service: only when the config says so."""
    config = run.settings.config
    return config.robustness["include_remote_api"] or not config.pipeline_class(case.pipeline).remote_api


def _named_on_command_line(metafunc) -> bool:
    """True when the test file itself (not just its folder) was named on the command line."""
    module = Path(str(metafunc.definition.path)).resolve()
    root = Path(metafunc.config.invocation_params.dir)
    for arg in metafunc.config.args:
        target = (root / arg.split("::")[0]).resolve()
        if target == module:
            return True
    return False


@pytest.fixture
def fm_run(request) -> FmRun:
    return _run(request.config)


@pytest.fixture
def fm_case(request, fm_run: FmRun):
    """Evaluates the case (or skips it when the pipeline cannot run here) and records its properties."""
    from fmtest.util.redact import redact, redact_values
    from fmtest.verdict.results import CaseResult

    param = request.param
    case: Case = param[0] if isinstance(param, tuple) else param
    node = request.node
    placeholder = CaseResult(id=node.callspec.id, pipeline=case.pipeline, dataset=case.dataset, task=case.task)
    node.stash[RESULT_KEY] = placeholder
    try:
        fm_run.session.evaluator.check_available(case)
    except Unavailable as e:
        reason = redact(str(e))
        placeholder.outcome, placeholder.message = ("error" if fm_run.settings.strict else "skipped"), reason
        _record(node, placeholder)
        if fm_run.settings.strict:
            raise
        pytest.skip(reason)
    with _progress_visible(request.config, fm_run):
        if isinstance(param, tuple):  # (case, perturbation): the robustness suite
            result = fm_run.session.invariance(case, param[1])
        elif case.against is not None:  # candidate vs the model it would replace
            result = fm_run.session.compare(case)
        else:
            result = fm_run.session.case(case)
    result = redact_values(result)  # JUnit properties, the failure line and the stored case carry no credentials
    node.stash[RESULT_KEY] = result
    _record(node, result)
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if fm_run.case_lines and reporter is not None:
        from fmtest.report.terminal import case_log_line

        if reporter._tw.width_of_current_line:  # after -q's progress dots: a line of its own
            reporter.write("\n")
        reporter.write_line(case_log_line(result))
    if result.outcome == "error":  # the run could not judge: an error, never a pass
        raise CannotJudge(result.message or "the case could not be judged", result.id)
    if result.outcome == "skipped":  # e.g. a robustness case that would mean nothing
        pytest.skip(result.message or "skipped")
    return result



def check_case(result: CaseResult) -> None:
    """Fail the test with the threshold report (metric, interval, threshold) when the case missed a gate."""
    if result.outcome == "failed":
        pytest.fail(f"{result.id}: {result.message}", pytrace=False)


@contextlib.contextmanager
def _progress_visible(config, run: FmRun):
    """Progress bars must reach the terminal, so output capture is paused while a case runs."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if run.session.evaluator.progress and capman is not None:
        with capman.global_and_fixture_disabled():
            yield
    else:
        yield


def _record(node, result: CaseResult) -> None:
    """Metrics become test properties, so JUnit XML carries the same numbers as the JSON."""
    from fmtest.verdict.results import case_properties

    existing = {k for k, _ in node.user_properties}
    node.user_properties.extend((k, v) for k, v in case_properties(result).items() if k not in existing)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    result = item.stash.get(RESULT_KEY, None)
    crash = None
    if call.excinfo is not None and result is not None and not call.excinfo.errisinstance(
            (pytest.fail.Exception, pytest.skip.Exception)):
        crash = _exception_line(call.excinfo, Path(item.config.invocation_params.dir))
    if call.excinfo is not None and call.excinfo.errisinstance(FmtestError):
        from fmtest.util.redact import redact

        report.longrepr = f"{item.nodeid}: {redact(str(call.excinfo.value))}"  # one line, no traceback wall
    elif result is not None and report.failed and report.longrepr is not None:
        from fmtest.util.redact import redact

        report.longrepr = redact(str(report.longrepr))  # a user's traceback, shown and in JUnit, minus credentials
    if result is None:
        return
    final = (report.when == "call") or (report.when == "setup" and not report.passed)
    if not final:
        return
    if report.when == "setup" and report.failed:
        result.outcome = "error"
        result.message = result.message or crash or _short(report)
    elif report.when == "call" and result.outcome == "passed" and not report.passed:
        # the verdict layer judged the case; only a test body that failed or skipped on its own changes it
        result.outcome = "skipped" if report.skipped else "failed"
        result.message = result.message or _short(report)
    _run(item.config).store.save(result)


def _exception_line(excinfo, root: Path) -> str:
    """An exception as one line: its own message for fmtest's errors; for any other, where it was raised in
    the user's code (the deepest frame outside fmtest, pytest and the Python installation), its type and
    its message (`userpipe.py:8: KeyError: 'missing-key'`)."""
    from fmtest.util.redact import redact

    error = excinfo.value
    text = redact(" ".join(str(error).split()))
    if isinstance(error, FmtestError):
        return text
    text = text[:500]  # someone else's message: the first 500 characters say what happened
    entries = list(excinfo.traceback)
    outside = [e for e in entries if not _library_file(Path(str(e.path)))]
    entry = (outside or entries)[-1] if entries else None
    where = ""
    if entry is not None:
        path = Path(str(entry.path))
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        where = f"{shown}:{entry.lineno + 1}: "
    return f"{where}{type(error).__name__}" + (f": {text}" if text else "")


def _library_file(path: Path) -> bool:
    """Code the user did not write: fmtest itself, pytest and its plugins, the standard library, installed packages."""
    import fmtest

    homes = [Path(fmtest.__file__).parent, *(Path(p) for k, p in sysconfig.get_paths().items()
                                               if k in ("stdlib", "platstdlib", "purelib", "platlib"))]
    return any(path.is_relative_to(home) for home in homes)


def _short(report) -> str:
    text = str(report.longrepr) if report.longrepr else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "error"


def pytest_sessionfinish(session: pytest.Session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):
        return
    run = config.stash.get(RUN_KEY, None)
    if run is None:  # under pytest-xdist only the workers planned cases: did any finish?
        folder = config.stash.get(RESULTS_DIR_KEY, None)
        if folder is None or not any(folder.glob("*.json")):
            return
        run = _run(config)
    run.sigterm.finishing = True  # the outputs are written now: a SIGTERM must not cut them short
    results = run.collect(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
    run.results = results
    run.judged_nothing = not any(c.outcome in JUDGED for c in results.cases)
    if run.judged_nothing and run.settings.require_judged and exitstatus in (pytest.ExitCode.OK,
                                                                            pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not results.cases and not results.unfinished:
        return
    run.kept = _keep(run, results)
    for label, path, write in _outputs(run):
        try:  # one output that cannot be written must not cost the others
            write(results, path)
        except (OSError, FmtestError) as e:
            run.output_problems.append(f"{label} not written to {path}: {e}")
    from fmtest.report.publish import (
        publish,  # after the JSON and HTML: its failures cost only its own outputs
    )

    s = run.settings
    run.published = publish(results, markdown=s.markdown, step_summary=s.step_summary, metrics=s.metrics,
                            mlflow_uri=s.mlflow, mlflow_experiment=s.mlflow_experiment,
                            attachments=[s.report] if s.report else [])


def _keep(run: FmRun, results: RunResults) -> str | None:
    """Keep the run in the runs folder (`fmtest runs list`, `fmtest compare`), interrupted or not; a shard's
    partial results are never kept as a run (`fmtest merge` joins them). A failure is a warning line: the
    run's outputs and exit status do not depend on it."""
    s = run.settings
    if not s.store_run or s.shard is not None:
        return None
    from fmtest.report.runs import store_run

    try:
        path = store_run(results, s.runs_dir)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the run itself is not lost
        return f"fmtest: warning: run not kept in {s.runs_dir}: {type(e).__name__}: {e}"
    return f"run kept as {path.stem} in {s.runs_dir} (fmtest runs list, fmtest compare last~1 last)"


def _outputs(run: FmRun):
    """(label, path, writer) of every output file this run asked for."""
    from fmtest.report.results_file import write_json

    s = run.settings
    if s.results:
        yield "JSON results", s.results, write_json
    if s.report:
        from fmtest.report.html import write_html

        history = s.config.history_url  # where `fmtest history` publishes its page

        def html(results, path):
            links = {c.id: f"{history}#{c.id}" for c in results.cases} if history else None
            write_html(results, path, history_links=links)

        yield "HTML scoreboard", s.report, html
    if s.samples:
        from fmtest.report.samples import samples_jsonl
        from fmtest.util.fsutil import atomic_write

        yield "per-image samples", s.samples, lambda results, path: atomic_write(path, samples_jsonl(results))
    if s.csv:
        from fmtest.report.scoreboard_csv import scoreboard_csv
        from fmtest.util.fsutil import atomic_write

        yield "CSV scoreboard", s.csv, lambda results, path: atomic_write(path, scoreboard_csv(results))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    run = config.stash.get(RUN_KEY, None)
    results = run.results if run is not None else None
    if run is None or run.is_worker or results is None:
        return
    if not (results.cases or results.unfinished):
        if run.judged_nothing and run.settings.require_judged:
            terminalreporter.write_line(_judged_nothing_line(results, run.settings.require_judged), red=True)
        return
    from fmtest.report.terminal import (
        data_quality_line,
        markup_paint,
        render_scoreboard,
    )

    terminalreporter.section("fmtest scoreboard")
    terminalreporter.write_line(render_scoreboard(results, width=terminalreporter._tw.fullwidth,
                                                  paint=markup_paint(terminalreporter._tw.markup)))
    if results.interrupted:
        terminalreporter.write_line(f"INTERRUPTED: {len(results.unfinished)} case(s) did not finish: "
                                    + ", ".join(results.unfinished), red=True)
    if run.judged_nothing:
        terminalreporter.write_line(_judged_nothing_line(results, run.settings.require_judged), red=True)
    quality = data_quality_line(results)
    if quality:
        terminalreporter.write_line(quality)
    baseline = run.session.baseline
    if baseline is not None:
        from fmtest.verdict.regression import format_summary, recorded_comparisons

        terminalreporter.write_line(format_summary(recorded_comparisons(results, baseline)))
    for label, path, _ in _outputs(run):
        problem = next((p for p in run.output_problems if p.startswith(f"{label} not written")), None)
        terminalreporter.write_line(problem or f"{label}: {path}", red=problem is not None)
    for line in [*run.published, *([run.kept] if run.kept else [])]:
        terminalreporter.write_line(line, yellow=line.startswith("fmtest: warning"))


def _judged_nothing_line(results: RunResults, required: bool) -> str:
    """Says that the run judged no case, and what that does to its exit status."""
    counts = ", ".join(f"{n} {o}" for o, n in Counter(c.outcome for c in results.cases).items()) or "no case ran"
    verdict = ("so this run fails (--fm-require-judged)" if required else
               "a run that tested nothing is not a pass: --fm-require-judged makes it fail")
    return f"NO CASE WAS JUDGED ({counts}): {verdict}"


def pytest_unconfigure(config):
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.session.close()
        run.unpin_threads()
        run.sigterm.restore()
    if RESULTS_DIR_KEY in config.stash:  # the controller's folder; a worker's is the controller's
        shutil.rmtree(config.stash[RESULTS_DIR_KEY], ignore_errors=True)


def _config_summary(settings) -> RunConfig:
    """The run's settings as the results record them: what ran, and the rules every verdict used (read back by
    `fmtest merge`, so a merged run is judged by exactly these)."""
    from fmtest.util.redact import redact_option, redact_values
    from fmtest.verdict.results import RunConfig

    cfg = settings.config
    return RunConfig(
        config_file=str(cfg.path) if cfg.path else None, datasets=list(settings.datasets),
        pipelines=list(settings.pipelines), device=settings.device,
        pipeline_options={p: {k: redact_option(k, v) for k, v in o.items()} for p, o in cfg.pipelines.items()},
        dataset_options=redact_values(cfg.datasets), prompts=dict(cfg.prompts), rules=cfg.rules,
        shard=str(settings.shard) if settings.shard else None)


__all__ = ["ConfigError", "check_case"]
