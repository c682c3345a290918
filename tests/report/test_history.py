import argparse
import json
import re

import pytest

from fmtest.cli.history import register_cli
from fmtest.errors import ConfigError, DataError
from fmtest.report.history import (
    MIN_SPAN,
    PLOT_BOTTOM,
    PLOT_TOP,
    Y_PADDING,
    load_history,
    plot_case,
    write_history,
    y_range,
)
from fmtest.report.results_file import write_json
from fmtest.verdict.results import CaseResult, RunResults


def run(created, iou, far=0.05, speed=10.0, commit="c0ffee", flips=0.05):
    seg = CaseResult("padim-satsim", "padim", "satsim", "segmentation", "passed" if iou >= 0.5 else "failed",
                     metrics={"iou": iou, "iou_ci_low": iou - 0.05, "iou_ci_high": iou + 0.05, "n_images": 40,
                              "images_per_second": speed, "fit_seconds": speed},
                     thresholds={"iou": 0.5})
    cls = CaseResult("gemini_basic-mvtec", "gemini_basic", "mvtec", "classification",
                     metrics={"f2": 0.9, "false_alarm_rate": far}, thresholds={"f2": 0.8})
    robust = CaseResult("padim-satsim-blur", "padim", "satsim", "robustness",
                        metrics={"flip_rate": flips, "custom_risk": flips}, thresholds={"max_custom_risk": 0.5})
    return RunResults(cases=[seg, cls, robust], created=created, git_commit=commit)


@pytest.fixture
def runs_dir(tmp_path):
    d = tmp_path / "runs"
    # file names deliberately out of time order: history must sort by `created`
    write_json(run("2026-11-20T10:00:00Z", 0.60, speed=10.0), d / "c.json")
    write_json(run("2026-11-21T10:00:00Z", 0.58, speed=2.0), d / "a.json")  # drop of exactly 0.02: not flagged
    write_json(run("2026-11-22T10:00:00Z", 0.49, far=0.10, commit="badbad1234"), d / "nested" / "b.json")
    write_json(run("2026-11-23T10:00:00Z", 0.52, flips=0.15), d / "0.json")
    (d / "broken.json").write_text("{not json")
    (d / "old.json").write_text(json.dumps({"cases": [], "fmtest_version": "0.0.1"}))
    (d / "list.json").write_text("[1, 2]")
    (d / "alien.json").write_text(json.dumps({"created": "2026-11-24T00:00:00Z", "cases": [{"bogus": 1}]}))
    return d


def test_runs_ordered_by_created_and_bad_files_named(runs_dir):
    history = load_history(runs_dir)
    assert [r.results.created[:10] for r in history.runs] == ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
    assert len(history.problems) == 4
    for name in ("broken.json", "old.json", "list.json", "alien.json"):
        assert sum(name in p for p in history.problems) == 1, name
    assert any("created" in p for p in history.problems if "old.json" in p)


def test_regressions_are_drops_beyond_tolerance(runs_dir):
    history = load_history(runs_dir)
    seg = history.regressions["padim-satsim"]
    assert [(r.metric, r.run_index, round(r.delta, 3)) for r in seg] == [("iou", 2, -0.09)]  # not the 0.02 drop
    cls = history.regressions["gemini_basic-mvtec"]  # a rising false-alarm rate is a regression
    assert [(r.metric, r.run_index) for r in cls] == [("false_alarm_rate", 2)]
    robust = history.regressions["padim-satsim-blur"]  # rising flip rate, and a metric under a `max_` gate
    assert [(r.metric, r.run_index) for r in robust] == [("flip_rate", 3), ("custom_risk", 3)]
    assert not any(load_history(runs_dir, tolerance=0.1).regressions.values())


def metric_svg(plots: str, metric: str) -> str:
    return re.search(rf"<figure class='metric-plot' data-metric='{metric}'>(.*?)</figure>", plots, re.DOTALL).group(1)


def test_plot_marks_regressions_only_where_found(runs_dir):
    iou = metric_svg(plot_case(load_history(runs_dir), "padim-satsim"), "iou")
    assert re.findall(r"<path class='point regression' data-run='(\d+)'", iou) == ["2"]
    assert len(re.findall(r"<circle class='point'", iou)) == 3
    relaxed = metric_svg(plot_case(load_history(runs_dir, tolerance=0.5), "padim-satsim"), "iou")
    assert "regression" not in relaxed


def test_every_point_names_its_run_and_commit(runs_dir):
    iou = metric_svg(plot_case(load_history(runs_dir), "padim-satsim"), "iou")
    titles = re.findall(r"<title>(run \d[^<]*)</title>", iou)
    assert titles[2] == ("run 2, 2026-11-22T10:00:00Z, commit badbad1234: iou 0.490 [0.440, 0.540]; "
                         "regression from 0.580 (-0.090)")
    assert titles[0].startswith("run 0, 2026-11-20T10:00:00Z, commit c0ffee: iou 0.600")


