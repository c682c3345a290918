"""The HTML scoreboard in a real browser: colours, thumbnails, sorting, filtering, lazy details, scale, the
image viewer, verdict charts, narrow windows."""

from pathlib import Path

import numpy as np
import pytest

from fmtest.data.sample import Sample
from fmtest.imaging.overlay import overlay_thumbnail
from fmtest.pipelines.base import Prediction
from fmtest.report.html import write_html
from fmtest.report.layers import LayerStore
from fmtest.report.outcomes import STYLES
from fmtest.verdict.results import (
    CaseResult,
    ImageResult,
    LayerManifest,
    LevelRow,
    Risk,
    Robustness,
    RunResults,
    Thumbnail,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def rgb(hex_colour: str) -> str:
    """`#007a5a` as a browser's computed style writes it: rgb(0, 122, 90)."""
    return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


TINTS = {outcome: rgb(s.tint) for outcome, s in STYLES.items()}  # the one outcome table every surface reads
COLOURS = {outcome: rgb(s.html) for outcome, s in STYLES.items()}
XSS = "<img src=x onerror='window.__pwned = 1'> crack near pin 3"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.close()
    assert not errors, errors


def thumbnails(n):
    rng = np.random.default_rng(1)
    out = []
    for i, image_id in enumerate(["test/void/001", "test/void/002", "test/void/004"][:n]):
        image = (0.3 + 0.2 * rng.random((90, 120))).astype(np.float32)
        gt = np.zeros((90, 120), bool)
        gt[20:50, 30:70] = True
        pred = np.roll(gt, 10 * i, axis=1)
        out.append(Thumbnail(image_id, overlay_thumbnail(image, pred, gt), image_id))
    return out


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "NOK" if i % 3 else "OK"
        predicted = "NOK" if i % 4 else "OK"
        rows.append(ImageResult(f"test/{'void' if label == 'NOK' else 'good'}/{i:03d}", "sha", label, predicted,
                                round(float(rng.random()), 3), round(float(rng.random()), 3) if label == "NOK" else None,
                                reasoning=XSS if i == 5 else None))
    return rows


def small_run():
    seg = CaseResult("padim-satsim", "padim", "satsim", "segmentation", "failed", "iou 0.410 < threshold 0.60",
                     metrics={"iou": 0.41, "iou_ci_low": 0.35, "iou_ci_high": 0.47}, thresholds={"iou": 0.6},
                     images=images(120), thumbnails=thumbnails(3))
    ok = CaseResult("saa_plus-satsim", "saa_plus", "satsim", "segmentation", "passed",
                    metrics={"iou": 0.71, "iou_ci_low": 0.65, "iou_ci_high": 0.77}, thresholds={"iou": 0.6},
                    images=images(10, seed=1))
    skip = CaseResult("gdino_sam-satsim", "gdino_sam", "satsim", "segmentation", "skipped",
                      "weights missing: groundingdino_swint_ogc.pth")
    err = CaseResult("padim-mvtec", "padim", "mvtec", "segmentation", "error", "DataError: mask size mismatch")
    return RunResults(cases=[seg, ok, skip, err], git_commit="0123abcd")


def table_ids(page, case_id):
    """Ids in a case's image table, once its rows exist: <details> fires `toggle` as a separate task,
    so a table built on opening can lag the click that opened it."""
    page.locator(f"[id='{case_id}'] table.images tbody tr td.id").first.wait_for(timeout=10_000)
    return page.eval_on_selector_all(f"[id='{case_id}'] table.images tbody tr td.id",
                                     "tds => tds.map(td => td.textContent)")


def test_scoreboard_in_browser(page, tmp_path):
    report = tmp_path / "scoreboard.html"
    write_html(small_run(), report)
    page.goto(report.as_uri())

    cells = page.query_selector_all("table.matrix td.cell:not(.empty)")
    assert len(cells) == 4
    for cell in cells:
        outcome = cell.get_attribute("class").split("o-")[1]
        assert cell.evaluate("td => getComputedStyle(td).backgroundColor") == TINTS[outcome]
        assert cell.query_selector(".badge").inner_text() == {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP",
                                                                 "error": "ERROR"}[outcome]
    assert "IoU 0.410" in page.inner_text("td.cell.o-failed")
    assert page.query_selector_all("table.images tbody tr") == []  # nothing rendered until opened

    page.click("td.cell.o-failed a")  # matrix cell -> its details open and render
    case = page.locator("[id='padim-satsim']")
    assert case.get_attribute("open") is not None
    natural_widths = case.locator(".thumbs img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert len(natural_widths) == 3 and all(w and w > 0 for w in natural_widths)

    rows = table_ids(page, "padim-satsim")
    outcomes = case.locator("tbody td.outcome").all_inner_texts()
    assert len(rows) == 50 and outcomes[0] == "slip"  # worst first: slips, then false alarms
    assert outcomes.index("false alarm") > outcomes.index("slip") and "slip" not in outcomes[outcomes.index("false alarm"):]
    assert "1\u201350 of 120" in case.locator(".page-status").inner_text()
    case.locator("button.next").click()
    assert table_ids(page, "padim-satsim")[0] not in rows

    case.locator("th[data-key=score] button").click()  # sort ascending, then descending
    scores = [float(s) for s in case.locator("tbody td.score").all_inner_texts()]
    assert scores == sorted(scores) and len(scores) == 50
    case.locator("th[data-key=score] button").click()
    scores = [float(s) for s in case.locator("tbody td.score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)

    case.locator("select.outcome-filter").select_option("slip")
    outcomes = case.locator("tbody td.outcome").all_inner_texts()
    assert outcomes and set(outcomes) == {"slip"} and len(outcomes) < 50
    case.locator("select.outcome-filter").select_option("")
    case.locator("input[type=search]").fill("void/00")
    assert sorted(table_ids(page, "padim-satsim")) == [f"test/void/00{i}" for i in (1, 2, 4, 5, 7, 8)]
    assert XSS in case.locator("td.reasoning").all_inner_texts()
    assert page.evaluate("window.__pwned") is None  # model text shown as text, never run

    case.locator(".thumbs figure").first.click()  # a thumbnail filters the table to its image
    assert table_ids(page, "padim-satsim") == ["test/void/001"]

    page.uncheck(".counts input[data-outcome=passed]")  # outcome filter on the case list
    assert page.locator("[id='saa_plus-satsim']").is_hidden()
    assert page.locator("[id='padim-satsim']").is_visible()
    page.screenshot(path=str(tmp_path / "scoreboard.png"), full_page=True)
    assert (tmp_path / "scoreboard.png").stat().st_size > 0


def test_history_hash_opens_case(page, tmp_path):
    report = tmp_path / "scoreboard.html"
    write_html(small_run(), report)
    page.goto(report.as_uri() + "#saa_plus-satsim")
    assert page.locator("[id='saa_plus-satsim']").get_attribute("open") is not None
    assert len(table_ids(page, "saa_plus-satsim")) == 10


def test_200_cases_10000_images_keep_the_initial_dom_small(page, tmp_path):
    thumbs = thumbnails(2)
    cases = []
    for p in range(10):
        for d in range(20):
            cases.append(CaseResult(f"pipe{p}-data{d}", f"pipe{p}", f"data{d}", "segmentation",
                                    ("passed", "failed", "skipped", "error")[(p + d) % 4],
                                    metrics={"iou": 0.5, "iou_ci_low": 0.4, "iou_ci_high": 0.6},
                                    thresholds={"iou": 0.6}, images=images(50, seed=p * 20 + d), thumbnails=thumbs))
    report = tmp_path / "big.html"
    write_html(RunResults(cases=cases), report)
    page.goto(report.as_uri())
    n_nodes = page.evaluate("document.getElementsByTagName('*').length")
    assert page.locator("td.cell:not(.empty)").count() == 200
    assert n_nodes < 4000, n_nodes  # ~10 nodes per case; 10,000 rendered rows would be > 80,000
    assert page.locator("table.images tbody tr").count() == 0
    page.locator("[id='pipe9-data19'] .case-id").click()
    assert len(table_ids(page, "pipe9-data19")) == 50
    assert page.locator("table.images tbody tr").count() == 50
    page.screenshot(path=str(tmp_path / "big.png"))


LADDER = (0.5, 1.0, 2.0)


def robustness_case(pipeline, dataset, perturbation, flips, deltas, outcome="passed"):
    rows = [LevelRow(perturbation, level, flip_rate=f, delta_iou=d, delta_f2=d / 2, false_alarm_rate=0.0, slip_rate=0.0)
            for level, f, d in zip(LADDER, flips, deltas, strict=True)]
    rows[1].outcome = outcome
    return CaseResult(f"{pipeline}-{dataset}-{perturbation}", pipeline, dataset, "robustness", outcome,
                      "flip rate 0.150 at blur=1 (tolerance 0.100)" if outcome == "failed" else None,
                      metrics={"flip_rate": rows[1].flip_rate, "delta_iou": rows[1].delta_iou,
                               "delta_f2": rows[1].delta_f2, "false_alarm_rate": 0.0, "slip_rate": 0.0},
                      thresholds={"max_flip_rate": 0.1, "max_metric_drop": 0.05},
                      robustness=Robustness(perturbation, LADDER[1], rows))


def robustness_run():
    cases = small_run().cases
    cases += [robustness_case("padim", "satsim", "blur", (0.05, 0.15, 0.4), (-0.02, -0.04, -0.1), "failed"),
              robustness_case("padim", "satsim", "jpeg", (0.0, 0.01, 0.02), (0.0, -0.01, -0.01)),
              robustness_case("saa_plus", "satsim", "blur", (0.0, 0.02, 0.05), (0.0, -0.01, -0.03))]
    return RunResults(cases=cases, git_commit="0123abcd")


def test_robustness_matrix_and_plots_render(page, tmp_path):
    report = tmp_path / "scoreboard.html"
    write_html(robustness_run(), report)
    page.goto(report.as_uri())

    matrix = page.locator("#fm-rob-matrix")
    assert matrix.locator("thead th[scope=col]").all_inner_texts()[0].startswith("blur")
    cells = matrix.locator("td.cell:not(.empty)")
    assert cells.count() == 3 and matrix.locator("td.cell.empty").count() == 1  # saa_plus was not run under jpeg
    failed = matrix.locator("td.cell[data-case='padim-satsim-blur']")
    assert failed.evaluate("td => getComputedStyle(td).backgroundColor") == TINTS["failed"]
    assert "FAIL" in failed.inner_text() and "flip 0.150" in failed.inner_text()
    passed = matrix.locator("td.cell[data-case='padim-satsim-jpeg']")
    assert passed.evaluate("td => getComputedStyle(td).backgroundColor") == TINTS["passed"]

    plots = page.locator("#fm-rob-plots svg.rob-plot")
    assert plots.count() == 3  # one per perturbation per pipeline, put in the page by the script
    for i in range(3):
        box = plots.nth(i).bounding_box()
        assert box["width"] > 150 and box["height"] > 100
        series = plots.nth(i).locator("g.series.s-flip polyline")
        assert series.evaluate("p => p.getBBox().width") > 50  # a real line, drawn across the levels
        assert plots.nth(i).locator("line.gate").evaluate("l => getComputedStyle(l).stroke") != "none"
        assert plots.nth(i).locator("line.tol-flip").count() == 1
    colours = {plots.first.locator(f"g.{css}").evaluate("g => getComputedStyle(g).stroke")
               for css in ("s-flip", "s-iou", "s-f2")}
    assert len(colours) == 3  # the three series are told apart (also by marker shape)

    page.locator("#fm-rob-plots figcaption a").first.click()  # a plot links to its case's details
    # the link sets the hash; the page opens the details on `hashchange`, which fires after the click returns
    page.wait_for_function("() => document.getElementById('padim-satsim-blur').open", timeout=10_000)
    assert page.locator("[id='padim-satsim-blur']").get_attribute("open") is not None
    page.locator("#fm-rob-matrix").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "robustness.png"), full_page=True)


def test_many_robustness_cases_keep_plots_out_of_the_dom_until_opened(page, tmp_path):
    cases = [robustness_case(f"pipe{p}", "satsim", name, (0.0, 0.02, 0.05), (0.0, -0.01, -0.02))
             for p in range(8) for name in ("blur", "jpeg", "brightness", "contrast", "gamma", "rotate", "translate",
                                            "gain_offset", "gaussian_noise")]
    report = tmp_path / "many.html"
    write_html(RunResults(cases=cases), report)
    page.goto(report.as_uri())
    assert page.locator("#fm-rob-matrix td.cell").count() == 72
    assert page.locator("svg.rob-plot").count() == 0  # 72 plots: rows start collapsed
    page.locator("details.rob-plots[data-pipeline=pipe3] > summary").click()
    # the plots are added by the toggle handler: wait for them rather than racing it on a loaded machine
    page.locator("details.rob-plots[data-pipeline=pipe3] svg.rob-plot").nth(8).wait_for(timeout=10_000)
    assert page.locator("svg.rob-plot").count() == 9
    assert page.locator("details.rob-plots[data-pipeline=pipe3] svg.rob-plot").count() == 9


# --------------------------------------------------------------------------- drill-down

PASSED_COLOUR = COLOURS["passed"]
H, W = 300, 400  # larger than a thumbnail (160 px): the viewer must show the layers at full size


def viewer_run(report):
    """A failed segmentation case whose 24 images' layers were written as evaluation would write them."""
    rng = np.random.default_rng(3)
    store = LayerStore(report, "padim-satsim")
    reference = Sample("reference", (0.4 + 0.02 * rng.random((H, W))).astype(np.float32), "OK")
    rows = []
    for i in range(24):
        label = "NOK" if i % 2 else "OK"
        gt = np.zeros((H, W), bool)
        if label == "NOK":
            gt[100 + i : 103 + i, 200:203] = True  # a 3-pixel void: invisible in a thumbnail
        predicted_mask = np.roll(gt, 2, axis=1) if i % 3 else np.zeros((H, W), bool)
        image = reference.image + 0.3 * gt
        score_map = np.where(predicted_mask, 1.5, 0.2).astype(np.float32)
        sample = Sample(f"test/{'void' if label == 'NOK' else 'good'}/{i:03d}", image, label, mask=gt)
        prediction = Prediction.from_mask(predicted_mask, score=float(score_map.max()), score_map=score_map)
        if i == 4:  # a false alarm
            prediction = Prediction.from_mask(gt | (rng.random((H, W)) > 0.999), score=1.2, score_map=score_map)
        store.add(sample, prediction, reference)
        iou = None if label == "OK" else (0.0 if not prediction.mask.any() else 0.2 + i / 50)
        rows.append(ImageResult(sample.id, "sha", label, prediction.label, prediction.score, iou))
    risk = Risk(slip_rate=0.33, slip_rate_ci_low=0.1, slip_rate_ci_high=0.65, slip_rate_upper_95=0.6,
                false_alarm_rate=0.08, false_alarm_rate_ci_low=0.01, false_alarm_rate_ci_high=0.3,
                target_slip_rate=0.01, defectives_needed_for_target=299, n_defective=12,
                verdict="this test set has 12: NOT enough", auroc_threshold_free_not_a_factory_figure=0.81)
    case = CaseResult("padim-satsim", "padim", "satsim", "segmentation", "failed", "iou 0.310 < threshold 0.60",
                      metrics={"iou": 0.31, "iou_ci_low": 0.2, "iou_ci_high": 0.4, "f2": 0.85}, thresholds={"iou": 0.6,
                                                                                                         "f2": 0.8},
                      images=rows, image_layers=LayerManifest(**store.manifest()), risk=risk,
                      breakdown={"die": {"iou": 0.5, "f2": 0.9, "n_images": 12},
                                 "wire bond": {"iou": 0.12, "f2": 0.7, "n_images": 12}})
    long_name = CaseResult("clip_surgery_sam-industrialsat_with_a_long_name", "clip_surgery_sam",
                           "industrialsat_with_a_long_name", "segmentation", "passed", risk=risk)
    return RunResults(cases=[case, long_name], git_commit="0123abcd")


def shown_layers(viewer):
    return viewer.locator("img.layer:visible").evaluate_all(
        "imgs => imgs.map(i => [i.dataset.layer, i.complete && i.naturalWidth])")


def test_viewer_shows_every_image_full_size_with_layer_toggles(page, tmp_path):
    report = tmp_path / "scoreboard.html"
    write_html(viewer_run(report), report)
    page.goto(report.as_uri() + "#padim-satsim")
    case = page.locator("[id='padim-satsim']")
    viewer = case.locator(".viewer")
    viewer.locator("img.layer[data-layer=gt]").wait_for(timeout=10_000)
    page.wait_for_function("() => [...document.querySelectorAll('.viewer img.layer')].every(i => i.hidden || "
                           "(i.complete && i.naturalWidth))")

    first_row = table_ids(page, "padim-satsim")[0]
    assert case.locator("tbody td.outcome").first.inner_text() == "slip"
    assert viewer.locator(".viewer-caption").inner_text().startswith(f"{first_row}: NOK \u2192 OK (slip)")
    assert "1 of 24" in viewer.locator(".viewer-position").inner_text()
    assert dict(shown_layers(viewer)) == {"image": W, "gt": W, "prediction": W}  # full size, not a thumbnail
    assert case.locator("tr.current td.id").inner_text() == first_row
    assert viewer.locator("input[data-layer=prediction]").is_checked()

    viewer.focus()
    page.keyboard.press("ArrowRight")  # the next-worst image, in the table's order
    second = table_ids(page, "padim-satsim")[1]
    assert viewer.locator(".viewer-caption").inner_text().startswith(second)
    page.keyboard.press("s")  # score map on, ground truth off
    viewer.locator("input[data-layer=gt]").uncheck()
    page.wait_for_function("() => { const i = document.querySelector(\".viewer img[data-layer=score_map]\"); "
                           "return !i.hidden && i.complete && i.naturalWidth > 0; }")
    assert {name for name, _ in shown_layers(viewer)} == {"image", "score_map", "prediction"}
    viewer.locator("input[data-layer=reference]").check()
    reference = viewer.locator("figure.viewer-reference img")
    page.wait_for_function("() => { const i = document.querySelector('.viewer-reference img'); "
                           "return i.complete && i.naturalWidth > 0; }")
    assert reference.is_visible() and reference.evaluate("i => i.naturalWidth") == W

    # "fit" shows the whole image in its pane, filling it one way; each zoom step enlarges from there
    stack, stage = viewer.locator(".viewer-stage .layer-stack"), viewer.locator(".viewer-stage")
    fit = stack.bounding_box()
    room_w = stage.evaluate("f => f.clientWidth")
    room_h = stage.evaluate("f => parseFloat(getComputedStyle(f).maxHeight) - f.querySelector('figcaption').offsetHeight")
    assert fit["width"] <= room_w + 1 and fit["height"] <= room_h + 1
    assert fit["width"] == pytest.approx(room_w, abs=2) or fit["height"] == pytest.approx(room_h, abs=2)
    assert fit["width"] / fit["height"] == pytest.approx(W / H, rel=0.02)
    widths = {}
    for zoom in ("2", "4", "pixels"):
        viewer.locator("select.viewer-zoom").select_option(zoom)
        widths[zoom] = stack.evaluate("s => s.getBoundingClientRect().width")
    assert widths["2"] == pytest.approx(2 * fit["width"], abs=1) and widths["4"] == pytest.approx(4 * fit["width"], abs=1)
    assert widths["pixels"] == pytest.approx(W, abs=1)  # one layer pixel per screen pixel
    viewer.locator("select.viewer-zoom").select_option("fit")
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=False)
    case.locator(".viewer").screenshot(path=str(tmp_path / "viewer_panel.png"))

    case.locator("table.images tbody tr").nth(5).click()  # a table row opens in the viewer
    sixth = table_ids(page, "padim-satsim")[5]
    assert viewer.locator(".viewer-caption").inner_text().startswith(sixth)

    # verdicts: a confusion cell filters the table; the histogram holds both classes and the threshold
    case.locator(".confusion td[data-outcome='false alarm']").click()
    assert set(case.locator("tbody td.outcome").all_inner_texts()) == {"false alarm"}
    histogram = case.locator("svg.histogram")
    assert histogram.locator("rect.h-ok").count() > 0 and histogram.locator("rect.h-nok").count() > 0
    assert histogram.locator("line.threshold").count() == 1
    assert histogram.evaluate("s => s.getBoundingClientRect().width") > 300
    assert case.locator("table.breakdown td.below").count() == 3  # both IoUs (< 0.6), wire bond F2 (< 0.8)
    case.locator(".verdict-charts").screenshot(path=str(tmp_path / "verdicts.png"))

    # a passing metric inside a failed case keeps the passing colour
    meets = case.locator("table.metrics .badge.o-passed")
    assert meets.inner_text() == "meets"
    assert meets.evaluate("b => getComputedStyle(b).backgroundColor") == PASSED_COLOUR
    labels = case.locator("h3:text('Risk at the operating point') + table th[scope=row]").all_inner_texts()
    assert "AUROC (threshold-free)" in labels and not [text for text in labels if "_" in text]


def test_risk_overview_fits_a_narrow_window(page, tmp_path):
    report = tmp_path / "scoreboard.html"
    write_html(viewer_run(report), report)
    page.set_viewport_size({"width": 700, "height": 900})
    page.goto(report.as_uri())
    table = page.locator("#fm-risk-table")
    wrap = page.locator(".table-wrap:has(#fm-risk-table)")
    assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth")  # nothing hidden behind a scroll bar
    rights = table.locator("td, th[scope=row]").evaluate_all("cs => cs.map(c => c.getBoundingClientRect().right)")
    assert rights and max(rights) <= 700
    first = table.locator("tbody tr").first.locator("td").first
    assert first.evaluate("td => getComputedStyle(td, '::before').content") == '"slip rate [95 % CI]"'
    table.screenshot(path=str(tmp_path / "risk_700.png"))


def test_robustness_plot_has_one_zero_label(page, tmp_path):
    report = tmp_path / "scoreboard.html"
    write_html(robustness_run(), report)
    page.goto(report.as_uri())
    plots = page.locator("#fm-rob-plots svg.rob-plot")
    plots.nth(2).wait_for(timeout=10_000)
    for i in range(plots.count()):
        ticks = plots.nth(i).locator("text.tick").all_inner_texts()
        assert ticks.count("0") <= 1, ticks
    page.locator("#fm-rob-plots").screenshot(path=str(tmp_path / "robustness_plots.png"))


def test_history_points_name_their_commit_and_flat_series_stay_flat(page, tmp_path):
    from fmtest.report.history import write_history
    from fmtest.report.results_file import write_json

    for day, (iou, commit) in enumerate([(0.62, "aaaa111"), (0.61, "bbbb222"), (0.48, "cccc333")]):
        case = CaseResult("padim-satsim", "padim", "satsim", "segmentation",
                          metrics={"iou": iou, "iou_ci_low": iou - 0.04, "iou_ci_high": iou + 0.04, "f2": 0.9},
                          thresholds={"iou": 0.5})
        write_json(RunResults(cases=[case], created=f"2026-11-2{day}T10:00:00Z", git_commit=commit),
                   tmp_path / "runs" / f"{day}.json")
    out = tmp_path / "history.html"
    write_history(tmp_path / "runs", out, progress=False)
    page.goto(out.as_uri())
    iou = page.locator("figure.metric-plot[data-metric=iou]")
    points = iou.locator(".point")
    assert points.count() == 3
    last = points.nth(2)
    assert "commit cccc333" in last.locator("title").text_content()
    assert last.evaluate("p => p.classList.contains('regression')")
    before = last.evaluate("p => getComputedStyle(p).strokeWidth")
    last.hover()
    assert last.evaluate("p => getComputedStyle(p).strokeWidth") != before  # the hovered point stands out
    f2 = page.locator("figure.metric-plot[data-metric=f2] circle.point")
    ys = {round(f2.nth(i).bounding_box()["y"], 1) for i in range(3)}
    assert len(ys) == 1  # flat
    frame = page.locator("figure.metric-plot[data-metric=f2] rect.panel").bounding_box()
    assert frame["y"] + 0.2 * frame["height"] < ys.pop() < frame["y"] + 0.8 * frame["height"]  # mid-panel, not stretched
    page.locator("section").first.screenshot(path=str(tmp_path / "history.png"))


def test_every_outcome_badge_has_its_outcomes_colour_whatever_cell_it_sits_in(page, tmp_path):
    """A passing case whose robustness cases failed sits in a failed (red) cell: its own badge stays green."""
    base = CaseResult("padim-satsim", "padim", "satsim", "segmentation", "passed", metrics={"iou": 0.7},
                      thresholds={"iou": 0.6})
    brittle = CaseResult("padim-satsim-blur", "padim", "satsim", "robustness", "failed", "flips",
                         metrics={"flip_rate": 0.3}, thresholds={"max_flip_rate": 0.1},
                         robustness=Robustness("blur", 1.0, [LevelRow("blur", 1.0, flip_rate=0.3)]))
    skipped = CaseResult("gdino_sam-satsim", "gdino_sam", "satsim", "segmentation", "skipped", "weights missing")
    report = tmp_path / "scoreboard.html"
    write_html(RunResults(cases=[base, brittle, skipped]), report)
    page.goto(report.as_uri())
    cell = page.locator("td.cell[data-case='padim-satsim']")
    assert "o-failed" in cell.get_attribute("class")  # the cell shows the worst of its cases
    assert cell.locator("a").first.locator(".badge").evaluate("b => getComputedStyle(b).backgroundColor") == \
        COLOURS["passed"]
    words = {s.word: outcome for outcome, s in STYLES.items()}
    badges = page.locator(".badge").evaluate_all(
        "bs => bs.map(b => [b.textContent.trim(), getComputedStyle(b).backgroundColor])")
    checked = [(text, colour) for text, colour in badges if text in words]
    assert len(checked) >= 6
    assert all(colour == COLOURS[words[text]] for text, colour in checked), checked


def test_a_phone_sized_window_scrolls_no_part_of_the_page_sideways(page, tmp_path):
    report = tmp_path / "scoreboard.html"
    write_html(viewer_run(report), report)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(report.as_uri() + "#padim-satsim")
    viewer = page.locator("[id='padim-satsim'] .viewer")
    viewer.locator("img.layer[data-layer=gt]").wait_for(timeout=10_000)
    page.wait_for_function("() => { const i = document.querySelector('.viewer-stage img.layer'); "
                           "return i.complete && i.naturalWidth > 0; }")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    stack = viewer.locator(".viewer-stage .layer-stack").bounding_box()
    assert stack["x"] >= 0 and stack["x"] + stack["width"] <= 390  # "fit" fits the phone's pane
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
