"""What a number means and how it is computed, on plain arrays: the metric table (`specs`: name, direction,
label, how it is computed and compared) and the functional metrics (`functional`: IoU, F2, exact binomial
intervals, bootstrap; `region`: PRO, pixel AUROC/AP, recall by defect size)."""
