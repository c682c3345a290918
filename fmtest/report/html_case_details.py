"""The scoreboard's per-case details: a collapsed summary line per case, its body (metrics against
thresholds, verdicts and scores, breakdown, provenance, extra sections, the image viewer, worst-image
thumbnails) and its per-image rows as embedded JSON, which scoreboard.js turns into DOM only when the
case is opened. The viewer's layers are files next to the report (fmtest.report.layers), loaded by
the browser when shown; the page embeds only their names."""

from __future__ import annotations

import dataclasses
import json
import math
import re

from fmtest.metrics.specs import REGION_METRICS, format_metric, format_value, label
from fmtest.report.fidelity import study_note
from fmtest.report.html_case_charts import (
    breakdown_table,
    confusion_matrix,
    image_outcome,
    score_histogram,
    worst_first,
)
from fmtest.report.html_fidelity import fidelity_id
from fmtest.report.html_format import (
    MAX_EXTRA_ROWS,
    cell_text,
    esc,
    first_line,
    metric_interval,
    outcome_word,
)
from fmtest.report.html_robustness import ladder_table
from fmtest.util.text import plural
from fmtest.verdict.gates import Gate, gate_for, gates, main_metric
from fmtest.verdict.results import OUTCOME_WORD, CaseResult, ImageResult

IMAGE_COLUMNS = ("id", "label", "predicted", "outcome", "score", "iou", "reasoning", "error")
ALWAYS_SHOWN_COLUMNS = ("id", "label", "predicted", "outcome")
IMAGE_OUTCOMES = (("correct", "correct"), ("found", "found (defect flagged)"), ("passed", "passed (good part OK)"),
                  ("miss", "all misses"), ("slip", "slip (defect passed as OK)"),
                  ("false alarm", "false alarm (good part flagged)"), ("error", "error"))
SECTION_TITLES = {"baseline": "Regression against the baseline", "risk": "Risk at the operating point",
                  "regions": "Region figures (shown, not gated)",
                  "robustness": "Robustness", "data_quality": "Data quality", "usage": "Usage and cost",
                  "invalid_answers": "Invalid answers"}  # the case's sections shown in its details, in this order
RISK_NOTES = {  # matched as key prefixes, first match wins: most specific first
    "auroc": "threshold-free, not a factory figure",
    "recall_at": "recall at the score threshold set on good training images for the false-alarm budget",
    "defectives_needed": "defective images (with zero slips) needed to show the target slip rate",
    "slip_rate_upper": "95 % upper bound on the slip rate",
    "slip_rate": "share of defective parts passed as OK",
    "false_alarm_rate_at": "share of good test parts that threshold flagged: above the budget, the budget was missed",
    "false_alarm_rate": "share of good parts flagged NOK",
}
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def case_details(index: int, case: CaseResult, history_link: str | None) -> str:
    """A collapsed summary line; the body is filled from the JSON script next to it when opened."""
    name = main_metric(case)
    headline = ""
    if name is not None and name in case.metrics and case.outcome in ("passed", "failed"):  # a skip has no figure
        headline = f"{esc(label(name))} {format_metric(name, case.metrics[name])} {metric_interval(case, name)}"
        gate = gate_for(case, name)
        if gate:
            headline += f" / {'max' if gate.upper else 'threshold'} {format_metric(name, gate.limit, 2)}"
    history = f" <a href='{esc(history_link, quote=True)}'>history</a>" if history_link else ""
    payload = {"detail_html": _detail_html(case, history_link), **_image_rows(case.images), "layers": _layers(case)}
    outcome = esc(case.outcome, quote=True)
    return (f"<details class='case o-{outcome}' id='{esc(case.id, quote=True)}' data-index='{index}' "
            f"data-outcome='{outcome}'><summary><span class='badge'>"
            f"{outcome_word(case.outcome)}</span>"
            f"<span class='case-id'>{esc(case.id)}</span><span class='headline'>{headline}</span>"
            f"<span class='summary-msg'>{esc(first_line(case.message))}</span>{history}</summary>"
            f"<div class='case-body'></div></details>"
            f"<script type='application/json' id='fm-case-data-{index}'>{_json_for_script(payload)}</script>")


