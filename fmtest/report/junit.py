"""JUnit XML of a run's results, for `fmtest merge`: one testcase per case, named as the suite's tests are, its
figures as properties (pytest writes the same names for a run in one process)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fmtest.verdict.results import RunResults, case_properties


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
