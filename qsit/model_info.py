"""What a trained checkpoint says about itself: ``qsit_model.json`` beside the weights.

Written by every training stage into its ``final/`` folder and carried by exports, so a
checkpoint is scored with the prompts it was trained on: ``Assessor.from_pretrained`` takes
the preset from here unless one is passed explicitly (and then names a mismatch in the notes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from qsit.levels import LEVELS
from qsit.prompts import get_preset

MODEL_INFO_FILE = "qsit_model.json"
FORMAT = 1


def describe_training(cfg, **run) -> dict:
    """The metadata of a checkpoint trained with ``cfg`` (a ``TrainConfig``); ``run`` adds the run's facts."""
    preset = get_preset(cfg.preset)
    return {
        "format": FORMAT,
        "preset": preset.name,
        "prompt_version": preset.version,
        "levels": list(LEVELS),
        "tasks": list(preset.tasks),
        "stage": cfg.stage,
        "kinds": sorted(cfg.mix.ratios or cfg.mix.sizes or {}) if cfg.stage == "chat" else [],
        "reference_ratio": cfg.mix.reference_ratio,
        "mix_plan": dataclasses.asdict(cfg.mix.plan) if cfg.mix.plan is not None else None,
        "config": cfg.to_dict(),
        "run": run,
    }


def write_model_info(folder: str | os.PathLike, info: dict) -> Path:
    path = Path(folder) / MODEL_INFO_FILE
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return path


def run_finished(run_dir: str | os.PathLike) -> bool:
    """Whether a training run wrote its ``final`` checkpoint to the end (the description comes last)."""
    return (Path(run_dir) / "final" / MODEL_INFO_FILE).is_file()


def read_model_info(name_or_path: str | os.PathLike) -> dict | None:
    """A checkpoint's ``qsit_model.json`` (local folder or hub id), or None if it has none."""
    name = os.fspath(name_or_path)
    if Path(name).is_dir():
        path = Path(name) / MODEL_INFO_FILE
        found = str(path) if path.is_file() else None
    else:
        from transformers.utils import cached_file

        try:
            found = cached_file(name, MODEL_INFO_FILE, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except OSError:
            found = None
    if found is None:
        return None
    try:
        info = json.loads(Path(found).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{found}: not a readable qsit model description ({e})") from None
    if not isinstance(info, dict) or "preset" not in info:
        raise ValueError(f"{found}: a qsit model description needs a 'preset' field")
    return info


def checkpoint_identity(name_or_path: str | os.PathLike) -> str:
    """A name for evaluation caches that changes when the weights do.

    A local folder is named by its absolute path (so ``ckpt`` and ``/abs/ckpt`` share a cache)
    and by the size and modification time of its weight files (so a checkpoint retrained or
    re-exported into the same folder is evaluated afresh rather than read from a stale cache);
    a hub id is its own name."""
    path = Path(name_or_path)
    if not path.is_dir():
        return os.fspath(name_or_path)
    path = path.resolve()
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)
    return f"{path}#{hashlib.sha1(stamp.encode()).hexdigest()[:12]}"