def _json_for_script(payload: object) -> str:
    """JSON that cannot end its <script> element early, whatever the strings in it contain."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _detail_html(case: CaseResult, history_link: str | None) -> str:
    parts = [f"<p class='note'>{esc(case.task)} &middot; pipeline <b>{esc(case.pipeline)}</b> &middot; dataset "
             f"<b>{esc(case.dataset)}</b>"
             + (f" &middot; <a href='{esc(history_link, quote=True)}'>metric history</a>" if history_link else "")
             + "</p>"]
    note = study_note(case, main_metric(case))
    if note:
        link = f" <a href='#{esc(fidelity_id(case), quote=True)}'>how and why</a>" if case.departures else ""
        parts.append(f"<p class='study'>{esc(note)}{link}</p>")
    if case.message:
        parts.append(f"<pre class='message'>{esc(case.message)}</pre>")
    if case.task == "robustness" and case.outcome == "skipped":  # no figure: the reason is the message above
        pass
    elif case.metrics or case.thresholds:
        at = (f" at the gated severity {case.robustness.gate_level:g}" if case.task == "robustness" and case.robustness
              else "")
        parts.append(f"<h3>Metrics{at}</h3>" + _metrics_table(case))
    if case.images and case.task != "robustness":
        parts.append("<h3>Verdicts and scores</h3><div class='verdict-charts'>"
                     f"<div>{confusion_matrix(case.images)}</div><div>{score_histogram(case)}</div></div>")
    breakdown = breakdown_table(case)
    if breakdown:
        parts.append(f"<h3>Breakdown</h3>{breakdown}")
    if case.task == "comparison":
        parts.append(_comparison_section(case))
    parts.append(_provenance(case))
    for key, title in SECTION_TITLES.items():
        section = _section(case, key)
        if section:
            parts.append(f"<h3>{esc(title)}</h3>{section}")
    if _layers(case):
        parts.append("<h3>Image viewer</h3>" + _viewer_shell())
    if case.thumbnails:
        parts.append("<h3>Worst images</h3>" + _thumbnails(case))
    if case.images:
        parts.append(f"<h3>Images ({len(case.images)}, worst first)</h3>" + _image_table_shell(case.images))
    return "".join(parts)


def _comparison_section(case: CaseResult) -> str:
    """The pair side by side, and the images whose verdict differs, new slips first."""
    pair = case.comparison
    if pair is None:  # the pair could not be compared: its message says why
        return ""
    candidate, reference = pair.candidate, pair.reference
    head = (f"<table class='pair'><thead><tr><th scope='col'></th><th scope='col'>candidate</th>"
            f"<th scope='col'>reference</th></tr></thead><tbody>"
            f"<tr><th scope='row'>case</th><td>{esc(candidate.case)}</td><td>{esc(reference.case)}</td></tr>"
            f"<tr><th scope='row'>verdict</th><td>{esc(candidate.outcome)}</td><td>{esc(reference.outcome)}</td></tr>"
            f"<tr><th scope='row'>model</th><td><code>{esc(str(candidate.model_sha256 or ''))}</code></td>"
            f"<td><code>{esc(str(reference.model_sha256 or ''))}</code></td></tr></tbody></table>")
    changes = pair.image_changes
    if not changes:
        return f"<h3>Candidate vs reference</h3>{head}<p>No image changes its verdict.</p>"
    rows = "".join(
        f"<tr class='{esc(r.change)}'><td>{esc(label(r.change))}</td><td>{esc(r.id)}</td>"
        f"<td>{esc(r.label)}</td><td>{esc(r.reference)} &rarr; {esc(r.candidate)}</td>"
        f"<td class='num'>{esc(format_value(r.reference_iou))} &rarr; {esc(format_value(r.candidate_iou))}"
        "</td></tr>" for r in changes[:MAX_EXTRA_ROWS])
    more = f"<p class='note'>{len(changes) - MAX_EXTRA_ROWS} more not shown.</p>" if len(changes) > MAX_EXTRA_ROWS else ""
    return (f"<h3>Candidate vs reference</h3>{head}<h3>Images whose verdict changes ({len(changes)}, new slips "
            f"first)</h3><table class='changes'><thead><tr><th scope='col'>change</th><th scope='col'>image</th>"
            f"<th scope='col'>truth</th><th scope='col'>verdict</th><th scope='col' class='num'>IoU</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{more}")


def _metrics_table(case: CaseResult) -> str:
    """One row per metric: value, its interval, its threshold and whether it meets it; then bare settings."""
    case_gates = judged_gates(case)
    names = [n for n in dict.fromkeys([*(g.metric for g in case_gates if g.metric), *case.metrics])
             if not n.endswith(("_ci_low", "_ci_high"))]
    rows = []
    for name in names:
        value, gate = case.metrics.get(name), next((g for g in case_gates if g.metric == name), None)
        limit = verdict = ""
        if gate:
            limit = f"{'&le;' if gate.upper else '&ge;'} {format_metric(name, gate.limit, 2)}"
            miss = "above" if gate.upper else "below"
            verdict = (f"<span class='badge o-{'passed' if gate.met(value) else 'failed'}'>"
                       f"{'meets' if gate.met(value) else miss}</span>")
        rows.append(f"<tr><th scope='row' title='{esc(name, quote=True)}'>{esc(label(name))}</th>"
                    f"<td class='num'>{esc(_figure(name, value))}</td>"
                    f"<td class='num'>{metric_interval(case, name)}</td><td class='num'>{limit}</td><td>{verdict}</td></tr>")
    judged = {g.name for g in case_gates}
    for gate in (g for g in gates(case) if g.metric is None and g.name not in judged):
        rows.append(f"<tr><th scope='row' title='{esc(gate.name, quote=True)}'>{esc(label(gate.name))}</th><td></td><td></td>"
                    f"<td class='num'>{format_value(gate.limit)}</td><td class='note'>setting</td></tr>")
    return ("<table class='metrics'><thead><tr><th>metric</th><th class='num'>value</th><th class='num'>95 % CI</th>"
            f"<th class='num'>threshold</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def judged_gates(case: CaseResult) -> list[Gate]:
    """The gates a case was judged by: its thresholds', and for a robustness case also the metric drop it allows
    (`max_metric_drop` judges each metric change at the gated level, as `fmtest.verdict.robustness` does)."""
    found = [g for g in gates(case) if g.metric is not None]
    drop = case.thresholds.get("max_metric_drop")
    if case.task == "robustness" and drop is not None:
        found += [Gate("max_metric_drop", m, -float(drop), upper=False) for m in ("delta_iou", "delta_f2")
                  if isinstance(case.metrics.get(m), int | float) and not math.isnan(case.metrics[m])]
    return found


def _figure(name: str, value: object) -> str:
    """A metric's value as its spec reads it; a severity level as the ladder writes it."""
    if name == "level" and isinstance(value, int | float):
        return f"{value:g}"
    return format_metric(name, value)


