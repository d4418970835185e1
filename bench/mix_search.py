"""Adaptive mix search vs the paper's full grid, on simulated noisy response curves with known optima.

    python bench/mix_search.py [--trials 40] [--noise 0.004] [--out bench/results/mix_search.json]

Each curve is validation performance against log10 ratio over the paper's range (0.1 … 10),
of one of several shapes (symmetric bump, skewed bump, sharp peak, plateau), with its optimum
placed at random inside the range and Gaussian noise per run. Both strategies see the same
curve and noise level; reported: runs used and |chosen − true optimum| in log10 ratio
(median and 90th percentile), and how often each lands within 0.05.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixing.search import PAPER_REPEATS, PAPER_STAGE_B, AdaptiveSettings, adaptive_search, grid_search  # noqa: E402

LO, HI = 0.1, 10.0


def shape(name: str, x: np.ndarray, opt: float) -> np.ndarray:
    """Performance (about 0.55..0.65) at log10 ratios ``x`` with its maximum at ``opt``."""
    d = x - opt
    if name == "bump":
        return 0.55 + 0.1 * np.exp(-(d / 0.6) ** 2)
    if name == "skewed":  # rises fast, falls slowly
        w = np.where(d < 0, 0.35, 0.9)
        return 0.55 + 0.1 * np.exp(-(d / w) ** 2)
    if name == "sharp":
        return 0.55 + 0.1 / (1 + (d / 0.25) ** 2)
    if name == "plateau":  # a broad top with a gentle slope towards the optimum
        return 0.55 + 0.08 * np.exp(-(d / 1.2) ** 4) + 0.02 * np.exp(-(d / 0.5) ** 2)
    raise ValueError(name)


SHAPES = ("bump", "skewed", "sharp", "plateau")


def simulate(trials: int, noise: float, settings: AdaptiveSettings, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(trials):
        name = SHAPES[t % len(SHAPES)]
        opt = float(rng.uniform(np.log10(LO) + 0.3, np.log10(HI) - 0.3))
        noise_rng = np.random.default_rng([seed, t])

        def run(ratio, name=name, opt=opt, noise_rng=noise_rng):
            return float(shape(name, np.array([np.log10(ratio)]), opt)[0] + noise_rng.normal(0, noise))

        grid = grid_search(run, PAPER_STAGE_B, PAPER_REPEATS, degree=4, seed=t)
        adaptive = adaptive_search(lambda rs, run=run: [run(r) for r in rs], LO, HI, AdaptiveSettings(**{**settings.__dict__, "seed": t}))
        rows.append({"shape": name, "true_log10": opt,
                     "grid_error": abs(grid.fit.log10_ratio - opt), "grid_runs": len(grid.runs),
                     "adaptive_error": abs(adaptive.fit.log10_ratio - opt), "adaptive_runs": len(adaptive.runs),
                     "adaptive_stopped": adaptive.stopped})
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for who in ("grid", "adaptive"):
        err = np.array([r[f"{who}_error"] for r in rows])
        runs = np.array([r[f"{who}_runs"] for r in rows])
        out[who] = {"median_error": float(np.median(err)), "p90_error": float(np.quantile(err, 0.9)),
                    "within_0.05": float(np.mean(err <= 0.05)), "mean_runs": float(runs.mean()),
                    "max_runs": int(runs.max())}
        out[who]["by_shape"] = {s: float(np.median([r[f"{who}_error"] for r in rows if r["shape"] == s]))
                                for s in SHAPES}
    out["runs_ratio"] = out["adaptive"]["mean_runs"] / out["grid"]["mean_runs"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--noise", type=float, default=0.004, help="std of per-run performance noise")
    p.add_argument("--max-runs", type=int, default=14, help="adaptive budget (the paper grid uses 57)")
    p.add_argument("--tolerance", type=float, default=0.1)
    p.add_argument("--out", default="bench/results/mix_search.json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    settings = AdaptiveSettings(max_runs=args.max_runs, tolerance=args.tolerance)
    result = simulate(args.trials, args.noise, settings)
    s = result["summary"]
    result.update(noise=args.noise, trials=args.trials, settings=settings.__dict__,
                  seconds=round(time.perf_counter() - t0, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| strategy | mean runs | median |error| (log10) | 90th pct | within 0.05 |")
    print("|---|---|---|---|---|")
    for who in ("grid", "adaptive"):
        r = s[who]
        print(f"| {who} | {r['mean_runs']:.1f} | {r['median_error']:.3f} | {r['p90_error']:.3f} | "
              f"{100 * r['within_0.05']:.0f} % |")
    print(f"adaptive uses {100 * s['runs_ratio']:.0f} % of the grid's runs; noise σ = {args.noise}; "
          f"{args.trials} curves; {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
