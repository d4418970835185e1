"""Correlations between predicted scores and ground truth (SRCC, PLCC, KRCC).

Like the official IQA scripts, PLCC is plain Pearson on the raw predictions by
default; ``fit="logistic4"|"logistic5"`` first maps predictions through the
fitted logistic, as many IQA papers do. Every place that reports a correlation
(``qsit eval iqa``, the joint report) reads it from here, with the same warning
for near-constant predictions.
"""

from __future__ import annotations

import numpy as np

# On the 1..5 level scale, predictions spanning less than this are near-constant (a model
# that ignores the image still jitters by ~1e-4 from numerics, and ranks that jitter).
NEAR_CONSTANT_RANGE = 1e-2

FITS = (None, "logistic4", "logistic5")


def _logistic4(x, b1, b2, b3, b4):
    return (b1 - b2) / (1 + np.exp(-(x - b3) / np.abs(b4))) + b2


def _logistic5(x, b1, b2, b3, b4, b5):
    return b1 * (0.5 - 1 / (1 + np.exp(b2 * (x - b3)))) + b4 * x + b5


def fit_logistic(predicted: np.ndarray, target: np.ndarray, kind: str) -> np.ndarray:
    """Predictions mapped by the logistic (4 or 5 parameters) fitted to the targets."""
    from scipy.optimize import curve_fit

    x, y = np.asarray(predicted, float), np.asarray(target, float)
    if kind == "logistic4":
        f, p0 = _logistic4, [y.max(), y.min(), float(np.mean(x)), float(np.std(x)) or 1.0]
    elif kind == "logistic5":
        f, p0 = _logistic5, [float(np.ptp(y)), 1.0 / (float(np.std(x)) or 1.0), float(np.mean(x)), 0.0,
                             float(np.mean(y))]
    else:
        raise ValueError(f"unknown fit {kind!r}; choose from {', '.join(str(k) for k in FITS)}")
    params, _ = curve_fit(f, x, y, p0=p0, maxfev=20000)
    return f(x, *params)


def correlations(predicted, target, fit: str | None = None) -> dict:
    """SRCC, PLCC and KRCC; constant, non-finite, mismatched or too-short input is an error, not NaN."""
    from scipy.stats import kendalltau, pearsonr, spearmanr

    x, y = np.asarray(predicted, dtype=float).reshape(-1), np.asarray(target, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} predictions but {y.size} targets")
    if x.size < 3:
        raise ValueError(f"need at least 3 pairs for correlations, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("predictions or targets contain NaN or infinite values")
    for name, v in (("predictions", x), ("targets", y)):
        if np.ptp(v) == 0:
            raise ValueError(f"{name} are constant ({v[0]}); correlations are undefined")
    fitted = x if fit is None else fit_logistic(x, y, fit)
    out = {"srcc": float(spearmanr(x, y)[0]), "plcc": float(pearsonr(fitted, y)[0]),
           "krcc": float(kendalltau(x, y)[0]), "n": int(x.size), "fit": fit}
    warning = near_constant_warning(x)
    if warning:
        out["warning"] = warning
    return out


def near_constant_warning(predicted, min_range: float = NEAR_CONSTANT_RANGE) -> str | None:
    """A warning when predictions barely vary: their correlations then rank rounding noise."""
    x = np.asarray(predicted, dtype=float)
    spread = float(np.ptp(x)) if x.size else 0.0
    if spread >= min_range:
        return None
    return (f"the predictions vary by only {spread:.2g} (all within [{x.min():.4f}, {x.max():.4f}]); "
            "correlations of near-constant predictions measure numerical noise, not the model")
