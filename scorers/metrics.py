"""Agreement between predicted and reference quality scores: pure numpy functions.

SRCC (Spearman), KRCC (Kendall tau-b), PLCC (Pearson after the usual 4-parameter
logistic fit of predictions to targets, VQEG practice) and RMSE (after the same fit).
The logistic fit needs scipy; without it PLCC/RMSE fall back to a linear fit.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def _pair(pred: npt.ArrayLike, target: npt.ArrayLike) -> tuple[Array, Array]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.size}) and targets ({t.size}) differ in length")
    if p.size < 2:
        raise ValueError("need at least two scores to correlate")
    return p, t


def rankdata(x: npt.ArrayLike) -> Array:
    """Ranks 1..n with ties given their average rank."""
    a = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, dtype=np.float64)
    sorted_a = a[order]
    boundaries = np.concatenate([[0], np.flatnonzero(np.diff(sorted_a)) + 1, [a.size]])
    for lo, hi in itertools.pairwise(boundaries):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return ranks


def pearson(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = _pair(a, b)
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def srcc(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    p, t = _pair(pred, target)
    return pearson(rankdata(p), rankdata(t))


def krcc(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Kendall tau-b (ties accounted for). O(n^2) memory in blocks; fine up to ~10^4 items."""
    p, t = _pair(pred, target)
    concordant = discordant = ties_p = ties_t = 0.0
    block = 1024
    for s in range(0, p.size, block):
        dp = np.sign(p[s : s + block, None] - p[None, :])
        dt = np.sign(t[s : s + block, None] - t[None, :])
        prod = dp * dt
        concordant += float((prod > 0).sum())
        discordant += float((prod < 0).sum())
        ties_p += float(((dp == 0) & (dt != 0)).sum())
        ties_t += float(((dt == 0) & (dp != 0)).sum())
    den = np.sqrt((concordant + discordant + ties_p) * (concordant + discordant + ties_t))
    return float((concordant - discordant) / den) if den > 0 else 0.0


def logistic4(x: Array, b1: float, b2: float, b3: float, b4: float) -> Array:
    """VQEG 4-parameter logistic: b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -60, 60)
    return b2 + (b1 - b2) / (1.0 + np.exp(z))


def fit_logistic(pred: npt.ArrayLike, target: npt.ArrayLike) -> Array:
    """Predictions mapped onto the target scale by the 4-parameter logistic (linear fallback)."""
    p, t = _pair(pred, target)
    try:
        from scipy.optimize import curve_fit

        beta0 = [float(t.max()), float(t.min()), float(np.median(p)), float(p.std() or 1.0)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning on tiny sets: the fit is still used
            params, _ = curve_fit(logistic4, p, t, p0=beta0, maxfev=20000)
        fitted = logistic4(p, *params)
        if np.all(np.isfinite(fitted)):
            return fitted
    except (ImportError, RuntimeError, ValueError, TypeError):
        pass  # too few points for four parameters, or no convergence: linear fit
    slope, intercept = np.polyfit(p, t, 1)
    return np.asarray(slope * p + intercept, dtype=np.float64)


def plcc(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    p, t = _pair(pred, target)
    return pearson(fit_logistic(p, t), t)


def rmse(pred: npt.ArrayLike, target: npt.ArrayLike) -> float:
    """Root mean square error after the logistic fit (on the target's scale)."""
    p, t = _pair(pred, target)
    return float(np.sqrt(np.mean((fit_logistic(p, t) - t) ** 2)))


def summary(pred: npt.ArrayLike, target: npt.ArrayLike) -> dict[str, float]:
    return {
        "srcc": srcc(pred, target),
        "plcc": plcc(pred, target),
        "krcc": krcc(pred, target),
        "rmse": rmse(pred, target),
    }


def within_group_srcc(
    pred: npt.ArrayLike, target: npt.ArrayLike, groups: Sequence[str] | npt.ArrayLike
) -> float:
    """Mean SRCC within each group (e.g. source content) of at least 3 items."""
    p, t = _pair(pred, target)
    g = np.asarray(groups)
    values = []
    for name in np.unique(g):
        m = g == name
        if m.sum() >= 3 and np.ptp(t[m]) > 0:
            values.append(srcc(p[m], t[m]))
    return float(np.mean(values)) if values else float("nan")