def test_a_flat_series_is_drawn_flat(runs_dir):
    f2 = metric_svg(plot_case(load_history(runs_dir), "gemini_basic-mvtec"), "f2")  # 0.9 in every run
    ys = {float(y) for y in re.findall(r"<circle class='point' data-run='\d' cx='[\d.]+' cy='([\d.]+)'", f2)}
    assert len(ys) == 1
    assert re.findall(r"<text class='tick y-tick'[^>]*>([^<]*)</text>", f2) == ["0.79", "0.91"]  # 0.8 is the threshold
    half = MIN_SPAN / 2 * (1 + 2 * Y_PADDING)
    assert y_range("f2", [0.9]) == pytest.approx((0.9 - half, 0.9 + half))  # at least MIN_SPAN, however flat
    assert y_range("f2", [0.99, 1.0]) == pytest.approx((1.0 - 2 * half, 1.0))  # slid inside [0, 1]
    assert y_range("iou", [0.5, 0.9]) == pytest.approx((0.46, 0.94))  # a real change spans the panel
    assert y_range("images_per_second", [10.0, 10.0]) == (0.0, pytest.approx(11.0))
    assert PLOT_TOP < ys.pop() < PLOT_BOTTOM


def test_write_history_page(runs_dir, tmp_path):
    out = tmp_path / "site" / "history.html"
    write_history(runs_dir, out, progress=False)
    page = out.read_text(encoding="utf-8")
    assert "<section id='padim-satsim'>" in page and "<section id='gemini_basic-mvtec'>" in page
    plots = re.findall(r"<section id='([\w-]+)'>.*?<div class='plots'>(.*?)</div>", page, re.DOTALL)
    assert [case for case, _ in plots] == ["padim-satsim", "gemini_basic-mvtec", "padim-satsim-blur"]
    assert re.findall(r"data-metric='(\w+)'", plots[0][1]) == ["iou", "images_per_second", "fit_seconds"]
    assert "iou: 0.580 &rarr; 0.490 (-0.090)" in page and "badbad1234" in page
    assert "broken.json" in page and "4 runs, 3 cases" in page
    assert "http" not in page  # self-contained


def test_cli(runs_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "h.html"
    args = parser.parse_args(["history", str(runs_dir), "--out", str(out), "--tolerance", "0.1", "--no-progress"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "4 runs, 3 cases, 0 regressions" in captured.out
    assert "broken.json" in captured.err and "alien.json" in captured.err
    assert out.exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_history(tmp_path / "missing")
    (tmp_path / "junk.json").write_text("nope")
    with pytest.raises(DataError, match=r"no readable fmtest results JSON.*\(1 file skipped\)"):
        write_history(tmp_path, tmp_path / "h.html", progress=False)
    with pytest.raises(ConfigError, match="tolerance"):
        load_history(tmp_path, tolerance=-0.1)


def test_runs_of_one_day_are_told_apart_on_the_x_axis_by_time_and_commit(tmp_path):
    d = tmp_path / "runs"
    write_json(run("2026-12-02T09:14:00Z", 0.6, commit="aaaaaaa111"), d / "1.json")
    write_json(run("2026-12-02T15:40:00Z", 0.6, commit="bbbbbbb222"), d / "2.json")
    plot = plot_case(load_history(d), "padim-satsim")
    ticks = re.findall(r"<text class='tick x-tick'[^>]*><tspan[^>]*>([^<]*)</tspan><tspan[^>]*>([^<]*)</tspan>", plot)
    assert ticks[:2] == [("12-02 09:14", "aaaaaaa"), ("12-02 15:40", "bbbbbbb")]


def test_a_run_served_from_the_cache_is_marked_cached_not_plotted_as_a_zero_fit_time(tmp_path):
    from fmtest.verdict.results import CacheUse

    d = tmp_path / "runs"
    fresh, cached = run("2026-12-02T09:00:00Z", 0.6), run("2026-12-02T10:00:00Z", 0.6)
    fresh.cases[0].cache = CacheUse(hits=0, predicted=40)
    cached.cases[0].cache = CacheUse(hits=40, predicted=0)
    cached.cases[0].metrics["fit_seconds"] = 0.0
    write_json(fresh, d / "1.json")
    write_json(cached, d / "2.json")
    plot = plot_case(load_history(d), "padim-satsim")
    fit = plot[plot.index("data-metric='fit_seconds'"):]
    fit = fit[:fit.index("</figure>")]
    assert re.findall(r"class='point' data-run='(\d)'", fit) == ["0"]  # the cached run is no point at 0
    assert re.findall(r"class='cached' data-run='(\d)'", fit) == ["1"] and ">cached<" in fit
    iou = plot[plot.index("data-metric='iou'"):plot.index("data-metric='iou'") + 3000]
    assert re.findall(r"class='point' data-run='(\d)'", iou.split("</figure>")[0]) == ["0", "1"]  # its IoU is real


def test_the_page_counts_in_the_right_number(tmp_path):
    from fmtest.report.history import render_history_html

    d = tmp_path / "runs"
    one = run("2026-12-02T09:00:00Z", 0.6)
    one.cases = one.cases[:1]
    write_json(one, d / "1.json")
    page = render_history_html(load_history(d), progress=False)
    assert "1 run, 1 case." in page and "1 cases" not in page and "1 runs" not in page
