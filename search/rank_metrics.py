"""Agreement of predictions with measurements: rank correlation and percentage error (the latency tables' and
cost models' validation metrics; numpy only)."""
from __future__ import annotations

import numpy as np


def ranks(x) -> np.ndarray:
    """Ranks (1 = smallest) with ties given their average rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(x, y) -> float:
    """Spearman's rank correlation (Pearson correlation of the average ranks)."""
    rx, ry = ranks(x), ranks(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def mape(predicted, measured) -> float:
    """Mean absolute percentage error, in percent of the measured values."""
    p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    return float(np.mean(np.abs(p - m) / m) * 100.0)