def _provenance(case: CaseResult) -> str:
    items = [("model", case.model_sha256), ("config", case.config_fingerprint),
             ("dataset", case.dataset_fingerprint),
             ("duration", None if case.duration_s is None else f"{case.duration_s:.1f} s")]
    shown = [f"{label} <code>{esc(str(value))}</code>" for label, value in items if value is not None]
    return f"<p class='note'>{' &middot; '.join(shown)}</p>" if shown else ""


def _section(case: CaseResult, key: str) -> str:
    """One of the case's sections as HTML, or "" when the case has none: regression badges, risk notes, the
    robustness ladder, the data-quality findings, what an API spent, the unusable answers."""
    if key == "baseline" and case.baseline is not None:
        return (f"<p>{esc(case.baseline.message)}</p>"
                + _records_table([{"metric": name, **dataclasses.asdict(change)}
                                  for name, change in case.baseline.changes.items()]) if case.baseline.changes else
                f"<p>{esc(case.baseline.message)}</p>")
    if key == "risk" and case.risk is not None:  # overview columns are in html_risk; here every figure, noted
        return _mapping_table(dataclasses.asdict(case.risk), notes=True)
    if key == "regions" and case.regions is not None:
        return _regions_section(case)
    if key == "robustness" and case.robustness is not None and case.outcome != "skipped":
        return ladder_table(case)
    if key == "data_quality" and case.data_quality:
        return _records_table([dataclasses.asdict(f) for f in case.data_quality])
    if key == "usage" and case.usage:
        return _mapping_table(case.usage)
    if key == "invalid_answers" and case.invalid_answers:  # only API pipelines have any
        return (f"<p class='warn'>{plural(case.invalid_answers, 'model answer')} "
                f"{'was' if case.invalid_answers == 1 else 'were'} unusable; "
                "the case is judged only when their share is within max_invalid_answer_rate.</p>")
    return ""


