"""The scoreboard's data-quality list: guardrail findings (duplicates, empty masks...) once per dataset."""

from __future__ import annotations

from collections import Counter

from fmtest.report.html_format import MAX_EXTRA_ROWS, esc
from fmtest.verdict.results import CaseResult


def data_quality_section(cases: list[CaseResult]) -> str:
    """Findings per dataset, once each: every case of a dataset carries the same guardrail findings."""
    by_dataset: dict[str, dict[tuple, dict]] = {}
    for case in cases:
        findings = case.extra.get("data_quality")
        if not isinstance(findings, list):
            continue
        seen = by_dataset.setdefault(case.dataset, {})
        for f in findings:
            if isinstance(f, dict):
                seen.setdefault((str(f.get("kind")), str(f.get("image_id")), str(f.get("detail"))), f)
    blocks = []
    for dataset, unique in by_dataset.items():
        if not unique:
            continue
        findings = list(unique.values())
        kinds = ", ".join(f"{n} {k}" for k, n in Counter(str(f.get("kind")) for f in findings).items())
        rows = "".join(f"<tr><td>{esc(str(f.get('kind')))}</td><td><code>{esc(str(f.get('image_id') or '(dataset)'))}"
                       f"</code></td><td>{esc(str(f.get('detail', '')))}</td></tr>" for f in findings[:MAX_EXTRA_ROWS])
        more = len(findings) - MAX_EXTRA_ROWS
        note = f"<p class='note'>&hellip; and {more} more not shown.</p>" if more > 0 else ""
        blocks.append(f"<details class='dq' data-dataset='{esc(dataset, quote=True)}'{' open' if len(findings) <= 20 else ''}>"
                      f"<summary><b>{esc(dataset)}</b>: {len(findings)} finding{'s' if len(findings) != 1 else ''} "
                      f"({esc(kinds)})</summary><table class='extra dq'><thead><tr><th>kind</th><th>image id</th>"
                      f"<th>detail</th></tr></thead><tbody>{rows}</tbody></table>{note}</details>")
    if not blocks:
        return ""
    return f"<h2 id='fm-data-quality'>Data quality</h2>{''.join(blocks)}"
