"""D3 — general instructions (LLaVA-Instruct-150K) to keep the model's semantics.

A source item becomes one record::

    llava_instruct_150k.json, item 0:
      {"id": "000000033471", "image": "000000033471.jpg",
       "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus in the image?"},
                         {"from": "gpt", "value": "The bus in the image is white and red."}, ...]}
    →
    {"id": "llava_instruct/000000033471", "kind": "general", "images": ["coco/000000033471.jpg"],
     "messages": [{"role": "user", "content": "<image>\\nWhat are the colors ..."}, ...],
     "source": "llava_instruct", "split": "train", "meta": {}}

COCO images are looked up under ``image_root``; a missing image is reported
with its item number, never fatal.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from data_builders.common import BuildError, Problems
from qsit.records import GENERAL, Record, RecordError, from_llava


@dataclass
class D3Result:
    records: list[Record]
    problems: Problems
    manifest: dict


def sample_indices(n: int, fraction: float | None, count: int | None, seed: int) -> list[int]:
    """A seeded sample of ``range(n)`` by fraction or count (all when neither), in source order."""
    if fraction is not None and count is not None:
        raise BuildError("give a fraction or a count, not both")
    if fraction is not None and not 0 < fraction <= 1:
        raise BuildError(f"fraction must be in (0, 1], got {fraction}")
    if count is not None and count < 1:
        raise BuildError(f"count must be positive, got {count}")
    k = n if fraction is None and count is None else (round(n * fraction) if fraction is not None else count)
    if k > n:
        raise BuildError(f"asked for {k} items but the source has {n}")
    return sorted(random.Random(seed).sample(range(n), k))


def build_d3(path: Path, image_root: Path, *, source: str = "llava_instruct", image_prefix: str = "coco",
             fraction: float | None = None, count: int | None = None, seed: int = 0,
             check_images: bool = True) -> D3Result:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BuildError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(items, list):
        raise BuildError(f"{path}: expected a JSON list of conversation items")
    problems = Problems()
    records = []
    chosen = sample_indices(len(items), fraction, count, seed)
    for i in chosen:
        where = f"{path}:item {i}"
        item = items[i]
        if not isinstance(item, dict):
            problems.add(where, "not an object")
            continue
        image = item.get("image")
        if check_images and image and not (image_root / image).is_file():
            problems.add(where, f"image not found: {image_root / image}")
            continue
        item = {**item, "id": f"{source}/{item.get('id', i)}"}
        if image:
            item["image"] = f"{image_prefix}/{image}"
        try:
            records.append(from_llava(item, kind=GENERAL, source=source, where=where))
        except RecordError as e:
            problems.add(where, str(e).removeprefix(f"{where}: "))
    manifest = {"builder": "d3", "source": source, "seed": seed, "input": str(path),
                "image_root": str(image_root.resolve()), "image_prefix": image_prefix,
                "sampled": len(chosen), "of": len(items), "problems": problems.items}
    return D3Result(records=records, problems=problems, manifest=manifest)
