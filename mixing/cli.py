"""``qsit mix``: sweep (run both stages and write the plan), fit (any points file), run-one."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


class MixError(ValueError):
    """A user-facing problem with a sweep or a points file."""


def read_points(path: str | Path, stage: str | None = None) -> tuple[list[float], list[float]]:
    """ratio and performance columns from a ledger, a JSONL or a CSV (other columns allowed)."""
    path = Path(path)
    if not path.is_file():
        raise MixError(f"{path}: no such file")
    rows: list[dict] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise MixError(f"{path}:{i}: not JSON ({e.msg})") from None
    if rows and "status" in rows[0]:  # a ledger: finished runs only, the last row of a run wins
        last = {r["run_id"]: r for r in rows}
        rows = [r for r in last.values() if r.get("status") == "done"]
    if stage is not None:
        rows = [r for r in rows if str(r.get("stage", "")).split("-")[0] == stage]
    ratios, perf = [], []
    for i, r in enumerate(rows, 1):
        if "ratio" not in r or "performance" not in r:
            raise MixError(f"{path}: row {i} lacks a ratio or performance column")
        try:
            ratios.append(float(r["ratio"]))
            perf.append(float(r["performance"]))
        except (TypeError, ValueError):
            raise MixError(f"{path}: row {i}: ratio and performance must be numbers") from None
    if not ratios:
        raise MixError(f"{path}: no points{f' for stage {stage}' if stage else ''}")
    return ratios, perf


def cmd_fit(args) -> int:
    from mixing.fit import fit_curve, summary

    ratios, perf = read_points(args.points, args.stage)
    if args.degree != "auto" and not args.degree.isdigit():
        raise MixError(f"--degree must be a whole number or auto, got {args.degree!r}")
    degree = args.degree if args.degree == "auto" else int(args.degree)
    fit = fit_curve(ratios, perf, degree=degree, confidence=args.confidence, seed=args.seed)
    if args.plot:
        from mixing.report import plot_fit

        plot_fit(ratios, perf, fit, Path(args.plot), title=Path(args.points).name)
    if args.json:
        print(json.dumps(fit.to_dict()))
    else:
        print(summary(fit, Path(args.points).name))
    return 0


def cmd_sweep(args) -> int:
    from mixing.executors import LocalExecutor, PlanOnlyExecutor, RayExecutor
    from mixing.pipeline import Pending, run_sweep
    from mixing.sweep import load_sweep_config

    cfg = load_sweep_config(args.config, args.overrides)
    if args.plan_only:
        executor = PlanOnlyExecutor()
    elif args.executor == "ray":
        executor = RayExecutor(args.address, num_cpus=args.cpus_per_run, num_gpus=args.gpus_per_run)
    else:
        executor = LocalExecutor(args.gpus)
    try:
        outcome = run_sweep(cfg, executor, only_stage=args.stage)
    except Pending as e:
        print(f"qsit: {e}", file=sys.stderr)
        return 0
    except RuntimeError as e:
        raise MixError(str(e)) from None
    if outcome.plan_path:
        r = outcome.plan.ratios
        print(f"qsit: plan D1:D2:D3 = 1 : {r['interpreting']:.3g} : {r['general']:.3g}, "
              f"λ = {outcome.plan.reference_ratio}; written to {outcome.plan_path} "
              f"(report: {Path(cfg.output_dir) / 'report.md'})", file=sys.stderr)
    return 0


def cmd_run_one(args) -> int:
    from mixing.executors import run_one

    row = run_one(args.spec)
    print(json.dumps({k: row.get(k) for k in ("run_id", "status", "performance", "error")}))
    return 0 if row["status"] == "done" else 1


def add_mix_parser(sub) -> None:
    mix = sub.add_parser("mix", help="coarse mix-ratio search (Q-SiT Algorithm 1, steps 1–2)")
    msub = mix.add_subparsers(dest="mix", required=True, metavar="STEP")

    p = msub.add_parser("sweep", help="run stage A and B on a small model, fit, and write the plan")
    p.add_argument("config", help="sweep YAML (see qsit/configs/mix/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--gpus", type=int, help="local executor: GPUs to run on at once (default: all visible)")
    p.add_argument("--cpus-per-run", type=float, default=1)
    p.add_argument("--gpus-per-run", type=float, default=0)
    p.add_argument("--plan-only", action="store_true",
                   help="print the `qsit mix run-one` commands for another scheduler; rerun to collect")
    p.add_argument("--stage", choices=("A",), help="stop after stage A")
    p.set_defaults(func=cmd_sweep)

    p = msub.add_parser("fit", help="fit performance vs ratio from a ledger or a CSV/JSONL points file")
    p.add_argument("points")
    p.add_argument("--degree", default="4", help="polynomial degree or auto (leave-one-out)")
    p.add_argument("--stage", choices=("A", "B"), help="only this stage's rows of a ledger")
    p.add_argument("--confidence", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="also write a PNG of the fit")
    p.add_argument("--json", action="store_true", help="one JSON object (ratio, interval, at_edge, ...)")
    p.set_defaults(func=cmd_fit)

    p = msub.add_parser("run-one", help="train and evaluate one run from its spec.json (for schedulers)")
    p.add_argument("spec")
    p.set_defaults(func=cmd_run_one)