def _regions_section(case: CaseResult) -> str:
    """The region figures with their grid error bounds, what they were computed on, and the recall of defect
    regions by size. Gated only where the config sets a threshold on one of them."""
    regions = case.regions
    gated = {g.metric for g in judged_gates(case)}
    rows = "".join(
        f"<tr><th scope='row' title='{esc(name, quote=True)}'>{esc(label(name))}</th>"
        f"<td class='num'>{esc(format_metric(name, case.metrics[name]))}</td>"
        f"<td class='num'>&plusmn; {esc(f'{regions.error_bounds.get(name, math.nan):.1e}')}</td>"
        f"<td class='note'>{'gated by its threshold' if name in gated else 'shown, not gated'}</td></tr>"
        for name in REGION_METRICS if name in case.metrics)
    figures = ("<table class='extra'><thead><tr><th>figure</th><th class='num'>value</th>"
               f"<th class='num'>grid error bound</th><th></th></tr></thead><tbody>{rows}</tbody></table>")
    basis = (f"<p class='note'>{plural(regions.n_regions, 'defect region')} on {plural(regions.n_images, 'image')} "
             f"with a score map; AU-PRO up to a false-positive rate of {regions.fpr_limit:g}; pixel AUROC is "
             "threshold-free, not a factory figure.</p>")
    size_rows = "".join(
        f"<tr><td>{row.min_area}{'+' if row.max_area is None else f'&ndash;{row.max_area - 1}'} px</td>"
        f"<td class='num'>{row.n_found} / {row.n_regions}</td><td class='num'>{esc(format_value(row.recall))}</td>"
        f"<td class='num'>[{esc(format_value(row.recall_ci_low))}, {esc(format_value(row.recall_ci_high))}]</td></tr>"
        for row in regions.recall_by_size)
    sizes = ("<table class='extra region-sizes'><thead><tr><th>defect size</th><th class='num'>found</th>"
             "<th class='num'>recall</th><th class='num'>95 % CI</th></tr></thead>"
             f"<tbody>{size_rows}</tbody></table>") if size_rows else ""
    return figures + basis + sizes


def _generic(value: object) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _records_table(value)
    if isinstance(value, dict):
        return _mapping_table(value)
    return f"<p>{esc(cell_text(value))}</p>"


def _records_table(records: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in records for k in r))
    body = []
    for record in records[:MAX_EXTRA_ROWS]:
        cells = "".join(_record_cell(col, record.get(col)) for col in columns)
        body.append(f"<tr>{cells}</tr>")
    more = len(records) - MAX_EXTRA_ROWS
    note = f"<p class='note'>&hellip; and {more} more not shown.</p>" if more > 0 else ""
    head = "".join(f"<th>{esc(label(str(c)))}</th>" for c in columns)
    return f"<table class='extra'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def _record_cell(column: str, value: object) -> str:
    if column == "outcome" and isinstance(value, str):
        css = value if value in OUTCOME_WORD else "skipped"
        return f"<td><span class='badge o-{esc(css)}'>{outcome_word(value)}</span></td>"
    if column == "regressed" and isinstance(value, bool):
        return (f"<td><span class='badge o-{'failed' if value else 'passed'}'>"
                f"{'REGRESSED' if value else 'ok'}</span></td>")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    text = format_metric(column, value) if numeric else cell_text(value)
    return f"<td{' class=num' if numeric else ''}>{esc(text)}</td>"


def _mapping_table(mapping: dict, *, notes: bool = False) -> str:
    """Key/value rows; `x_ci_low`/`x_ci_high` keys are folded into x's row as its interval."""
    rows = []
    for key, value in mapping.items():
        key = str(key)
        bounds = (mapping.get(f"{key}_ci_low"), mapping.get(f"{key}_ci_high"))
        if key.endswith(("_ci_low", "_ci_high")) and key.rsplit("_ci_", 1)[0] in mapping:
            continue
        if all(isinstance(b, int | float) for b in bounds):
            value = {"value": value, "ci_low": bounds[0], "ci_high": bounds[1]}
        note = next((text for prefix, text in RISK_NOTES.items() if key.startswith(prefix)), "") if notes else ""
        if isinstance(value, dict) and isinstance(value.get("note") or value.get("label"), str):
            note = value.get("note") or value.get("label")
        numeric = isinstance(value, int | float | dict | list) and not isinstance(value, bool)
        rows.append(f"<tr><th scope='row' title='{esc(key, quote=True)}'>{esc(label(key))}</th>"
                    f"<td{' class=num' if numeric else ''}>{esc(cell_text(value))}</td>"
                    + (f"<td class='note'>{esc(note)}</td>" if notes else "") + "</tr>")
    return f"<table class='extra'><tbody>{''.join(rows)}</tbody></table>"


def _thumbnails(case: CaseResult) -> str:
    figures = []
    for thumb in case.thumbnails:
        data = "".join(thumb.png_base64.split())
        if not _BASE64.fullmatch(data):
            figures.append(f"<figure><figcaption>{esc(thumb.id)}: thumbnail unreadable</figcaption></figure>")
            continue
        caption = thumb.caption or thumb.id
        figures.append(f"<figure data-image-id='{esc(thumb.id, quote=True)}' title='show in the table'>"
                       f"<img src='data:image/png;base64,{data}' alt='{esc(caption, quote=True)}'>"
                       f"<figcaption>{esc(caption)}</figcaption></figure>")
    legend = ("<div class='legend'><span><i class='gt'></i>ground truth</span><span><i class='pred'></i>prediction"
              "</span><span><i class='ign'></i>not scored</span></div>")
    return f"{legend}<div class='thumbs'>{''.join(figures)}</div>"


