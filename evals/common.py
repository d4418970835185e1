"""What every eval shares: a per-sample cache (so an interrupted run resumes) and result files."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class SampleCache:
    """Append-only JSONL of finished samples, keyed; a rerun with the same folder skips them.

    Each line is written and flushed as soon as the sample is done, so a crash
    or Ctrl-C loses at most the sample in flight. A torn last line (from a
    kill mid-write) is ignored on reading.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._items: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and "key" in row:
                    self._items[row["key"]] = row["value"]

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str):
        return self._items.get(key)

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._items[key] = value
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
                f.flush()


def write_results(out_dir: str | os.PathLike, name: str, results: dict, markdown: str, samples: list[dict]) -> Path:
    """``{name}.json`` (results), ``{name}.md`` (tables) and ``{name}_samples.jsonl`` (per sample)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
    with open(out / f"{name}_samples.jsonl", "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    return out


def default_image_root(list_path: str | Path) -> Path:
    """Where a test list's relative image paths start: the list's folder, or, for a list in the
    ``tests/`` folder of a ``qsit build synthetic`` corpus, the corpus itself."""
    folder = Path(list_path).parent
    if folder.name == "tests" and (folder.parent / "manifest.json").is_file():
        return folder.parent
    return folder


def resolve_image(root: Path, img_path: str) -> Path:
    p = Path(img_path)
    return p if p.is_absolute() else root / p
