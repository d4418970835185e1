"""Which ratios to run: the paper's grids, and an adaptive search that needs fewer runs.

The paper sweeps fixed grids with 3 repeats per point. The adaptive search
starts from a coarse grid over the same range, fits, and adds runs where the
bootstrap interval of the argmax lies (spread evenly across it), until that
interval is narrower than a tolerance (in log10 ratio) or the run budget is
spent. It only *proposes* ratios and reads back performance: it never looks
inside a training run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mixing.fit import Fit, fit_curve

# Q-SiT §IV-B: stage A sweeps D2:D3 from 1:0.1 to 1:10, stage B |D2+D3|:D1 over these ratios.
PAPER_STAGE_A = tuple(round(0.1 * k, 1) for k in range(1, 11)) + tuple(float(k) for k in range(2, 11))
PAPER_STAGE_B = PAPER_STAGE_A
PAPER_REPEATS = 3


def log_grid(lo: float, hi: float, n: int) -> list[float]:
    """``n`` ratios evenly spaced in log10 between lo and hi, rounded to 4 significant digits."""
    return [float(f"{v:.4g}") for v in np.logspace(np.log10(lo), np.log10(hi), n)]


@dataclass
class AdaptiveSettings:
    initial_points: int = 5
    """Coarse grid, evenly spaced in log10 over the swept range."""
    per_round: int = 3
    """Runs added per round, spread across the window around the current best ratio."""
    min_window: float = 0.5
    """Half-width (log10 ratio) of that window at the least: the local fit needs some curvature to see."""
    tolerance: float = 0.1
    """Stop early when the local argmax interval is narrower than this (log10 ratio)."""
    min_runs: int = 14
    max_runs: int = 14
    confidence: float = 0.9
    n_boot: int = 400
    seed: int = 0


@dataclass
class SearchResult:
    fit: Fit
    runs: list[tuple[float, float]] = field(default_factory=list)
    """(ratio, performance) in the order they were run."""
    rounds: int = 0
    stopped: str = ""
    global_fit: Fit | None = None


def local_fit(runs: list[tuple[float, float]], s: AdaptiveSettings) -> tuple[Fit, Fit]:
    """(local, global): a global fit finds the peak; a fit of the runs near it places it.

    Near a smooth maximum a low-degree polynomial is a good model, far from it a poor one, so
    the final estimate uses only the runs within the window (at least 4 distinct ratios).
    """
    r, y = (np.asarray(v) for v in zip(*runs, strict=True))
    glob = fit_curve(r, y, degree="auto", confidence=s.confidence, n_boot=s.n_boot, seed=s.seed)
    if glob.flat:  # no peak to zoom in on: say so with the whole curve
        return glob, glob
    x = np.log10(r)
    a, b = glob.log10_interval
    half = max((b - a) / 2, s.min_window)
    near = np.abs(x - glob.log10_ratio) <= half + 1e-9
    distinct = np.unique(x[near])
    if len(distinct) < 4:  # widen to the 4 nearest distinct ratios
        order = np.unique(x)[np.argsort(np.abs(np.unique(x) - glob.log10_ratio))][:4]
        near = np.isin(x, order)
    local = fit_curve(r[near], y[near], degree="auto", confidence=s.confidence, n_boot=s.n_boot, seed=s.seed)
    # A local peak on the window's edge did not bracket the optimum: trust the global fit.
    return (glob if local.at_edge else local), glob


def next_ratios(fit: Fit, lo: float, hi: float, k: int, min_half: float) -> list[float]:
    """``k`` new ratios spread across the argmax's interval (at least ±min_half log10), inside [lo, hi]."""
    a, b = fit.log10_interval
    half = max((b - a) / 2, min_half)
    mid = fit.log10_ratio
    a, b = max(np.log10(lo), mid - half), min(np.log10(hi), mid + half)
    xs = np.linspace(a, b, k + 2)[1:-1] if k > 1 else np.array([mid])
    return [float(f"{10 ** v:.4g}") for v in xs]


def adaptive_search(run_many: Callable[[list[float]], list[float]], lo: float, hi: float,
                    settings: AdaptiveSettings | None = None) -> SearchResult:
    """Run ``run_many(ratios) -> performances`` round by round over [lo, hi]; returns the final fit and every run.

    Each round's ratios go to ``run_many`` together, so an executor can run them in parallel;
    the proposals depend only on the results so far, so a resumed search asks for the same runs.
    """
    s = settings or AdaptiveSettings()
    if s.initial_points < 3:
        raise ValueError("the adaptive search needs at least 3 initial points")
    first = log_grid(lo, hi, s.initial_points)
    runs = list(zip(first, map(float, run_many(first)), strict=True))
    rounds, stopped = 0, "budget"
    while True:
        fit, glob = local_fit(runs, s)
        width = fit.log10_interval[1] - fit.log10_interval[0]
        if len(runs) >= s.min_runs and width < s.tolerance:
            stopped = "interval below tolerance"
            break
        if len(runs) >= s.max_runs:
            break
        half = s.min_window
        new = next_ratios(fit, lo, hi, min(s.per_round, s.max_runs - len(runs)), half)
        runs += list(zip(new, map(float, run_many(new)), strict=True))
        rounds += 1
    return SearchResult(fit=fit, runs=runs, rounds=rounds, stopped=stopped, global_fit=glob)


def grid_search(run: Callable[[float], float], ratios=PAPER_STAGE_B, repeats: int = PAPER_REPEATS,
                degree: int | str = 4, seed: int = 0) -> SearchResult:
    """The paper's way: every ratio of the grid, ``repeats`` times, one degree-4 fit."""
    runs = [(float(r), float(run(float(r)))) for r in ratios for _ in range(repeats)]
    r, y = zip(*runs, strict=True)
    return SearchResult(fit=fit_curve(r, y, degree=degree, seed=seed), runs=runs, stopped="grid done")
