"""Stage A, then stage B, then the plan: the whole coarse search from a sweep config."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from mixing.fit import Fit, fit_curve, summary
from mixing.search import AdaptiveSettings, adaptive_search
from mixing.sweep import Ledger, RunSpec, SweepConfig, sizes_stage_a, sizes_stage_b, spec_for
from qsit.records import GENERAL, INTERPRETING, SCORING
from qsit.train_config import MixPlan


class Pending(Exception):
    """Runs were handed to an outside scheduler; rerun the sweep once they have finished."""


@dataclass
class StageOutcome:
    fit: Fit
    run_ids: list[str]
    search: str


@dataclass
class SweepOutcome:
    stages: dict[str, StageOutcome] = field(default_factory=dict)
    plan: MixPlan | None = None
    plan_path: Path | None = None
    failed: list[str] = field(default_factory=list)


def _execute(ledger: Ledger, executor, specs: list[RunSpec], failed: list[str]) -> None:
    from mixing.executors import collected

    todo = []
    for spec in specs:
        if ledger.done(spec.run_id):
            continue
        row = collected(spec)  # finished by an outside scheduler since the last sweep
        if row is not None and row.get("status") == "done":
            ledger.append(row)
            continue
        todo.append(spec)
    if not todo:
        return
    n = 0
    for row in executor.map(todo):
        ledger.append(row)
        n += 1
        status = row.get("status")
        msg = (f"performance {row['performance']:.4f}" if status == "done" else f"FAILED: {row.get('error')}")
        print(f"qsit: mix run {row['run_id']} ({n}/{len(todo)}): {msg}", file=sys.stderr)
        if status != "done":
            failed.append(row["run_id"])
    if n < len(todo):
        raise Pending(f"{len(todo) - n} run(s) handed out; rerun `qsit mix sweep` once they have finished")


def _performances(ledger: Ledger, specs: list[RunSpec]) -> list[float | None]:
    return [ledger.rows[s.run_id]["performance"] if ledger.done(s.run_id) else None for s in specs]


def run_stage(cfg: SweepConfig, ledger: Ledger, executor, stage: str, sizes_of, failed: list[str],
              tag: str = "") -> StageOutcome:
    st = cfg.stage_a if stage == "A" else cfg.stage_b
    seeds = [cfg.seed + i for i in range(st.repeats)]
    name = stage + tag
    used: list[str] = []

    def specs_for(ratios: list[float], repeat_seeds: list[int]) -> list[RunSpec]:
        return [spec_for(cfg, name, r, s, sizes_of(r)) for r in ratios for s in repeat_seeds]

    if st.search == "grid":
        specs = specs_for(list(st.ratios), seeds)
        _execute(ledger, executor, specs, failed)
        rows = [ledger.rows[s.run_id] for s in specs if ledger.done(s.run_id)]
        used = [r["run_id"] for r in rows]
        if len({r["ratio"] for r in rows}) < 3:
            raise RuntimeError(f"stage {stage}: fewer than 3 ratios finished; see the failed runs above")
        degree = st.degree if st.degree == "auto" else int(st.degree)
        fit = fit_curve([r["ratio"] for r in rows], [r["performance"] for r in rows], degree=degree, seed=cfg.seed)
        return StageOutcome(fit, used, "grid")

    a: AdaptiveSettings = st.adaptive

    def run_many(ratios: list[float]) -> list[float]:
        # One repeat per proposed ratio (seed cycles so repeated ratios still differ).
        specs = [spec_for(cfg, name, r, cfg.seed + (i % st.repeats), sizes_of(r)) for i, r in enumerate(ratios)]
        _execute(ledger, executor, specs, failed)
        perf = _performances(ledger, specs)
        used.extend(s.run_id for s in specs)
        if any(p is None for p in perf):
            raise RuntimeError(f"stage {stage}: a run failed ({', '.join(s.run_id for s, p in zip(specs, perf, strict=True) if p is None)}); "
                               "rerun the sweep to retry it")
        return perf

    result = adaptive_search(run_many, min(st.ratios), max(st.ratios), a)
    return StageOutcome(result.fit, used, "adaptive")


def loss_ratio_at(ledger: Ledger, run_ids: list[str], log10_ratio: float) -> tuple[float | None, list[str]]:
    """Mean L_S/L_I of the finished runs at the swept ratio nearest the optimum (in log10)."""
    rows = [ledger.rows[r] for r in run_ids if ledger.done(r) and ledger.rows[r].get("loss_ratio")]
    if not rows:
        return None, []
    nearest = min({r["ratio"] for r in rows}, key=lambda x: abs(np.log10(x) - log10_ratio))
    chosen = [r for r in rows if r["ratio"] == nearest]
    return float(np.mean([r["loss_ratio"] for r in chosen])), [r["run_id"] for r in chosen]


def d1_pool(cfg: SweepConfig) -> int:
    from qsit.recipe import validate
    from qsit.train_config import load_config

    report = validate(load_config(cfg.train_config, [*cfg.overrides, "output_dir=/tmp/qsit-mix-validate",
                                                     "mix.ratios={scoring: 1}", "mix.sizes=null"]))
    pool = report["train_pools"][SCORING]
    return min(pool, cfg.max_scoring) if cfg.max_scoring else pool


def make_plan(cfg: SweepConfig, ledger: Ledger, a: StageOutcome, b: StageOutcome) -> MixPlan:
    ra, rb = a.fit.ratio, b.fit.ratio
    lam, lam_runs = loss_ratio_at(ledger, b.run_ids, b.fit.log10_ratio)
    ratios = {SCORING: 1.0, INTERPRETING: round(rb * ra / (1 + ra), 4), GENERAL: round(rb / (1 + ra), 4)}
    return MixPlan(
        ratios=ratios, base=SCORING, reference_ratio=round(lam, 4) if lam else None,
        stage_ratios={"d2_d3": round(ra, 4), "mix_d1": round(rb, 4)},
        intervals={"d2_d3": [round(v, 4) for v in a.fit.interval], "mix_d1": [round(v, 4) for v in b.fit.interval]},
        provenance={"ledger": str(ledger.path), "stage_a_runs": a.run_ids, "stage_b_runs": b.run_ids,
                    "lambda_runs": lam_runs, "search": {"A": a.search, "B": b.search},
                    "flags": {"A": {"at_edge": a.fit.at_edge, "flat": a.fit.flat},
                              "B": {"at_edge": b.fit.at_edge, "flat": b.fit.flat}},
                    "small_model_config": cfg.train_config},
    )


def write_plan(cfg: SweepConfig, plan: MixPlan) -> Path:
    """The primary model's config with the plan as its mix: `qsit train --validate` accepts it as is."""
    from qsit.train_config import load_config

    source = Path(cfg.primary_config or cfg.train_config)
    data = yaml.safe_load(source.read_text())
    mix = {k: v for k, v in (data.get("mix") or {}).items() if k in ("step", "tolerance")}
    data["mix"] = {"ratios": plan.ratios, "base": plan.base, "reference_ratio": plan.reference_ratio, **mix,
                   "plan": json.loads(json.dumps(asdict(plan)))}
    out = Path(cfg.output_dir) / "plan.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Mix plan from `qsit mix sweep` (config {source}); train the primary model with it.\n"
                   + yaml.safe_dump(data, sort_keys=False))
    load_config(out)  # refuse to leave a plan the trainer would reject
    return out


def run_sweep(cfg: SweepConfig, executor, only_stage: str | None = None) -> SweepOutcome:
    ledger = Ledger(Path(cfg.output_dir) / "ledger.jsonl")
    out = SweepOutcome()
    a = run_stage(cfg, ledger, executor, "A", lambda r: sizes_stage_a(r, cfg.records_per_epoch), out.failed)
    out.stages["A"] = a
    print(summary(a.fit, "stage A (|D2|/|D3|)"), file=sys.stderr)
    if only_stage == "A":
        return out
    d1 = d1_pool(cfg)
    ra = a.fit.ratio
    # Stage B's runs depend on r_A: their ids carry it, so a changed r_A never reuses old runs.
    b = run_stage(cfg, ledger, executor, "B", lambda r: sizes_stage_b(r, ra, d1), out.failed, tag=f"-a{ra:.3g}")
    out.stages["B"] = b
    print(summary(b.fit, "stage B (|D2+D3|/|D1|)"), file=sys.stderr)
    out.plan = make_plan(cfg, ledger, a, b)
    out.plan_path = write_plan(cfg, out.plan)
    from mixing.report import write_report

    write_report(cfg, ledger, out)
    return out

