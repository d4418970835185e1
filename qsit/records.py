"""The one record schema every builder emits and the training recipe reads.

A record is one conversation about zero or more images::

    {"id": "koniq10k/10004473376.jpg", "kind": "scoring",
     "images": ["koniq10k/1024x768/10004473376.jpg"],
     "messages": [{"role": "user", "content": "<image>\\nAssume you are ..."},
                  {"role": "assistant", "content": "The quality of the image is good."}],
     "source": "koniq10k", "split": "train", "meta": {"mos": 77.38}}

``kind`` is scoring | interpreting | general (Q-SiT's D1 | D2 | D3). Each
``<image>`` marker in the messages stands for the next entry of ``images``.
Records convert to and from the LLaVA-NeXT JSON format ("conversations" with
from human/gpt) that the official Q-SiT training used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SCORING, INTERPRETING, GENERAL = "scoring", "interpreting", "general"
KINDS = (SCORING, INTERPRETING, GENERAL)
"""The three kinds of training record: D1 scoring, D2 interpreting (quality Q&A and descriptions), D3 general."""
SPLITS = ("train", "val", "test")
ROLES = ("user", "assistant")
IMAGE_MARKER = "<image>"
_FIELDS = ("id", "kind", "images", "messages", "source", "split", "meta")


class RecordError(ValueError):
    """A record breaks the schema; the message says where and how."""


@dataclass(frozen=True)
class Record:
    id: str
    kind: str
    images: tuple[str, ...]
    messages: tuple[dict, ...]
    source: str
    split: str = "train"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))
        problem = schema_problem(self)
        if problem:
            raise RecordError(f"record {self.id!r}: {problem}")

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "images": list(self.images),
                "messages": [dict(m) for m in self.messages], "source": self.source,
                "split": self.split, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> Record:
        at = f"{where}: " if where else ""
        if not isinstance(d, dict):
            raise RecordError(f"{at}expected a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_FIELDS))
        missing = [k for k in ("id", "kind", "messages", "source") if k not in d]
        if unknown or missing:
            raise RecordError(f"{at}unknown fields {unknown}, missing fields {missing}")
        try:
            return cls(id=d["id"], kind=d["kind"], images=d.get("images", []), messages=d["messages"],
                       source=d["source"], split=d.get("split", "train"), meta=d.get("meta", {}))
        except RecordError as e:
            raise RecordError(f"{at}{e}") from None
        except (TypeError, ValueError) as e:
            raise RecordError(f"{at}malformed record ({e})") from None


def schema_problem(r: Record) -> str | None:
    """What is wrong with a record, or None."""
    if not isinstance(r.id, str) or not r.id:
        return "id must be a non-empty string"
    if r.kind not in KINDS:
        return f"kind {r.kind!r} is not one of {', '.join(KINDS)}"
    if r.split not in SPLITS:
        return f"split {r.split!r} is not one of {', '.join(SPLITS)}"
    if not isinstance(r.meta, dict):
        return "meta must be an object"
    if not r.messages:
        return "has no messages"
    for i, m in enumerate(r.messages):
        if set(m) != {"role", "content"}:
            return f"message {i} needs exactly 'role' and 'content', got {sorted(m)}"
        if m["role"] != ROLES[i % 2]:
            return f"message {i} should be from {ROLES[i % 2]!r} (turns alternate, user first), got {m['role']!r}"
        if not isinstance(m["content"], str) or not m["content"].strip():
            return f"message {i} has empty content"
    if r.messages[-1]["role"] != "assistant":
        return "last message must be the assistant's answer"
    markers = sum(m["content"].count(IMAGE_MARKER) for m in r.messages)
    if markers != len(r.images):
        return f"{markers} {IMAGE_MARKER} marker(s) but {len(r.images)} image(s)"
    return None


def write_jsonl(records: Iterable[Record], path: str | os.PathLike) -> int:
    """Write records one per line (atomically: a crash leaves the old file or the new one)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def iter_jsonl(path: str | os.PathLike) -> Iterator[Record]:
    """Read records, naming file and line of the first bad one."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            yield Record.from_dict(d, where=f"{path}:{lineno}")


def to_llava(r: Record) -> dict:
    """The LLaVA-NeXT training format: ``image`` (one) or ``images``, and human/gpt ``conversations``."""
    out: dict = {"id": r.id}
    if len(r.images) == 1:
        out["image"] = r.images[0]
    elif r.images:
        out["images"] = list(r.images)
    out["conversations"] = [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
                            for m in r.messages]
    return out


def from_llava(d: dict, kind: str, source: str, split: str = "train", where: str = "") -> Record:
    """A LLaVA-NeXT item (as in Q-SiT's training JSON) as a record of the given kind."""
    at = f"{where}: " if where else ""
    try:
        turns = d["conversations"]
        images = d.get("images") or ([d["image"]] if d.get("image") else [])
        messages = [{"role": {"human": "user", "gpt": "assistant"}[t["from"]], "content": t["value"]}
                    for t in turns]
    except (KeyError, TypeError) as e:
        raise RecordError(f"{at}not a LLaVA conversation item (missing or bad {e})") from None
    return Record.from_dict({"id": str(d.get("id", "")), "kind": kind, "images": images,
                             "messages": messages, "source": source, "split": split, "meta": {}}, where=where)
