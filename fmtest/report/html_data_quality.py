"""The scoreboard's data-quality list: guardrail findings (duplicates, empty masks...) once per dataset."""

from __future__ import annotations

from collections import Counter

from fmtest.report.html_format import MAX_EXTRA_ROWS, esc
from fmtest.run.guardrails import Finding
from fmtest.verdict.results import CaseResult


def data_quality_section(cases: list[CaseResult]) -> str:
    """Findings per dataset, once each: every case of a dataset carries the same guardrail findings."""
    by_dataset: dict[str, dict[Finding, None]] = {}
    for case in cases:
        seen = by_dataset.setdefault(case.dataset, {})
        for finding in case.data_quality:
            seen.setdefault(finding, None)
    blocks = []
    for dataset, unique in by_dataset.items():
        if not unique:
            continue
        findings = list(unique)
        kinds = ", ".join(f"{n} {k}" for k, n in Counter(f.kind for f in findings).items())
        rows = "".join(f"<tr><td>{esc(f.kind)}</td><td><code>{esc(f.image_id or '(dataset)')}"
                       f"</code></td><td>{esc(f.detail)}</td></tr>" for f in findings[:MAX_EXTRA_ROWS])
        more = len(findings) - MAX_EXTRA_ROWS
        note = f"<p class='note'>&hellip; and {more} more not shown.</p>" if more > 0 else ""
        blocks.append(f"<details class='dq' data-dataset='{esc(dataset, quote=True)}'{' open' if len(findings) <= 20 else ''}>"
                      f"<summary><b>{esc(dataset)}</b>: {len(findings)} finding{'s' if len(findings) != 1 else ''} "
                      f"({esc(kinds)})</summary><table class='extra dq'><thead><tr><th>kind</th><th>image id</th>"
                      f"<th>detail</th></tr></thead><tbody>{rows}</tbody></table>{note}</details>")
    if not blocks:
        return ""
    return f"<h2 id='fm-data-quality'>Data quality</h2>{''.join(blocks)}"
