"""A flat metrics file for tools that diff numbers between branches, read as they are:

- `.json` (default): `{"<case>": {"iou": 0.52, "iou_ci_low": 0.47, ...}}`, which `dvc metrics diff`
  reads (declare it under `metrics:` in dvc.yaml) and any script can load;
- `.txt` / `.prom`: OpenMetrics text, `fmtest_iou{case="padim-satsim"} 0.52`, the format GitLab's
  `artifacts:reports:metrics` shows in the merge-request widget.

Only finite numbers go in: a NaN or a missing value is left out rather than written as a value
another tool could misread. Skipped cases have no numbers and are absent.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from pathlib import Path

from fmtest.metrics.specs import is_count
from fmtest.util.fsutil import atomic_write
from fmtest.verdict.results import RunResults

OPENMETRICS_SUFFIXES = (".txt", ".prom")
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_:]")


def case_metrics(results: RunResults) -> dict[str, dict[str, float | int]]:
    """Case id -> metric -> finite value, in the run's case order and each case's metric order."""
    out: dict[str, dict[str, float | int]] = {}
    for case in results.cases:
        finite = {name: _number(name, value) for name, value in case.metrics.items() if _is_finite_number(value)}
        if finite:
            out[case.id] = finite
    return out


def render_json(results: RunResults) -> str:
    return json.dumps(case_metrics(results), indent=2, allow_nan=False) + "\n"


def render_openmetrics(results: RunResults) -> str:
    """One gauge family per metric, one sample per case, ended by the `# EOF` OpenMetrics requires."""
    families: dict[str, list[tuple[str, float | int]]] = {}
    for case_id, metrics in case_metrics(results).items():
        for name, value in metrics.items():
            families.setdefault(f"fmtest_{_NAME_UNSAFE.sub('_', name)}", []).append((case_id, value))
    lines = []
    for family, samples in families.items():
        lines.append(f"# TYPE {family} gauge")
        lines += [f'{family}{{case="{_label_value(case_id)}"}} {value!r}' for case_id, value in samples]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def write_metrics_file(results: RunResults, path: Path) -> None:
    """OpenMetrics text for a `.txt`/`.prom` path, JSON for any other."""
    text = render_openmetrics(results) if Path(path).suffix.lower() in OPENMETRICS_SUFFIXES else render_json(results)
    atomic_write(path, text)


def _is_finite_number(value: object) -> bool:
    """Python and numpy numbers alike; booleans are not metrics."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _number(name: str, value: numbers.Real) -> float | int:
    """Plain Python numbers; counts recorded as floats (n_images = 90.0) are written as integers."""
    return int(value) if is_count(name) and float(value).is_integer() else float(value)


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