def _image_columns(images: list[ImageResult]) -> list[str]:
    """Optional columns only when some image has a value: no empty IoU column for a classifier."""
    return [c for c in IMAGE_COLUMNS
            if c in ALWAYS_SHOWN_COLUMNS or any(getattr(img, c) is not None for img in images)]


def _image_rows(images: list[ImageResult]) -> dict:
    """Rows worst first: the table opens on the images that need a look."""
    columns = _image_columns(images)
    rows = [[image_outcome(img) if c == "outcome" else getattr(img, c) for c in columns] for img in worst_first(images)]
    return {"columns": columns, "rows": rows}


def _layers(case: CaseResult) -> dict | None:
    """The viewer's files for this case's images, from the manifest evaluation recorded; None without one."""
    manifest = case.image_layers
    if manifest is None:
        return None
    known = {img.id for img in case.images}
    files = {image_id: dict(layers) for image_id, layers in manifest.images.items() if image_id in known}
    return {"folder": manifest.folder, "images": files} if files else None


VIEWER_TOGGLES = (("gt", "ground truth", "g", True), ("prediction", "prediction", "p", True),
                  ("score_map", "score map", "s", False), ("reference", "reference", "r", False))


def _viewer_shell() -> str:
    """Controls and an empty stage; scoreboard.js loads an image's layers when it is shown."""
    toggles = "".join(f"<label title='key {key}'><input type='checkbox' data-layer='{layer}'"
                      f"{' checked' if on else ''}> {text}</label>" for layer, text, key, on in VIEWER_TOGGLES)
    zooms = "".join(f"<option value='{v}'{' selected' if v == 'fit' else ''}>{t}</option>"
                    for v, t in (("fit", "fit"), ("2", "2\u00d7 fit"), ("4", "4\u00d7 fit"), ("pixels", "1:1 pixels")))
    return ("<div class='viewer' tabindex='0' aria-label='image viewer: left and right arrows step through the images'>"
            "<div class='viewer-bar'><button type='button' class='viewer-prev'>&larr;</button>"
            "<span class='viewer-position'></span><button type='button' class='viewer-next'>&rarr;</button>"
            f"<span class='viewer-toggles'>{toggles}</span><label>zoom <select class='viewer-zoom'>{zooms}</select>"
            "</label></div><p class='viewer-caption'></p>"
            "<div class='legend'><span><i class='gt'></i>ground truth</span><span><i class='pred'></i>prediction</span>"
            "<span><i class='ign'></i>not scored</span><span><i class='score-scale'></i>score map 0 &ndash; "
            "threshold &ndash; 2&times; threshold</span></div>"
            "<div class='viewer-panels'><figure class='viewer-stage'><div class='layer-stack'>"
            "<img class='layer' data-layer='image' alt=''>"
            "<img class='layer overlay' data-layer='score_map' alt=''>"
            "<img class='layer overlay' data-layer='prediction' alt=''>"
            "<img class='layer overlay' data-layer='gt' alt=''></div><figcaption>image</figcaption></figure>"
            "<figure class='viewer-reference' hidden><div class='layer-stack'><img class='layer' data-layer='reference' "
            "alt='reference image'></div><figcaption>defect-free reference</figcaption></figure></div></div>")


def _image_table_shell(images: list[ImageResult]) -> str:
    """Controls and an empty table; scoreboard.js fills one page of rows at a time."""
    columns = _image_columns(images)
    options = "".join(f"<option value='{esc(v, quote=True)}'>{esc(label)}</option>" for v, label in IMAGE_OUTCOMES)
    head = "".join(f"<th data-key='{c}' class='{c}{' num' if c in ('score', 'iou') else ''}'>"
                   f"<button type='button'>{c}</button></th>" for c in columns)
    return ("<div class='images'><div class='image-controls'>"
            "<label>show <select class='outcome-filter'><option value=''>all</option>"
            f"{options}</select></label>"
            "<input type='search' placeholder='filter: id, label, reasoning...' aria-label='filter images'>"
            "</div><div class='pager'><button type='button' class='prev'>&larr; previous</button>"
            "<span class='page-status'></span><button type='button' class='next'>next &rarr;</button></div>"
            f"<table class='images'><thead><tr>{head}</tr></thead><tbody></tbody></table></div>")
