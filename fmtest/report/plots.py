"""A case's plots for a reviewer in an experiment tracker, as `mlflow.evaluate` logs them: the confusion matrix, the
precision-recall curve of its scores and the histogram of its per-image IoU. Pure functions of the per-image rows,
each a matplotlib figure (drawn off screen); matplotlib is imported only here, on use."""

from __future__ import annotations

import numpy as np

from fmtest.verdict.results import CaseResult
from fmtest.verdict.scoring import nok_arrays


def case_figures(case: CaseResult) -> dict[str, object]:
    """{artifact file: figure} for what the case's rows support: a confusion matrix of every judged case, a PR curve
    when every image has a score and both labels occur, an IoU histogram when defective images have an IoU."""
    if not case.images or case.outcome not in ("passed", "failed"):
        return {}
    figures = {"confusion_matrix.png": confusion_figure(case)}
    truth, _ = nok_arrays(case.images)
    scores = [i.score for i in case.images]
    if all(s is not None for s in scores) and truth.any() and not truth.all():
        figures["precision_recall.png"] = precision_recall_figure(case)
    if any(i.iou is not None for i in case.images if i.label == "NOK"):
        figures["iou_histogram.png"] = iou_histogram_figure(case)
    return figures


def _figure(title: str):
    from matplotlib.figure import Figure  # no pyplot: drawn off screen, whatever backend the user chose

    figure = Figure(figsize=(4.2, 3.4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=10)
    return figure, axes


def confusion_figure(case: CaseResult):
    """True label x verdict, counts and each row's share, defective = positive."""
    truth, verdict = nok_arrays(case.images)
    counts = np.array([[np.sum(~truth & ~verdict), np.sum(~truth & verdict)],
                       [np.sum(truth & ~verdict), np.sum(truth & verdict)]])
    figure, axes = _figure(f"{case.id}: verdicts")
    axes.imshow(counts, cmap="Blues")
    for (row, col), n in np.ndenumerate(counts):
        share = n / counts[row].sum() if counts[row].sum() else 0.0
        axes.text(col, row, f"{n}\n{share:.0%}", ha="center", va="center", fontsize=10,
                  color="white" if n > counts.max() / 2 else "black")
    axes.set_xticks([0, 1], ["OK", "NOK"])
    axes.set_yticks([0, 1], ["good (OK)", "defective (NOK)"])
    axes.set_xlabel("verdict")
    axes.set_ylabel("truth")
    return figure


def precision_recall_figure(case: CaseResult):
    """Precision against recall as the score threshold moves (NOK when the score reaches it), with the case's own
    operating point marked."""
    truth, verdict = nok_arrays(case.images)
    scores = np.array([i.score for i in case.images], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    caught = np.cumsum(truth[order])
    last_of_tie = np.r_[scores[order][1:] != scores[order][:-1], True]  # one point per distinct threshold
    flagged = np.arange(1, len(scores) + 1)[last_of_tie]
    recall, precision = caught[last_of_tie] / truth.sum(), caught[last_of_tie] / flagged
    figure, axes = _figure(f"{case.id}: precision-recall")
    axes.plot(np.r_[0.0, recall], np.r_[1.0, precision], drawstyle="steps-post", color="#0072b2")
    tp, flagged_now = np.sum(truth & verdict), np.sum(verdict)
    if flagged_now:
        axes.plot([tp / truth.sum()], [tp / flagged_now], "o", color="#d55e00", label="operating point")
        axes.legend(loc="lower left", fontsize=8)
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    return figure


def iou_histogram_figure(case: CaseResult):
    """The per-image IoU of the defective images, with the case's IoU threshold when it has one."""
    ious = np.array([i.iou for i in case.images if i.label == "NOK" and i.iou is not None], dtype=np.float64)
    figure, axes = _figure(f"{case.id}: IoU of {len(ious)} defective images")
    axes.hist(ious, bins=np.linspace(0.0, 1.0, 21), color="#0072b2")
    if "iou" in case.thresholds:
        axes.axvline(case.thresholds["iou"], color="#1a1a1a", linestyle="--", label=f"threshold {case.thresholds['iou']:g}")
        axes.legend(fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_xlabel("IoU")
    axes.set_ylabel("images")
    return figure


__all__ = ["case_figures", "confusion_figure", "iou_histogram_figure", "precision_recall_figure"]
