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

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from qsit.conversation import segments
from qsit.images import SCORING_FLIPS, grey_image, load_image
from qsit.records import IMAGE_MARKER, SCORING, Record

IGNORE_INDEX = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None
    """(n_images, n_patches, 3, H, W)."""
    image_sizes: torch.Tensor | None
    kind: str
    soft_levels: tuple[int, list[float]] | None = None
    """(position of the level word in ``input_ids``, its target over the level tokens) for soft level labels."""

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(processor, record: Record, image_paths: list[Path], level_ids: list[int] | None = None,
           transpose: Image.Transpose | None = None, grey: bool = False) -> Example:
    """One record as input ids, labels (-100 outside assistant turns) and pixel values; with
    ``level_ids`` (the level words' tokens, bad … excellent), a scoring record's soft level target;
    with ``transpose``, every image of the record seen flipped that way; with ``grey``, in grey."""
    tok = processor.tokenizer
    images = [load_image(p).image for p in image_paths]
    if transpose is not None:
        images = [im.transpose(transpose) for im in images]
    if grey:
        images = [grey_image(im) for im in images]
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
    soft = soft_level_label(record, labels, level_ids) if level_ids is not None else None
    return Example(ids, labels, pv, sizes, record.kind, soft)


def drawn_flip(seed: int, epoch: int, batch: int, index: int) -> Image.Transpose | None:
    """The view (one of ``SCORING_FLIPS``) of the ``index``-th record of an epoch's ``batch``-th batch:
    a function of its place, so a resumed run draws what the interrupted one would have."""
    return random.Random(f"{seed}/{epoch}/{batch}/{index}").choice(SCORING_FLIPS)


def drawn_grey(seed: int, epoch: int, batch: int, index: int, fraction: float) -> bool:
    """Whether that record is seen in grey (with probability ``fraction``), also by its place."""
    return fraction > 0 and random.Random(f"{seed}/{epoch}/{batch}/{index}/grey").random() < fraction


def soft_level_label(record: Record, labels: list[int], level_ids: list[int]) -> tuple[int, list[float]] | None:
    """Where a scoring record's answer says its level, and the soft target for that token (None for
    other records and for scoring records without a score)."""
    from qsit.levels import soft_level_target

    if record.kind != SCORING or "mos" not in record.meta:
        return None
    if "level_range" not in record.meta:
        raise ValueError(f"record {record.id}: soft level labels need the range its score was levelled with "
                         "(meta.level_range, or a D1 build's manifest.json beside its records)")
    wanted = set(level_ids)
    position = next((i for i, t in enumerate(labels) if t in wanted), None)
    if position is None:
        raise ValueError(f"record {record.id}: its answer has no level word among the scoring prompt's levels")
    return position, soft_level_target(float(record.meta["mos"]), *record.meta["level_range"]).tolist()


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
        soft = [(i, *e.soft_levels) for i, e in enumerate(batch) if e.soft_levels is not None]
        if soft:
            out["soft_index"] = torch.tensor([[i, pos] for i, pos, _ in soft])
            out["soft_targets"] = torch.tensor([t for _, _, t in soft], dtype=torch.float32)
        with_images = [e for e in batch if e.pixel_values is not None]
        if with_images:
            out["pixel_values"] = _pad_patches([e.pixel_values for e in with_images])
            out["image_sizes"] = torch.cat([e.image_sizes for e in with_images])
            out["batch_num_images"] = torch.tensor([0 if e.pixel_values is None else e.pixel_values.shape[0]
                                                    for e in batch])
        return out


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, level_ids: list[int] | None = None,
                   soft_index: torch.Tensor | None = None, soft_targets: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the labelled tokens, and their count. At ``soft_index``
    ((batch, position) of level words) the target is ``soft_targets`` over ``level_ids`` instead of
    the word itself; a one-hot target gives the ordinary loss."""
    import torch.nn.functional as F

    soft_sum, n_soft = logits.new_zeros((), dtype=torch.float32), 0
    if soft_index is not None and len(soft_index):
        rows, positions = soft_index[:, 0], soft_index[:, 1]
        logp = F.log_softmax(logits[rows, positions - 1].float(), dim=-1)[:, level_ids]
        soft_sum = -(soft_targets * logp).sum()
        labels = labels.clone()
        labels[rows, positions] = IGNORE_INDEX
        n_soft = len(rows)
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    hard = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]).float(), shift_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return hard + soft_sum, int((shift_labels != IGNORE_INDEX).sum()) + n_soft


def count_image_markers(record: Record) -> int:
    return sum(m["content"].count(IMAGE_MARKER) for m in record.messages)
