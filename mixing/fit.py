"""Polynomial fits of validation performance against a mix ratio, and how sure they are.

Q-SiT (Algorithm 1, Fig. 4) fits a fourth-degree polynomial of performance
against the ratio and takes its argmax. Here the fit is on a **log10 ratio**
axis (the swept ratios span two decades, 0.1 … 10, and a polynomial in the raw
ratio would spend its freedom on the 2 … 10 tail), the argmax is taken **inside
the swept range only** (a polynomial outside its data says nothing), and a
residual bootstrap gives a confidence interval for the argmax. Two flags say
when not to trust the number: ``at_edge`` (the best ratio is the first or last
swept one: the optimum may lie outside) and ``flat`` (an F-test cannot tell the
curve from a constant: the mix does not matter within noise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

GRID_POINTS = 801


@dataclass
class Fit:
    ratio: float
    """The argmax, as a ratio (10 ** log10_ratio)."""
    log10_ratio: float
    interval: tuple[float, float]
    """Bootstrap confidence interval of the argmax, as ratios."""
    log10_interval: tuple[float, float]
    confidence: float
    degree: int
    at_edge: bool
    flat: bool
    flat_p_value: float
    """F-test of the polynomial against a constant; large means flat within noise."""
    best_performance: float
    n_points: int
    n_ratios: int
    swept: tuple[float, float]
    curve: dict = field(repr=False, default_factory=dict)
    """log10 ratio grid and fitted values, for plots."""
    bootstrap_argmax: list[float] = field(repr=False, default_factory=list)

    def to_dict(self, with_curve: bool = False) -> dict:
        d = asdict(self)
        if not with_curve:
            d.pop("curve")
            d.pop("bootstrap_argmax")
        return d


def _design(x: np.ndarray, degree: int, center: float, scale: float) -> np.ndarray:
    from sklearn.preprocessing import PolynomialFeatures

    return PolynomialFeatures(degree, include_bias=True).fit_transform(((x - center) / scale)[:, None])


def _lstsq(x, y, degree, center, scale):
    X = _design(x, degree, center, scale)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef


def _predict(coef, x, degree, center, scale):
    return _design(x, degree, center, scale) @ coef


def loo_error(x: np.ndarray, y: np.ndarray, degree: int) -> float:
    """Leave-one-out mean squared error of a degree-``degree`` fit (closed form via the hat matrix)."""
    center, scale = x.mean(), max(np.ptp(x) / 2, 1e-12)
    X = _design(x, degree, center, scale)
    hat = X @ np.linalg.pinv(X)
    resid = y - hat @ y
    leverage = np.clip(np.diag(hat), 0, 1 - 1e-9)
    return float(np.mean((resid / (1 - leverage)) ** 2))


def choose_degree(x: np.ndarray, y: np.ndarray, max_degree: int = 6) -> int:
    """The degree (1..max) with the lowest leave-one-out error, never more than distinct ratios allow."""
    limit = min(max_degree, len(np.unique(x)) - 1, len(x) - 2)
    if limit < 1:
        raise ValueError(f"need at least 3 points at 2 distinct ratios to fit, got {len(x)} at {len(np.unique(x))}")
    return min(range(1, limit + 1), key=lambda d: loo_error(x, y, d))


def fit_curve(ratios, performance, degree: int | str = 4, confidence: float = 0.9, n_boot: int = 1000,
              seed: int = 0, flat_alpha: float = 0.05) -> Fit:
    """Fit performance ~ poly(log10 ratio); argmax within the swept range, with a bootstrap interval.

    ``ratios`` and ``performance`` are one row per run (repeats as separate rows).
    ``degree`` is an integer or ``"auto"`` (leave-one-out error picks 1..6).
    """
    from scipy.stats import f as f_dist

    r = np.asarray(ratios, dtype=float).reshape(-1)
    y = np.asarray(performance, dtype=float).reshape(-1)
    if r.shape != y.shape:
        raise ValueError(f"{r.size} ratios but {y.size} performance values")
    if not (np.isfinite(r).all() and np.isfinite(y).all()):
        raise ValueError("ratios and performance must be finite numbers")
    if (r <= 0).any():
        raise ValueError(f"ratios must be positive (fits are on log10 ratio); got {r[r <= 0][0]}")
    x = np.log10(r)
    n_unique = len(np.unique(x))
    if degree == "auto":
        deg = choose_degree(x, y)
    else:
        deg = int(degree)
        if deg < 1:
            raise ValueError(f"degree must be at least 1, got {deg}")
        if n_unique <= deg:
            raise ValueError(f"a degree-{deg} fit needs at least {deg + 1} distinct ratios, got {n_unique}")
    center, scale = x.mean(), max(np.ptp(x) / 2, 1e-12)
    grid = np.linspace(x.min(), x.max(), GRID_POINTS)
    coef = _lstsq(x, y, deg, center, scale)
    fitted_grid = _predict(coef, grid, deg, center, scale)
    best = int(np.argmax(fitted_grid))

    fitted = _predict(coef, x, deg, center, scale)
    resid = y - fitted
    p = deg + 1
    dof = len(y) - p
    # Residual bootstrap, residuals inflated for the degrees of freedom the fit used.
    scaled = resid * np.sqrt(len(y) / dof) if dof > 0 else resid
    rng = np.random.default_rng(seed)
    design_grid = _design(grid, deg, center, scale)
    X = _design(x, deg, center, scale)
    pinv = np.linalg.pinv(X)
    ys = fitted[None, :] + rng.choice(scaled, size=(n_boot, len(y)), replace=True)
    boot_curves = (pinv @ ys.T).T @ design_grid.T
    boot_argmax = grid[np.argmax(boot_curves, axis=1)]
    tail = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(boot_argmax, [tail, 1 - tail]))

    # Flat: the polynomial explains no more than a constant would, by an F-test.
    rss1 = float(np.sum(resid ** 2))
    rss0 = float(np.sum((y - y.mean()) ** 2))
    if dof > 0 and rss1 > 0:
        F = ((rss0 - rss1) / deg) / (rss1 / dof)
        p_flat = float(f_dist.sf(F, deg, dof))
    else:
        p_flat = 0.0 if rss0 > 0 else 1.0
    return Fit(
        ratio=float(10 ** grid[best]), log10_ratio=float(grid[best]), interval=(10 ** lo, 10 ** hi),
        log10_interval=(lo, hi), confidence=confidence, degree=deg,
        at_edge=bool(best in (0, len(grid) - 1)),
        flat=bool(p_flat > flat_alpha), flat_p_value=p_flat, best_performance=float(fitted_grid[best]),
        n_points=int(len(y)), n_ratios=n_unique, swept=(float(r.min()), float(r.max())),
        curve={"log10_ratio": grid.tolist(), "performance": fitted_grid.tolist()},
        bootstrap_argmax=boot_argmax.tolist(),
    )


def summary(fit: Fit, name: str = "fit") -> str:
    """A readable few lines for the terminal."""
    lo, hi = fit.interval
    lines = [f"{name}: best ratio {fit.ratio:.3g} (log10 {fit.log10_ratio:+.3f}), "
             f"{100 * fit.confidence:.0f}% interval {lo:.3g} … {hi:.3g}; degree {fit.degree}; "
             f"{fit.n_points} runs at {fit.n_ratios} ratios in {fit.swept[0]:.3g} … {fit.swept[1]:.3g}; "
             f"fitted performance at best {fit.best_performance:.4f}"]
    if fit.at_edge:
        lines.append("  warning: the optimum is on the edge of the swept range; the best ratio may lie outside it")
    if fit.flat:
        lines.append(f"  warning: the curve is flat within noise (F-test p = {fit.flat_p_value:.2f}); "
                     "the mix barely matters here")
    return "\n".join(lines)
