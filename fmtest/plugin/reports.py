"""fmtest's case results in pytest's own reports: pytest-html rows and extras, JUnit XML under xunit2.

The plugin registers these hooks at configure time, each only where it applies: pytest-html writing a
report (`--html`), JUnit XML of the xunit2 family (pytest's default) being written. The plugin keeps
each test's CaseResult in the item's stash; the hooks here copy what a report needs onto the test
report as plain data, so it survives pytest-xdist, whose workers send their reports to the controller
that writes the files.

Under xunit2 a <testcase> may not hold <properties>, so a case's properties (metrics, intervals,
thresholds) are written as the test suite's properties instead, named `<case id>.<property>`.
"""

from __future__ import annotations

import html

import pytest

from fmtest.metrics.specs import format_value, label
from fmtest.plugin.keys import RESULT_KEY
from fmtest.report.html_format import metric_interval
from fmtest.verdict.gates import gate_for, main_metric
from fmtest.verdict.results import OUTCOME_WORD, CaseResult

CASE_FIELD = "fmtest_case"  # the report attribute: {"id", "metric", "interval", "verdict"}
HTML_COLUMNS = (("metric", "fmtest metric"), ("interval", "95 % CI"), ("verdict", "fmtest verdict"))


def register_report_hooks(config: pytest.Config) -> None:
    """Register the hooks for the reports this run writes; none when it writes neither."""
    html_report = config.pluginmanager.hasplugin("html") and bool(config.getoption("htmlpath", None))
    xunit2 = bool(config.getoption("xmlpath", None)) and config.getini("junit_family") == "xunit2"
    if html_report or xunit2:
        config.pluginmanager.register(CaseOnReport(with_thumbnails=html_report), "fmtest-case-on-report")
    if html_report:
        config.pluginmanager.register(HtmlTable(), "fmtest-html-table")
    if xunit2:
        config.pluginmanager.register(Xunit2Properties(config), "fmtest-xunit2-properties")


def case_summary(result: CaseResult) -> dict[str, str]:
    """The headline metric with its value, its interval and the verdict against its threshold, as text."""
    name = main_metric(result)
    verdict = OUTCOME_WORD.get(result.outcome, result.outcome.upper())
    if name is None or name not in result.metrics:
        return {"id": result.id, "metric": "", "interval": "", "verdict": verdict}
    gate = gate_for(result, name)
    if gate is not None:  # the headline metric's own gate: a case can fail on another one
        verdict += f", {'meets' if gate.met(result.metrics[name]) else 'misses'} {gate.relation} {format_value(gate.limit, 2)}"
    return {"id": result.id, "metric": f"{label(name)} {format_value(result.metrics[name])}",
            "interval": metric_interval(result, name), "verdict": verdict}


class CaseOnReport:
    """Copies the case's summary (and, for pytest-html, its overlay thumbnails) onto its test reports."""

    def __init__(self, *, with_thumbnails: bool):
        self.with_thumbnails = with_thumbnails

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        result = item.stash.get(RESULT_KEY, None)
        if result is None:
            return
        setattr(report, CASE_FIELD, case_summary(result))  # the plugin set the case's outcome by now
        final = report.when == "call" or (report.when == "setup" and not report.passed)
        if self.with_thumbnails and final and result.thumbnails:
            from pytest_html import extras

            report.extras = [*getattr(report, "extras", []),
                             *(extras.png(t.png_base64, name=t.caption or t.id) for t in result.thumbnails)]


class HtmlTable:
    """pytest-html: three columns after the test id, filled for fmtest cases and empty for other tests."""

    def pytest_html_results_table_header(self, cells):
        cells[2:2] = [f"<th>{html.escape(title)}</th>" for _, title in HTML_COLUMNS]

    def pytest_html_results_table_row(self, report, cells):
        case = getattr(report, CASE_FIELD, None) or {}
        cells[2:2] = [f'<td class="col-fm-{key}">{html.escape(case.get(key, ""))}</td>' for key, _ in HTML_COLUMNS]


class Xunit2Properties:
    """Moves an fmtest case's properties from its <testcase> to the suite, where xunit2 allows them."""

    def __init__(self, config: pytest.Config):
        self.config = config

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes the teardown report's properties
    def pytest_runtest_logreport(self, report):
        from _pytest.junitxml import xml_key

        case = getattr(report, CASE_FIELD, None)
        log = self.config.stash.get(xml_key, None)  # None on an xdist worker: the controller writes the file
        if report.when != "teardown" or case is None or not report.user_properties or log is None:
            return
        for name, value in report.user_properties:
            log.add_global_property(f"{case['id']}.{name}", value)
        report.user_properties = []
