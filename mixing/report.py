"""Plots and a Markdown summary of a mix search: points, repeats, fitted curve, interval, choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixing.fit import Fit

AXES = {"A": "|D2| / |D3|", "B": "|D2 + D3| / |D1|"}
METRICS = {"A": "LLVisionQA-dev accuracy", "B": "(LLVisionQA-dev acc + IQA (SRCC+PLCC)/2) / 2"}


def plot_fit(ratios, performance, fit: Fit, path: Path, title: str = "", xlabel: str = "ratio",
             ylabel: str = "performance") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.scatter(ratios, performance, s=16, alpha=0.7, label="runs (repeats as points)")
    if fit.curve:
        ax.plot(10 ** np.asarray(fit.curve["log10_ratio"]), fit.curve["performance"], "-",
                label=f"degree-{fit.degree} fit (log10 axis)")
    lo, hi = fit.interval
    ax.axvspan(lo, hi, alpha=0.15, color="C2", label=f"{100 * fit.confidence:.0f}% interval of the argmax")
    ax.axvline(fit.ratio, color="C3", lw=1.2, label=f"chosen {fit.ratio:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    flags = [w for w, on in (("optimum at the edge", fit.at_edge), ("flat within noise", fit.flat)) if on]
    ax.set_title(title + (f" — {', '.join(flags)}" if flags else ""), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fit_markdown(fit: Fit, name: str) -> str:
    lo, hi = fit.interval
    flags = ", ".join(w for w, on in (("**optimum at the edge**", fit.at_edge), ("**flat within noise**",
                                                                                  fit.flat)) if on) or "none"
    return (f"| {name} | {fit.ratio:.3g} | {lo:.3g} … {hi:.3g} | {fit.degree} | {fit.n_points} runs at "
            f"{fit.n_ratios} ratios | {fit.best_performance:.4f} | {flags} |")


def write_report(cfg, ledger, outcome) -> Path:
    out = Path(cfg.output_dir)
    lines = ["# Mix search", "", f"Small-model config: `{cfg.train_config}`; ledger: `{ledger.path}`.", "",
             "| stage | chosen ratio | interval | degree | data | fitted performance | flags |",
             "|---|---|---|---|---|---|---|"]
    for stage, st in outcome.stages.items():
        rows = [ledger.rows[r] for r in st.run_ids if ledger.done(r)]
        plot_fit([r["ratio"] for r in rows], [r["performance"] for r in rows], st.fit,
                 out / f"stage_{stage}.png", title=f"stage {stage} ({st.search})", xlabel=AXES[stage],
                 ylabel=METRICS[stage])
        lines.append(fit_markdown(st.fit, f"{stage}: {AXES[stage]} ({st.search})".replace("|", "\\|")))
    lines.append("")
    if outcome.plan is not None:
        p = outcome.plan
        r = p.ratios
        lam = f"{p.reference_ratio:.4g}" if p.reference_ratio else "n/a (no validation losses)"
        lines += [f"**Plan:** D1 : D2 : D3 = 1 : {r['interpreting']:.3g} : {r['general']:.3g}; "
                  f"λ = L_S / L_I = {lam} (runs {', '.join(p.provenance['lambda_runs']) or '—'}). "
                  f"Written to `{outcome.plan_path}`.", ""]
    lines += [f"![stage {s}](stage_{s}.png)" for s in outcome.stages]
    if outcome.failed:
        lines += ["", f"Failed runs (retried on the next sweep): {', '.join(outcome.failed)}"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
