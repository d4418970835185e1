"""What every builder shares: problem lists, content hashes, seeded splits, and the output folder.

An output folder holds ``records.jsonl`` (the one record schema), ``hf/`` (the
same records as an HF ``datasets`` copy, ``load_from_disk``-able) and
``manifest.json`` (counts per kind / source / split / level, content hashes of
the inputs, builder version, seed, arguments, and every problem met).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qsit.records import Record, write_jsonl

BUILDER_VERSION = "1"


class BuildError(ValueError):
    """A build cannot go on; the message says why (and lists what is wrong)."""


@dataclass
class Problems:
    """Bad rows met while building: reported with file and line, never silently dropped."""

    items: list[dict] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.items.append({"where": where, "problem": message})

    def __len__(self) -> int:
        return len(self.items)

    def lines(self) -> list[str]:
        return [f"{p['where']}: {p['problem']}" for p in self.items]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def seeded_split(keys: Sequence[str], test_fraction: float, val_fraction: float, seed: int) -> dict[str, str]:
    """Assign each key to test, then val (a fraction of what is left for training), then train.

    Keys are sorted before shuffling so the result depends on the seed and the
    set of keys only, not on the order of rows in a file.
    """
    for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= frac <= 1.0:
            raise BuildError(f"{name} must be within [0, 1], got {frac}")
    order = sorted(set(keys))
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    rest = order[n_test:]
    n_val = round(len(rest) * val_fraction)
    split = {k: "test" for k in order[:n_test]}
    split.update({k: "val" for k in rest[:n_val]})
    split.update({k: "train" for k in rest[n_val:]})
    return split


def duplicate_groups(hashes: dict[str, str]) -> list[list[str]]:
    """Groups of ids whose content hash is the same (each group sorted, groups sorted)."""
    by_hash: dict[str, list[str]] = {}
    for key, h in hashes.items():
        by_hash.setdefault(h, []).append(key)
    return sorted(sorted(v) for v in by_hash.values() if len(v) > 1)


def counts(records: Iterable[Record]) -> dict:
    """Counts per kind, source, split, and (for scoring records) level."""
    by = {"kind": Counter(), "source": Counter(), "split": Counter(), "level": Counter()}
    total = 0
    for r in records:
        total += 1
        by["kind"][r.kind] += 1
        by["source"][r.source] += 1
        by["split"][r.split] += 1
        if "level" in r.meta:
            by["level"][f"{r.split}/{r.meta['level']}"] += 1
    return {"total": total, **{k: dict(sorted(v.items())) for k, v in by.items()}}


def write_output(out_dir: str | os.PathLike, records: list[Record], manifest: dict) -> Path:
    """Write records.jsonl, the HF datasets copy and manifest.json into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(records, out / "records.jsonl")
    _save_hf(records, out / "hf")
    manifest = {"builder_version": BUILDER_VERSION, **manifest, "counts": counts(records)}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "manifest.json")
    return out


def _save_hf(records: list[Record], path: Path) -> None:
    import datasets

    # meta varies between builders, so it travels as a JSON string column.
    rows = [{**r.to_dict(), "meta": json.dumps(r.meta, ensure_ascii=False)} for r in records]
    features = datasets.Features({
        "id": datasets.Value("string"), "kind": datasets.Value("string"),
        "images": datasets.Sequence(datasets.Value("string")),
        "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "source": datasets.Value("string"), "split": datasets.Value("string"), "meta": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_list(rows, features=features) if rows else datasets.Dataset.from_dict(
        {k: [] for k in features}, features=features)
    ds.save_to_disk(str(path))


def read_manifest(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise BuildError(f"{out_dir}: no manifest.json (is it a qsit build output?)")
    return json.loads(path.read_text(encoding="utf-8"))
