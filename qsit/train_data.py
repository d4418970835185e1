"""The data of a training run: record sources → items with their token lengths → each epoch's batches.

An epoch is one draw from the pools of each kind by the current plan (``qsit.mixture``),
grouped by length, and dealt out to the processes.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qsit.mixture import draw_epoch, length_grouped_batches, padding_fraction, resolve_sizes
from qsit.records import IMAGE_MARKER, KINDS, SCORING, Record, iter_jsonl
from qsit.train_config import ConfigError, TrainConfig


@dataclass
class Item:
    record: Record
    images: list[Path]
    length: int


def source_folder(source_path: Path) -> Path:
    """The folder of a source: a build folder itself, or the one holding a records file."""
    return source_path if source_path.is_dir() else source_path.parent


def source_manifest(source_path: Path) -> dict:
    """The build manifest beside a source's records, or {} for a bare JSONL."""
    found = source_folder(source_path) / "manifest.json"
    return json.loads(found.read_text()) if found.is_file() else {}


def image_resolver(source_path: Path, image_root: str | None, manifest: dict | None = None):
    """How a source's record image paths map to files: manifest image_root with its prefix stripped
    (``manifest``: the source's, when the caller has read it already)."""
    manifest = source_manifest(source_path) if manifest is None else manifest
    root = Path(image_root or manifest.get("image_root") or source_folder(source_path))
    prefix = manifest.get("image_prefix") or ""

    def resolve(p: str) -> Path:
        rel = p[len(prefix) + 1:] if prefix and p.startswith(prefix + "/") else p
        return Path(rel) if Path(rel).is_absolute() else root / rel

    return resolve


def records_file(source: str | Path, what: str = "data source") -> Path:
    path = Path(source)
    found = path / "records.jsonl" if path.is_dir() else path
    if not found.is_file():
        raise ConfigError(f"{what} {source}: no records.jsonl there")
    return found


def load_sources(cfg: TrainConfig) -> list[tuple[Record, list[Path]]]:
    """Every record of the configured sources with its image files."""
    out = []
    for src in cfg.data.sources:
        manifest = source_manifest(Path(src.path))
        resolve = image_resolver(Path(src.path), src.image_root, manifest)
        records = list(iter_jsonl(records_file(src.path)))
        kept = [r for r in records if src.tasks is None or r.meta.get("task") in src.tasks]
        if records and not kept:  # a misspelt task would otherwise train on nothing, silently
            present = sorted({str(r.meta.get("task")) for r in records})
            raise ConfigError(f"data source {src.path}: no record has a task in {src.tasks} "
                              f"(its tasks: {', '.join(present)})")
        if src.where:
            kept = [r for r in kept if all(r.meta.get(k) == v for k, v in src.where.items())]
            if not kept:
                raise ConfigError(f"data source {src.path}: no record's meta matches where {src.where}")
        level_range = manifest.get("level_range")
        if level_range:  # the range its scores were levelled with, for soft level targets
            kept = [with_level_range(r, level_range) for r in kept]
        for r in kept:  # repeated in training only: a validation record counts once
            out += [(r, [resolve(p) for p in r.images])] * (src.repeat if r.split == "train" else 1)
    return out


def with_level_range(record: Record, level_range: list[float]) -> Record:
    """A scoring record with a score carries the range eq. 1 levelled it with (unless it has one)."""
    if record.kind != SCORING or "mos" not in record.meta or "level_range" in record.meta:
        return record
    return dataclasses.replace(record, meta={**record.meta, "level_range": list(level_range)})


def conversation_texts(sources: list[str]) -> Iterator[str]:
    """Every message's text in these record sources, without image placeholders."""
    for src in sources:
        for record in iter_jsonl(records_file(src, "tiny_vocab_from")):
            for message in record.messages:
                yield message["content"].replace(IMAGE_MARKER, "").strip()


class TrainData:
    """The train and validation items per kind, and the epoch size of each kind the plan asks for."""

    def __init__(self, cfg: TrainConfig, processor):
        from qsit.tokenization import estimate_length, image_size_hw

        self.cfg = cfg
        self.items: dict[str, dict[str, list[Item]]] = {s: {k: [] for k in KINDS} for s in ("train", "val")}
        self.dropped = {k: 0 for k in KINDS}
        for record, paths in load_sources(cfg):
            if record.split not in ("train", "val"):
                continue
            n = estimate_length(processor, record, [image_size_hw(p) for p in paths])
            if n > cfg.data.max_length:
                self.dropped[record.kind] += 1  # never truncated: that would cut image tokens
                continue
            self.items[record.split][record.kind].append(Item(record, paths, n))
        rng = random.Random(cfg.train.seed)
        for k in KINDS:  # a bounded, fixed validation subset per kind
            v = self.items["val"][k]
            if len(v) > cfg.train.max_val_records:
                self.items["val"][k] = rng.sample(v, cfg.train.max_val_records)
        self.sizes = resolve_sizes(self.pools, cfg.mix.sizes, cfg.mix.ratios, cfg.mix.base)

    @property
    def pools(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.items["train"].items()}

    def summary(self) -> dict:
        return {"pools": self.pools, "val": {k: len(v) for k, v in self.items["val"].items()}, "sizes": self.sizes,
                "dropped_over_length": self.dropped}

    def epoch_batches(self, epoch: int, sizes: dict[str, int], rank: int = 0, world: int = 1
                      ) -> tuple[list[list[Item]], dict]:
        """This process's batches of one epoch drawn with ``sizes``, and facts about the draw."""
        t = self.cfg.train
        draw = draw_epoch(self.pools, sizes, t.seed, epoch)
        chosen = [self.items["train"][k][i] for k in sorted(draw.indices) for i in draw.indices[k]]
        lengths = [it.length for it in chosen]
        if t.group_by_length:
            order = length_grouped_batches(lengths, t.batch_size, seed=t.seed * 1000 + epoch)
        else:
            idx = list(range(len(chosen)))
            random.Random(t.seed * 1000 + epoch).shuffle(idx)
            order = [idx[i:i + t.batch_size] for i in range(0, len(idx), t.batch_size)]
        usable = len(order) - len(order) % world if world > 1 else len(order)
        mine = order[rank:usable:world]
        info = {"resampled": draw.resampled, "padding_fraction": padding_fraction(lengths, order),
                "records": len(chosen)}
        return [[chosen[i] for i in b] for b in mine], info
