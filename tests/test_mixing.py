"""Mixing: fits that find known optima and say how sure they are, the adaptive search, points files,
and real sweeps (local, resumed, plan-only, Ray) through `qsit train` with a miniature model."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixing.cli import MixError, read_points
from mixing.fit import choose_degree, fit_curve
from mixing.search import AdaptiveSettings, adaptive_search, grid_search, log_grid
from qsit.cli import main as qsit_main

GRID = [0.1, 0.2, 0.5, 1, 2, 5, 10]


def quadratic(r, peak=0.4, height=0.6, width=1.0):
    return height - ((np.log10(r) - peak) / width) ** 2 * 0.05


# ---------------------------------------------------------------- fits


def test_fit_recovers_the_optimum_of_a_known_polynomial():
    r = np.array(GRID * 2)
    fit = fit_curve(r, quadratic(r), degree=4)
    assert fit.log10_ratio == pytest.approx(0.4, abs=0.01)
    assert fit.ratio == pytest.approx(10 ** 0.4, rel=0.03)
    assert not fit.at_edge and not fit.flat
    cubic = lambda x: -(x - 0.2) ** 2 * (x + 2)  # noqa: E731 — its maximum in [-1, 1] is at 0.2
    fit3 = fit_curve(r, cubic(np.log10(r)), degree=3)
    assert fit3.log10_ratio == pytest.approx(0.2, abs=0.01)


def test_fit_finds_skewed_noisy_optima():
    errors = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        peak = rng.uniform(-0.5, 0.5)
        r = np.array(GRID * 3)
        x = np.log10(r) - peak
        y = 0.55 + 0.1 * np.exp(-(x / np.where(x < 0, 0.5, 0.9)) ** 2) + rng.normal(0, 0.003, r.size)
        errors.append(abs(fit_curve(r, y, degree="auto", seed=seed).log10_ratio - peak))
    assert np.median(errors) < 0.12


def test_interval_covers_the_true_optimum_near_its_nominal_rate():
    hits = 0
    trials = 120
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        r = np.array(GRID * 3)
        y = quadratic(r) + rng.normal(0, 0.004, r.size)
        fit = fit_curve(r, y, degree=2, confidence=0.9, n_boot=300, seed=seed)
        lo, hi = fit.log10_interval
        hits += lo <= 0.4 <= hi
    assert 0.8 <= hits / trials <= 0.98


def test_edge_optima_are_flagged_and_never_extrapolated():
    r = np.array(GRID * 2)
    rising = 0.5 + 0.05 * np.log10(r)  # best beyond 10
    fit = fit_curve(r, rising, degree=4)
    assert fit.at_edge and fit.ratio == pytest.approx(10.0)
    assert fit.interval[1] <= 10.0 + 1e-9 and fit.interval[0] >= 0.1 - 1e-9


def test_flat_curves_are_flagged():
    rng = np.random.default_rng(3)
    r = np.array(GRID * 3)
    fit = fit_curve(r, 0.6 + rng.normal(0, 0.004, r.size), degree=4)
    assert fit.flat and fit.flat_p_value > 0.05
    assert not fit_curve(r, quadratic(r) + rng.normal(0, 0.004, r.size), degree=4).flat


def test_bad_points_are_clear_errors():
    with pytest.raises(ValueError, match="positive"):
        fit_curve([0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 5 distinct ratios"):
        fit_curve([1, 2, 3, 1, 2, 3], [1, 2, 3, 1, 2, 3], degree=4)
    with pytest.raises(ValueError, match="2 ratios but 3"):
        fit_curve([1, 2], [1, 2, 3])


def test_leave_one_out_prefers_the_true_degree():
    rng = np.random.default_rng(0)
    r = np.array(GRID * 3)
    assert choose_degree(np.log10(r), quadratic(r) + rng.normal(0, 0.001, r.size)) == 2


# ---------------------------------------------------------------- search


def test_adaptive_search_uses_a_quarter_of_the_grid_and_lands_close():
    rng = np.random.default_rng(5)

    def run_many(ratios):
        return [float(quadratic(r, peak=-0.25) + rng.normal(0, 0.002)) for r in ratios]

    result = adaptive_search(run_many, 0.1, 10, AdaptiveSettings(max_runs=14))
    assert len(result.runs) <= 14 <= 0.25 * 57
    assert abs(result.fit.log10_ratio + 0.25) < 0.05
    asked = [r for r, _ in result.runs]
    assert asked[:5] == log_grid(0.1, 10, 5)
    assert all(0.1 <= r <= 10 for r in asked)
    grid = grid_search(lambda r: float(quadratic(r, peak=-0.25)))
    assert len(grid.runs) == 57 and abs(grid.fit.log10_ratio + 0.25) < 0.05


# ---------------------------------------------------------------- points files


def test_points_from_csv_jsonl_and_ledgers(tmp_path, capsys):
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("ratio,performance,seed\n" + "".join(f"{r},{quadratic(r)},{s}\n" for r in GRID
                                                                for s in (0, 1)))
    ratios, perf = read_points(csv_path)
    assert len(ratios) == 14
    ledger = tmp_path / "ledger.jsonl"
    rows = [{"run_id": f"A-r{r}-s0", "stage": "A", "ratio": r, "performance": quadratic(r), "status": "done"}
            for r in GRID]
    rows.append({"run_id": "A-r2-s0", "stage": "A", "ratio": 2, "status": "failed"})  # a later crash wins
    rows.append({"run_id": "B-a2-r1-s0", "stage": "B-a2", "ratio": 1, "performance": 0.1, "status": "done"})
    ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ratios, _ = read_points(ledger, stage="A")
    assert sorted(ratios) == sorted(r for r in GRID if r != 2)
    assert qsit_main(["mix", "fit", str(csv_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ratio", "interval", "at_edge"} <= set(out) and out["ratio"] == pytest.approx(10 ** 0.4, rel=0.05)
    bad = tmp_path / "bad.csv"
    bad.write_text("ratio,score\n1,2\n")
    with pytest.raises(MixError, match="lacks a ratio or performance"):
        read_points(bad)
    assert qsit_main(["mix", "fit", str(bad)]) == 2
    assert "lacks a ratio or performance" in capsys.readouterr().err


# ---------------------------------------------------------------- real sweeps


@pytest.fixture
def sweep_config(small_corpus, tiny_checkpoint, tmp_path):
    """A miniature sweep: the tiny random model, 3 ratios per stage, a few records per run."""
    train = tmp_path / "mini.yaml"
    train.write_text(yaml.safe_dump({
        "model": str(tiny_checkpoint), "output_dir": str(tmp_path / "unused"),
        "data": {"sources": [{"path": str(small_corpus / k)} for k in ("d1", "d2", "d3")]},
        "mix": {"sizes": {"scoring": 4, "interpreting": 4, "general": 2}},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "max_val_records": 4, "log_every": 1}}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "train_config": str(train), "output_dir": str(tmp_path / "mix"), "records_per_epoch": 6,
        "max_scoring": 3,
        "validation": {"llvisionqa": str(small_corpus / "dev" / "llvisionqa.json"),
                       "iqa": str(small_corpus / "dev" / "iqa.json"), "image_root": str(small_corpus)},
        "stage_a": {"ratios": [0.5, 1, 2], "repeats": 1, "degree": 2},
        "stage_b": {"ratios": [0.5, 1, 2], "repeats": 1, "degree": 2}}))
    return sweep


def ledger_rows(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.mark.slow
def test_a_real_sweep_writes_a_plan_train_accepts_and_resumes(sweep_config, tmp_path, capsys):
    from mixing.executors import LocalExecutor
    from mixing.pipeline import run_sweep
    from mixing.sweep import load_sweep_config, run_id

    cfg = load_sweep_config(sweep_config)
    # One stage-A run is made to crash: a checkpoint pointer to nothing.
    crash = Path(cfg.output_dir) / "runs" / run_id("A", 1.0, 0) / "checkpoints"
    crash.mkdir(parents=True)
    (crash / "latest").write_text("step-404")
    with pytest.raises(RuntimeError, match="fewer than 3 ratios finished"):
        run_sweep(cfg, LocalExecutor(gpus=0))
    rows = ledger_rows(tmp_path / "mix" / "ledger.jsonl")
    assert [r["status"] for r in rows] == ["done", "failed", "done"]
    assert "step-404" in rows[1]["error"] or "FileNotFound" in rows[1]["error"]

    shutil.rmtree(crash)
    assert qsit_main(["mix", "sweep", str(sweep_config)]) == 0
    rows = ledger_rows(tmp_path / "mix" / "ledger.jsonl")
    stage_a = [r for r in rows if r["stage"] == "A"]
    assert [r["run_id"] for r in stage_a].count(run_id("A", 1.0, 0)) == 2  # retried once, the others skipped
    assert len(stage_a) == 4 and len([r for r in rows if r["stage"].startswith("B")]) == 3
    done = [r for r in rows if r["status"] == "done"]
    assert all(0 <= r["performance"] <= 1 and set(r["val_loss"]) >= {"scoring", "interpreting"}
               for r in done if r["stage"].startswith("B"))
    b = [r for r in done if r["stage"].startswith("B")]
    for r in b:  # stage B's performance is the mean of LLVisionQA accuracy and the IQA average
        m = r["metrics"]
        assert r["performance"] == pytest.approx((m["llvisionqa"] + (m["iqa_srcc"] + m["iqa_plcc"]) / 2) / 2)
    assert [r["sizes"]["scoring"] for r in b] == [3, 3, 3]
    for r in b:  # |D2 + D3| / |D1| is the swept ratio, up to rounding
        assert abs(r["sizes"]["interpreting"] + r["sizes"]["general"] - r["ratio"] * 3) <= 1

    plan_file = tmp_path / "mix" / "plan.yaml"
    plan = yaml.safe_load(plan_file.read_text())["mix"]
    ra, rb = plan["plan"]["stage_ratios"]["d2_d3"], plan["plan"]["stage_ratios"]["mix_d1"]
    assert plan["ratios"]["interpreting"] == pytest.approx(rb * ra / (1 + ra), rel=1e-3)
    assert plan["ratios"]["general"] == pytest.approx(rb / (1 + ra), rel=1e-3)
    assert plan["reference_ratio"] and plan["reference_ratio"] > 0
    assert len(plan["plan"]["provenance"]["stage_a_runs"]) == 3
    assert qsit_main(["train", str(plan_file), "--validate"]) == 0
    for name in ("stage_A.png", "stage_B.png", "report.md"):
        assert (tmp_path / "mix" / name).stat().st_size > 300

    # A third sweep runs nothing: every run is in the ledger.
    n = len(rows)
    assert qsit_main(["mix", "sweep", str(sweep_config)]) == 0
    assert len(ledger_rows(tmp_path / "mix" / "ledger.jsonl")) == n


@pytest.mark.slow
def test_plan_only_prints_commands_that_a_rerun_collects(sweep_config, tmp_path, capsys):
    assert qsit_main(["mix", "sweep", str(sweep_config), "--plan-only", "--stage", "A"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("qsit mix run-one")]
    assert len(commands) == 3
    for c in commands:  # what an outside scheduler would do
        assert qsit_main(c.split()[1:]) == 0
    capsys.readouterr()
    assert qsit_main(["mix", "sweep", str(sweep_config), "--stage", "A"]) == 0
    rows = ledger_rows(tmp_path / "mix" / "ledger.jsonl")
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)


@pytest.mark.slow
def test_ray_executor_runs_two_miniature_runs(sweep_config):
    ray = pytest.importorskip("ray")
    from mixing.executors import RayExecutor
    from mixing.sweep import load_sweep_config, sizes_stage_a, spec_for

    cfg = load_sweep_config(sweep_config)
    specs = [spec_for(cfg, "A", r, 0, sizes_stage_a(r, cfg.records_per_epoch)) for r in (0.5, 2.0)]
    try:
        ex = RayExecutor(num_cpus=1, init_kwargs={"num_cpus": 2, "include_dashboard": False})
        rows = list(ex.map(specs))
    finally:
        ray.shutdown()
    assert sorted(r["run_id"] for r in rows) == sorted(s.run_id for s in specs)
    assert all(r["status"] == "done" and math.isfinite(r["performance"]) for r in rows), rows


def test_shipped_sweep_configs_load_and_bad_keys_are_errors(tmp_path):
    from mixing.sweep import load_sweep_config
    from qsit.train_config import ConfigError

    shipped = sorted((Path(__file__).resolve().parent.parent / "qsit" / "configs" / "mix").glob("*.yaml"))
    assert shipped
    for path in shipped:
        cfg = load_sweep_config(path)
        assert Path(cfg.train_config).is_file() and cfg.stage_a.search in ("grid", "adaptive")
    with pytest.raises(ConfigError, match="unknown key stage_a.serach"):
        load_sweep_config(shipped[0], ["stage_a.serach=grid"])
    with pytest.raises(ConfigError, match="search must be grid or adaptive"):
        load_sweep_config(shipped[0], ["stage_a.search=random"])


def test_a_flat_response_is_reported_from_the_whole_curve():
    result = adaptive_search(lambda rs: [0.2667] * len(rs), 0.1, 10, AdaptiveSettings(max_runs=7))
    assert result.fit.flat and result.fit.swept == (0.1, 10.0)
