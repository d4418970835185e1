"""The coarse-grained mix search as runs: a typed sweep config, an append-only ledger, two stages.

Each point of a sweep is an ordinary ``qsit train`` run of the small model with
``mix.sizes`` set for that point, followed by its evaluation; its outcome (the
recipe's typed result and the eval functions' numbers, never log files) is one
ledger row. A rerun skips finished runs, retries failed ones and recomputes
every fit from the ledger, so nothing finished is lost.

**Ratio axes** (where the paper is ambiguous, decided here):

* stage A: ``r_A = |D2| / |D3|`` — the paper's optimum 2.42 is D2:D3 = 2.42:1, as
  its final 1 : 2.50 : 1.04 shows. Each run trains ``records_per_epoch``
  records split ``r_A : 1`` (the corpus's D3 pool is small, so a fixed budget
  replaces "all of one kind, the other subsampled"; the recipe resamples a pool
  that is too small). Performance: LLVisionQA-dev accuracy.
* stage B: ``r_B = |D2 + D3| / |D1|`` with D1 as the base (all of it, up to
  ``max_scoring``) and D2:D3 at the fitted ``r_A``. Performance: the mean of
  LLVisionQA-dev accuracy and the IQA (SRCC + PLCC) / 2.
* λ = mean L_S / L_I (last-epoch validation) over the repeats of the stage-B
  ratio nearest (in log10) to the fitted optimum.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from mixing.search import PAPER_REPEATS, PAPER_STAGE_A, PAPER_STAGE_B, AdaptiveSettings
from qsit.records import GENERAL, INTERPRETING, SCORING
from qsit.train_config import ConfigError, _build

STAGES = ("A", "B")


@dataclass
class ValidationSets:
    llvisionqa: str
    """LLVisionQA-format JSON (the dev split)."""
    iqa: str | None = None
    """IQA list (img_path, gt_score) for stage B."""
    image_root: str | None = None
    """Where their img_path values resolve (default: each file's folder)."""
    llvisionqa_mode: str = "likelihood"
    """likelihood (one forward pass per question; quick for small-model sweeps) or generate."""


@dataclass
class StageConfig:
    ratios: list[float] = field(default_factory=lambda: list(PAPER_STAGE_A))
    repeats: int = PAPER_REPEATS
    search: str = "grid"
    """grid (every ratio × repeats, the paper's way) or adaptive (see mixing.search)."""
    adaptive: AdaptiveSettings = field(default_factory=AdaptiveSettings)
    degree: str = "4"
    """Polynomial degree of the fit, or auto."""


@dataclass
class SweepConfig:
    train_config: str
    """The small model's `qsit train` config (its data.sources give D1, D2, D3)."""
    output_dir: str
    validation: ValidationSets
    overrides: list[str] = field(default_factory=list)
    """Extra `section.key=value` overrides for every run (e.g. train.epochs=1)."""
    stage_a: StageConfig = field(default_factory=StageConfig)
    stage_b: StageConfig = field(default_factory=lambda: StageConfig(ratios=list(PAPER_STAGE_B)))
    records_per_epoch: int = 2000
    """Stage A: D2 + D3 records per epoch of each run."""
    max_scoring: int | None = None
    """Stage B: D1 records per epoch (default: the whole D1 training pool)."""
    seed: int = 0
    primary_config: str | None = None
    """The primary model's config the plan is written into (default: train_config)."""


def load_sweep_config(path: str | os.PathLike, overrides: list[str] | None = None) -> SweepConfig:
    from qsit.train_config import apply_overrides

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    data = apply_overrides(data, overrides or [])
    for key in ("stage_a", "stage_b"):
        deg = data.get(key, {}).get("degree") if isinstance(data.get(key), dict) else None
        if deg is not None:
            data[key]["degree"] = str(deg)
    cfg = _build(SweepConfig, data, "")
    base = path.parent
    # Paths in a sweep config resolve relative to the config file.
    cfg.train_config = _rel(base, cfg.train_config)
    cfg.primary_config = _rel(base, cfg.primary_config) if cfg.primary_config else None
    cfg.validation.llvisionqa = _rel(base, cfg.validation.llvisionqa)
    cfg.validation.iqa = _rel(base, cfg.validation.iqa) if cfg.validation.iqa else None
    cfg.validation.image_root = _rel(base, cfg.validation.image_root) if cfg.validation.image_root else None
    check_sweep(cfg)
    return cfg


def _rel(base: Path, p: str) -> str:
    return p if Path(p).is_absolute() else str((base / p).resolve()) if (base / p).exists() else p


def check_sweep(cfg: SweepConfig) -> None:
    for name, st in (("stage_a", cfg.stage_a), ("stage_b", cfg.stage_b)):
        if st.search not in ("grid", "adaptive"):
            raise ConfigError(f"{name}.search must be grid or adaptive, got {st.search!r}")
        if st.degree != "auto" and not st.degree.isdigit():
            raise ConfigError(f"{name}.degree must be a whole number or auto, got {st.degree!r}")
        if len(st.ratios) < 3 or any(r <= 0 for r in st.ratios):
            raise ConfigError(f"{name}.ratios needs at least 3 positive ratios")
        if st.repeats < 1:
            raise ConfigError(f"{name}.repeats must be at least 1")
    if cfg.validation.llvisionqa_mode not in ("likelihood", "generate"):
        raise ConfigError("validation.llvisionqa_mode must be likelihood or generate")
    if cfg.records_per_epoch < 2:
        raise ConfigError("records_per_epoch must be at least 2")


# ---------------------------------------------------------------- runs
@dataclass
class RunSpec:
    stage: str
    ratio: float
    seed: int
    sizes: dict[str, int]
    run_dir: str
    train_config: str
    overrides: list[str]
    validation: dict

    @property
    def run_id(self) -> str:
        return run_id(self.stage, self.ratio, self.seed)

    def train_overrides(self) -> list[str]:
        sizes = "{" + ", ".join(f"{k}: {v}" for k, v in self.sizes.items()) + "}"
        return [*self.overrides, f"output_dir={self.run_dir}", "mix.ratios=null", f"mix.sizes={sizes}",
                "mix.reference_ratio=null", f"train.seed={self.seed}"]

    def command(self, spec_path: Path) -> str:
        return f"qsit mix run-one {spec_path}"


def run_id(stage: str, ratio: float, seed: int) -> str:
    return f"{stage}-r{ratio:.4g}-s{seed}"


def sizes_stage_a(ratio: float, records: int) -> dict[str, int]:
    """|D2| / |D3| = ratio, |D2| + |D3| = records."""
    d2 = round(records * ratio / (1 + ratio))
    return {SCORING: 0, INTERPRETING: max(1, d2), GENERAL: max(1, records - d2)}


def sizes_stage_b(ratio: float, ratio_a: float, d1: int) -> dict[str, int]:
    """|D2 + D3| / |D1| = ratio, D2:D3 = ratio_a, D1 = d1."""
    rest = ratio * d1
    return {SCORING: d1, INTERPRETING: max(1, round(rest * ratio_a / (1 + ratio_a))),
            GENERAL: max(1, round(rest / (1 + ratio_a)))}


def execute(spec: RunSpec) -> dict:
    """Train and evaluate one run; returns its ledger row (status done or failed, never raises)."""
    t0 = time.perf_counter()
    row = {"run_id": spec.run_id, "stage": spec.stage, "ratio": spec.ratio, "seed": spec.seed,
           "sizes": spec.sizes, "run_dir": spec.run_dir}
    try:
        from evals.llvisionqa import load_questions, run_llvisionqa
        from qsit.assessor import Assessor
        from qsit.recipe import run as train
        from qsit.train_config import load_config

        result = train(load_config(spec.train_config, spec.train_overrides()), progress=False)
        assessor = Assessor.from_pretrained(result.final)
        v = spec.validation
        root = v.get("image_root") or str(Path(v["llvisionqa"]).parent)
        questions, _ = load_questions(v["llvisionqa"], root)
        eval_dir = Path(spec.run_dir) / "eval"
        qa = run_llvisionqa(assessor, questions, root, eval_dir, mode=v["llvisionqa_mode"], progress=False)
        accuracy = qa["likelihood" if v["llvisionqa_mode"] == "likelihood" else "generate"]["overall"]["accuracy"]
        metrics = {"llvisionqa": accuracy}
        performance = accuracy
        if spec.stage.startswith("B") and v.get("iqa"):
            from evals.iqa import run_iqa

            iqa = run_iqa(assessor, {"dev": v["iqa"]}, v.get("image_root"), eval_dir, progress=False)
            s = iqa["sets"]["dev"]
            metrics.update(iqa_srcc=s["srcc"], iqa_plcc=s["plcc"])
            performance = (accuracy + (s["srcc"] + s["plcc"]) / 2) / 2
        row.update(status="done", performance=performance, metrics=metrics, val_loss=result.val_loss,
                   loss_ratio=result.loss_ratio, steps=result.global_steps)
    except Exception as e:  # a crashed run is recorded and retried by the next sweep
        row.update(status="failed", error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc(limit=5))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


# ---------------------------------------------------------------- ledger
class Ledger:
    """Append-only JSONL of finished runs; the last row of a run id wins."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.is_file():
            for i, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    # A line cut by a crash mid-write: the run is simply redone.
                    print(f"qsit: {self.path}:{i}: unreadable ledger line skipped", file=sys.stderr)
                    continue
                self.rows[row["run_id"]] = row

    def done(self, rid: str) -> bool:
        return self.rows.get(rid, {}).get("status") == "done"

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[row["run_id"]] = row


def spec_for(cfg: SweepConfig, stage: str, ratio: float, seed: int, sizes: dict[str, int]) -> RunSpec:
    return RunSpec(stage=stage, ratio=float(ratio), seed=seed, sizes=sizes,
                   run_dir=str(Path(cfg.output_dir) / "runs" / run_id(stage, ratio, seed)),
                   train_config=cfg.train_config, overrides=list(cfg.overrides),
                   validation=asdict(cfg.validation))


def write_spec(spec: RunSpec) -> Path:
    path = Path(spec.run_dir) / "spec.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(spec), indent=2))
    return path


def read_spec(path: str | os.PathLike) -> RunSpec:
    try:
        return RunSpec(**json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise ConfigError(f"{path}: not a run spec ({e})") from None
