"""Typed training configs: one YAML file per experiment, unknown keys rejected.

Overrides on the command line are ``section.key=value`` (the value parsed as
YAML); a misspelled key is an error that suggests the close matches.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from qsit.records import KINDS, SCORING
from qsit.suggest import did_you_mean

STAGES = ("chat", "perception")
SCORE_LABELS = ("level", "soft")


class ConfigError(ValueError):
    """A config problem; the message names the key and what is wrong."""


@dataclass
class Source:
    path: str
    """A build output folder (records.jsonl + manifest.json) or a records JSONL file."""
    image_root: str | None = None
    """Where its image paths resolve; default: the manifest's image_root (prefix stripped)."""
    tasks: list[str] | None = None
    """Keep only records whose ``meta.task`` is one of these (e.g. ``[describe]`` from a D2 build)."""
    where: dict[str, Any] | None = None
    """Keep only records whose ``meta`` has each of these values (e.g. ``{mos: 100.0}``: a synthetic
    D1's pristine images)."""
    repeat: int = 1
    """Each kept training record enters the pool this many times, so it is drawn that much more often
    (a validation record counts once)."""


@dataclass
class DataConfig:
    sources: list[Source] = field(default_factory=list)
    max_length: int = 4096
    """Records longer than this (in tokens, images included) are dropped and counted, never truncated."""


@dataclass
class MixPlan:
    """The outcome of a coarse mix search (``qsit mix sweep``): what a primary run is trained with."""

    ratios: dict[str, float]
    """Records per epoch relative to the base kind, e.g. {scoring: 1, interpreting: 2.50, general: 1.04}."""
    base: str = SCORING
    reference_ratio: float | None = None
    """λ = L_S / L_I of the chosen small-model run's validation."""
    stage_ratios: dict[str, float] = field(default_factory=dict)
    """The fitted ratios: d2_d3 = |D2|/|D3|, mix_d1 = |D2+D3|/|D1|."""
    intervals: dict[str, list[float]] = field(default_factory=dict)
    """Bootstrap confidence interval of each fitted ratio."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Sweep config, ledger, run ids behind each fit, flags (at_edge, flat)."""


