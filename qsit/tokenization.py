"""Records → model inputs with the checkpoint's own processor; loss on assistant tokens only.

The first user turn is run through the processor with its image(s), which
expands each ``<image>`` into as many image tokens as LLaVA-OneVision's anyres
features need; every other segment goes through the tokenizer. Segments come
from ``qsit.conversation.segments``, the same rendering inference uses. A
record is never truncated: one longer than ``max_length`` is dropped (and
counted) by the dataset, because cutting inside image tokens breaks the match
between image tokens and image features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qsit.conversation import segments
from qsit.images import load_image
from qsit.records import IMAGE_MARKER, Record

IGNORE_INDEX = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None
    """(n_images, n_patches, 3, H, W)."""
    image_sizes: torch.Tensor | None
    kind: str

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(processor, record: Record, image_paths: list[Path]) -> Example:
    """One record as input ids, labels (-100 outside assistant turns) and pixel values."""
    tok = processor.tokenizer
    images = [load_image(p).image for p in image_paths]
    ids: list[int] = []
    labels: list[int] = []
    pixel_values, image_sizes, used = [], [], 0
    for text, is_target in segments(processor, list(record.messages)):
        n = text.count(processor.image_token) if not is_target else 0
        if n:
            enc = processor(images=images[used:used + n], text=[text], return_tensors="pt")
            piece = enc["input_ids"][0].tolist()
            pixel_values.append(enc["pixel_values"])
            image_sizes.append(enc["image_sizes"])
            used += n
        else:
            piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if is_target else [IGNORE_INDEX] * len(piece)
    if used != len(images):
        raise ValueError(f"record {record.id}: {len(images)} image(s) but {used} image marker(s) rendered")
    pv = _pad_patches(pixel_values) if pixel_values else None
    sizes = torch.cat(image_sizes) if image_sizes else None
    return Example(ids, labels, pv, sizes, record.kind)


def estimate_length(processor, record: Record, image_sizes_hw: list[tuple[int, int]]) -> int:
    """Token count without preprocessing pixels: text tokens plus each image's feature count."""
    text = "".join(t for t, _ in segments(processor, list(record.messages)))
    n_text = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    if not image_sizes_hw:
        return n_text
    per_image = processor._get_num_multimodal_tokens(image_sizes=image_sizes_hw)["num_image_tokens"]
    return n_text - len(image_sizes_hw) + sum(per_image)


def image_size_hw(path: Path) -> tuple[int, int]:
    """(height, width) as the model will see it (EXIF rotation applied), from the header only."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated a quarter turn
            w, h = h, w
    return h, w


def _pad_patches(chunks: list[torch.Tensor]) -> torch.Tensor:
    most = max(c.shape[1] for c in chunks)
    padded = [torch.nn.functional.pad(c, (0, 0, 0, 0, 0, 0, 0, most - c.shape[1])) for c in chunks]
    return torch.cat(padded)


class Collator:
    """Dynamic padding to the longest example in the batch (right side), pixel patches padded too."""

    def __init__(self, pad_token_id: int, pad_to: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to  # only for measuring the cost of padding to a fixed length

    def __call__(self, batch: list[Example]) -> dict:
        width = self.pad_to or max(len(e) for e in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):
            ids[i, : len(e)] = torch.tensor(e.input_ids)
            labels[i, : len(e)] = torch.tensor(e.labels)
            mask[i, : len(e)] = 1
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        with_images = [e for e in batch if e.pixel_values is not None]
        if with_images:
            out["pixel_values"] = _pad_patches([e.pixel_values for e in with_images])
            out["image_sizes"] = torch.cat([e.image_sizes for e in with_images])
            out["batch_num_images"] = torch.tensor([0 if e.pixel_values is None else e.pixel_values.shape[0]
                                                    for e in batch])
        return out


def count_image_markers(record: Record) -> int:
    return sum(m["content"].count(IMAGE_MARKER) for m in record.messages)
