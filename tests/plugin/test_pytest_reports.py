"""fmtest cases in pytest's own reports: pytest-html rows and thumbnails, JUnit XML properties under xunit2."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fakes import TESTS

pytest.importorskip("pytest_html")
from toy_fmtest import make_suite

TOY = TESTS / "toy_fmtest.py"
CONFIG = "bootstrap_resamples = 50"


@pytest.fixture
def suite(pytester):
    """The shipped segmentation suite on the toy dataset, with one ordinary test beside it."""
    make_suite(pytester, CONFIG, files=("test_segmentation.py",))
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    return pytester


def run(suite, *args):
    return suite.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", "--fm-config=fmtest.toml", "--fm-no-cache",
                           "-q", *args)


def html_tests(path: Path) -> dict[str, dict]:
    """pytest-html 4 keeps its results as JSON in one attribute of the page."""
    blob = re.search(r'data-jsonblob="([^"]*)"', path.read_text(encoding="utf-8")).group(1)
    tests = json.loads(html.unescape(blob))["tests"]
    return {test_id: runs[0] for test_id, runs in tests.items()}


def test_html_rows_and_xunit2_properties_from_one_run(suite):
    """pytest-html rows carry the case's metric, interval and verdict, its extras the thumbnails; the JUnit
    XML (xunit2, pytest's default family) keeps the case's properties where its schema allows them."""
    result = run(suite, "--html=report.html", "--self-contained-html", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=1)
    page = (suite.path / "report.html").read_text(encoding="utf-8")
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    assert headers[headers.index("Test") + 1:headers.index("Test") + 4] == ["fmtest metric", "95 % CI", "fmtest verdict"]
    tests = html_tests(suite.path / "report.html")
    good = tests["test_segmentation.py::test_segmentation[toy_threshold-toy]"]
    cells = "".join(good["resultsTableRow"])
    assert '<td class="col-fm-metric">IoU 1.000</td>' in cells
    assert re.search(r'<td class="col-fm-interval">\[1\.000, 1\.000\]</td>', cells)
    assert '<td class="col-fm-verdict">PASS, meets &gt;= 0.60</td>' in cells
    empty = "".join(tests["test_segmentation.py::test_segmentation[toy_empty-toy]"]["resultsTableRow"])
    assert '<td class="col-fm-verdict">FAIL, meets &gt;= 0.00</td>' in empty  # its IoU gate is 0; F2 failed it
    images = [e for e in good["extras"] if e["format_type"] == "image"]
    assert images and all(e["content"].startswith("data:image/png;base64,") for e in images)
    assert "toy_threshold" not in "".join(tests["test_plain.py::test_plain"]["resultsTableRow"])
    assert '<td class="col-fm-metric"></td>' in "".join(tests["test_plain.py::test_plain"]["resultsTableRow"])

    root = ET.parse(suite.path / "junit.xml").getroot()
    assert root.findall(".//testcase/properties") == []  # the xunit2 schema allows none there
    suite_props = {p.get("name"): p.get("value") for p in root.findall("./testsuite/properties/property")}
    assert suite_props["toy_threshold-toy.iou"] == "1.0" and suite_props["toy_empty-toy.threshold_f2"] == "0.8"
    assert suite_props["toy_threshold-toy.pipeline"] == "toy_threshold"
    assert not [name for name in suite_props if name.startswith("test_plain")]


def test_xunit1_keeps_properties_on_each_test_case(suite):
    result = run(suite, "--junitxml=junit.xml", "-o", "junit_family=xunit1")
    result.assert_outcomes(passed=2, failed=1)
    root = ET.parse(suite.path / "junit.xml").getroot()
    case = root.find(".//testcase[@name='test_segmentation[toy_threshold-toy]']")
    assert {p.get("name") for p in case.findall("./properties/property")} >= {"iou", "iou_ci_low", "threshold_iou"}
    assert root.findall("./testsuite/properties") == []