@dataclass
class MixConfig:
    sizes: dict[str, int] | None = None
    """Records per epoch for each kind (scoring, interpreting, general)."""
    ratios: dict[str, float] | None = None
    """Or ratios between kinds, scaled so the ``base`` kind uses all its training records."""
    base: str = SCORING
    reference_ratio: float | None = None
    """λ = L_S / L_I from the coarse search; None keeps the plan fixed."""
    step: float = 0.1
    """Relative growth of D1 or of D2+D3 per adjustment."""
    tolerance: float = 0.05
    """No change while L'_S/L'_I is within this relative band around λ."""
    plan: MixPlan | None = None
    """Where ratios and λ came from; when given, ratios, base and reference_ratio must match it."""


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Module names in the language model that get adapters."""


@dataclass
class PerceptionConfig:
    """The perception stage (``stage: perception``): the vision tower learns low-level quality."""

    photos: list[str] = field(default_factory=list)
    """Folders of pristine *training* photos (``qsit build synthetic`` writes ``photos/train``)."""
    steps: int = 1500
    batch_size: int = 48
    lr: float = 1e-3
    distortions: list[str] | None = None
    """Distortion keys to draw from (default: all of the corpus's)."""
    val_photos: int = 3
    """Photos held out of this stage to report how well it carries over to unseen photos."""
    val_samples: int = 480
    eval_every: int = 250
    save_every: int = 100
    workers: int = 1
    """Processes drawing distorted tiles while the tower trains."""
    corpus_side: int = 256
    """Photos are shrunk to at most twice this, so tiles match the scale the chat stages see."""
    tile_rescale: list[float] | None = None
    """[low, high]: cut each tile *after* the damage, at a random offset and rescaled by a factor
    drawn from this range, as the processor's resize does to a whole image (off: the tile is the
    damaged window's centre, so JPEG's 8-px blocks line up with the patches, which they never do
    in an image the processor has resized)."""
    window_side: int | None = None
    """Side in px of the window each tile is cut from, damaged as a whole. Off: 1.5 tiles, the tile
    at its centre (fast, but damage whose size follows the image's — zoom blur, elastic warps, fog,
    frost — then acts at a window's scale: zoom blur at severity 5 costs a tile's pseudo-MOS half of
    what it costs a 224-px corpus image). A corpus image's side damages windows as the corpus damages
    its images, and tiles are cut anywhere in them, as the processor's grid cuts an image."""
    tiles_per_window: int = 1
    """Tiles cut from each damaged window (one damage, several places): a large window costs about
    four small ones to damage, so cutting several keeps the stage's pace."""
    severity_per_distortion: bool = False
    """One severity regression per distortion (read at the tile's own) instead of one for all, whose
    single direction in the features must serve every distortion's scale."""
    pristine_fraction: float | None = None
    """Share of drawn windows left undamaged (default: a sixth). Pairs for ``ranking_weight`` keep
    their own (one pair in three holds the pristine tile)."""
    ranking_weight: float = 0.0
    """> 0: tiles come in pairs (one window and distortion, two severities) and the pseudo-MOS
    head also learns to order each pair, with this weight (RankIQA-style ranking)."""
    local_mos_weight: float = 0.0
    """> 0: every patch token also predicts its patch's pseudo-MOS (a quality map from the SSIM
    maps, as BIECON learns local full-reference scores), with this weight."""
    grey_fraction: float = 0.0
    """Share of drawn windows seen in grey (before the damage): colour then cannot stand for quality.
    Many damages (fog, contrast, exposure, snow) wash colour out, so a tower shown only colourful
    clean photos learns that grey means damaged and scores clean grey photos low."""
    ema_decay: float | None = None
    """Set (e.g. 0.999): the stage ships an exponential moving average of the tower's and heads' weights
    over its steps instead of the last step's (``torch.optim.swa_utils``), and keeps the last step's
    model beside it in ``final-last`` to compare."""


@dataclass
class TrainSettings:
    epochs: int = 3
    batch_size: int = 4
    """Per device."""
    grad_accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    min_lr_ratio: float = 0.0
    """The cosine schedule's floor as a fraction of ``lr`` (transformers' ``cosine_with_min_lr``); 0 decays
    to zero. A floor of 0.25 in the mix tied its yes-no answers to the question on one seed and not on
    the other (model card, step 75)."""
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "auto"
    """auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32."""
    group_by_length: bool = True
    gradient_checkpointing: bool = False
    freeze_vision: bool = True
    vision_lr: float | None = None
    """With freeze_vision false: the tower's own learning rate (None: lr), as LLaVA-OneVision's
    recipes train their tower at a fraction of the language model's rate."""
    score_labels: str = "level"
    """How a scoring record's level word is learnt: "level", the word itself (Q-Align, Q-SiT); "soft",
    a target shared by the two levels nearest its score (``qsit.levels.soft_level_target``), so
    that Σ p·i learns the score and not only its interval. "soft" needs each scoring record's
    ``meta.mos`` and the range its source levelled with (a D1 build's ``manifest.json``)."""
    flip_scoring_images: bool = False
    """Draw each scoring record's image as it is, mirrored, upside down or both, at random each time it
    is drawn (``qsit.images.SCORING_FLIPS``): more views of the same photos for the score, with the
    label unchanged where the score is a full-reference one against a pristine image that would flip
    with it, as qsit's pseudo-MOS is. Other kinds are never flipped: their answers may say where."""
    grey_scoring_images: float = 0.0
    """Share of scoring records whose image is drawn in grey (``qsit.images.grey``), at random each time
    it is drawn: label-exact for qsit's pseudo-MOS, which compares the luminance that grey keeps, and it
    stops the score reading colour as quality. Other kinds stay in colour: their answers may name one."""
    log_every: int = 10
    save_every_steps: int = 0
    """Also checkpoint every N optimizer steps (0: only at the end of each epoch)."""
    eval_batch_size: int = 8
    max_val_records: int = 512
    """Per kind, so validation stays quick."""


@dataclass
class TrainConfig:
    model: str
    """A LLaVA-OneVision checkpoint (folder or hub id), or "tiny" for a fresh random tiny one."""
    output_dir: str
    tiny_size: dict[str, int | bool] | None = None
    """With model "tiny": qsit.tiny.TinyConfig fields (e.g. text_hidden) to size the fresh model."""
    tiny_vocab_from: list[str] = field(default_factory=list)
    """With model "tiny": record sources (folders or JSONL) whose conversation text the fresh
    tokenizer is fitted to, so that the words of the answers are whole tokens."""
    data: DataConfig = field(default_factory=DataConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    lora: LoraConfig | None = None
    deepspeed: str | None = None
    """zero2, zero3 (the shipped configs) or a path to a DeepSpeed JSON."""
    preset: str = "qsit"
    stage: str = "chat"
    """chat (records → language-model loss) or perception (the vision tower alone, see qsit.perception)."""
    perception: PerceptionConfig | None = None
    root: str | None = None
    """The folder relative paths in this config (model, output_dir, data, photos, deepspeed) start from,
    itself relative to the config file; unset, they start from the current directory. The shipped
    configs set it to the repository, so they run from any folder."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data: Any, where: str):
    """Construct dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {where + '.' if where else ''}{key}.{did_you_mean(key, known)}")
    kwargs = {k: _value(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def _value(tp, v, where):
    origin = get_origin(tp)
    args = get_args(tp)
    if v is None:
        if type(None) in args or tp is Any:
            return None
        raise ConfigError(f"{where} must not be empty")
    if origin is not None and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], v, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, where)
    if origin is list:
        if not isinstance(v, list):
            raise ConfigError(f"{where} must be a list")
        return [_value(args[0], x, f"{where}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{where} must be a mapping")
        return {str(k): _value(args[1], x, f"{where}.{k}") for k, x in v.items()}
    if tp is float:
        if isinstance(v, bool):
            raise ConfigError(f"{where} must be a number, got {v!r}")
        try:
            return float(v)  # also YAML's "3e-3", which YAML 1.1 reads as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {v!r}") from None
    if tp in (int, str, bool) and not (isinstance(v, tp) and not (tp is int and isinstance(v, bool))):
        raise ConfigError(f"{where} must be {tp.__name__}, got {v!r}")
    return v


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    cfg = _build(TrainConfig, apply_overrides(data, overrides or []), "")
    if cfg.root is not None:
        cfg.root = str((path.parent / cfg.root).resolve())
        resolve_paths(cfg, Path(cfg.root))
    check(cfg)
    return cfg


def resolve_paths(cfg: TrainConfig, base: Path) -> None:
    """Make the config's relative paths start from ``base`` (a hub id or "tiny" stays a name)."""
    def under(p: str) -> str:
        return p if Path(p).is_absolute() else str(base / p)

    if not cfg.model.startswith("tiny") and (base / cfg.model).exists():
        cfg.model = under(cfg.model)
    cfg.output_dir = under(cfg.output_dir)
    for src in cfg.data.sources:
        src.path = under(src.path)
        src.image_root = under(src.image_root) if src.image_root else None
    cfg.tiny_vocab_from = [under(p) for p in cfg.tiny_vocab_from]
    if cfg.perception is not None:
        cfg.perception.photos = [under(p) for p in cfg.perception.photos]
    if cfg.deepspeed and cfg.deepspeed not in ("zero2", "zero3"):
        cfg.deepspeed = under(cfg.deepspeed)


def check(cfg: TrainConfig) -> None:
    """Value checks that need no files (``validate`` in the recipe checks files and data)."""
    for i, src in enumerate(cfg.data.sources):
        if src.repeat < 1:
            raise ConfigError(f"data.sources[{i}].repeat must be at least 1, got {src.repeat}")
    t = cfg.train
    for name in ("epochs", "batch_size", "grad_accum"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1")
    if t.lr <= 0:
        raise ConfigError("train.lr must be positive")
    if t.vision_lr is not None and (t.freeze_vision or t.vision_lr <= 0):
        raise ConfigError("train.vision_lr needs train.freeze_vision: false and a positive value")
    if t.score_labels not in SCORE_LABELS:
        raise ConfigError(f"train.score_labels must be one of {', '.join(SCORE_LABELS)}, got {t.score_labels!r}")
    if not 0 <= t.min_lr_ratio < 1:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1), got {t.min_lr_ratio}")
    if t.min_lr_ratio and t.scheduler != "cosine":
        raise ConfigError(f"train.min_lr_ratio needs train.scheduler: cosine, got {t.scheduler!r}")
    if t.precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"train.precision must be auto, bf16, fp16 or fp32, got {t.precision!r}")
    if not 0 <= t.grey_scoring_images <= 1:
        raise ConfigError(f"train.grey_scoring_images must be in [0, 1], got {t.grey_scoring_images}")
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    check_trainable_preset(cfg.preset)
    if cfg.stage == "perception":
        p = cfg.perception
        if p is None or not p.photos:
            raise ConfigError("stage perception needs perception.photos: folders of pristine training photos")
        if p.steps < 1 or p.batch_size < 2 or p.lr <= 0 or p.val_photos < 0:
            raise ConfigError("perception.steps >= 1, batch_size >= 2, lr > 0 and val_photos >= 0 are required")
        r = p.tile_rescale
        if r is not None and not (len(r) == 2 and 2 / 3 <= r[0] <= r[1]):
            # the tile is cut from a window 1.5 tiles wide, so it can shrink by at most 2/3
            raise ConfigError(f"perception.tile_rescale must be [low, high] with 2/3 <= low <= high, got {r}")
        if p.tiles_per_window < 1 or p.batch_size % p.tiles_per_window or (
                p.tiles_per_window > 1 and (p.window_side is None or p.ranking_weight)):
            # a small window has one tile, its centre; pairs are tiles of one window already
            raise ConfigError("perception.tiles_per_window must be >= 1 and divide batch_size, and > 1 needs "
                              f"window_side and no ranking_weight; got {p.tiles_per_window} with batch_size "
                              f"{p.batch_size}, window_side {p.window_side}, ranking_weight {p.ranking_weight}")
        if p.pristine_fraction is not None and not (0 <= p.pristine_fraction < 1 and not p.ranking_weight):
            raise ConfigError("perception.pristine_fraction must be in [0, 1) and cannot be set with ranking_weight "
                              f"(pairs draw their own), got {p.pristine_fraction}")
        if p.local_mos_weight < 0:
            raise ConfigError(f"perception.local_mos_weight must be >= 0, got {p.local_mos_weight}")
        if not 0 <= p.grey_fraction <= 1:
            raise ConfigError(f"perception.grey_fraction must be in [0, 1], got {p.grey_fraction}")
        if p.ema_decay is not None and not 0 < p.ema_decay < 1:
            raise ConfigError(f"perception.ema_decay must be in (0, 1), got {p.ema_decay}")
        if p.ranking_weight < 0 or (p.ranking_weight > 0 and p.batch_size % 2):
            raise ConfigError("perception.ranking_weight must be >= 0, and > 0 needs an even batch_size (pairs), "
                              f"got {p.ranking_weight} with batch_size {p.batch_size}")
        return
    if not cfg.data.sources:
        raise ConfigError("data.sources is empty: give at least one build output folder")
    m = cfg.mix
    if (m.sizes is None) == (m.ratios is None):
        raise ConfigError("mix needs exactly one of sizes or ratios")
    given = m.sizes or m.ratios
    bad = sorted(set(given) - set(KINDS))
    if bad:
        raise ConfigError(f"mix kinds {bad} unknown; use {', '.join(KINDS)}")
    if any(v < 0 for v in given.values()) or not any(v > 0 for v in given.values()):
        raise ConfigError("mix sizes/ratios must be non-negative with at least one positive")
    if m.ratios is not None and m.ratios.get(m.base, 0) <= 0:
        raise ConfigError(f"mix.base {m.base!r} needs a positive ratio")
    if m.reference_ratio is not None and m.reference_ratio <= 0:
        raise ConfigError("mix.reference_ratio (λ) must be positive")
    if not 0 < m.step <= 1 or not 0 <= m.tolerance < 1:
        raise ConfigError("mix.step must be in (0, 1] and mix.tolerance in [0, 1)")
    if m.plan is not None:
        same = (m.ratios is not None and {k: round(v, 6) for k, v in m.ratios.items()} ==
                {k: round(v, 6) for k, v in m.plan.ratios.items()} and m.base == m.plan.base
                and m.reference_ratio == m.plan.reference_ratio)
        if not same:
            raise ConfigError("mix.ratios, mix.base and mix.reference_ratio must match mix.plan (edit both or "
                              "drop mix.plan)")


def check_trainable_preset(name: str) -> None:
    """A preset whose answer prefix ends in a space (the published Q-SiT script's) cannot be trained:
    scoring would show the model a lone space token that no training answer ("... is good.") contains."""
    from qsit.prompts import get_preset

    try:
        preset = get_preset(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    spaced = [task for task, p in preset.scoring.items() if p.answer_prefix[-1:].isspace()]
    if spaced:
        raise ConfigError(f"preset {name!r} is for scoring published checkpoints only: its {spaced[0]} answer "
                          "prefix ends in a space, so a model trained with it would be scored on a token its "
                          "training never showed; train with 'qsit' or 'qalign'")
