"""LLVisionQA answered by the perception stage's own heads, without a language model.

    python scripts/probe_tower_answers.py --model STAGE1/final --corpus data/qsit-tiny-corpus --out DIR

The perception stage leaves small heads on the tower (distortion, severity, pseudo-MOS per tile,
``perception_heads.pt`` beside its checkpoint). Here they answer a corpus's LLVisionQA questions
from the anyres tiles of each image (the base tile is the whole image shrunk, not native pixels):

- "Is there X in the image?": yes when X is about as likely as the tiles' likeliest damage and the
  tiles do not find the image clean;
- "What is the most obvious distortion?": the listed option the tiles find likeliest — and, beside
  it, the tiles' likeliest distortion of all, as a model that does not read the list would answer;
- "Which part of the image is affected?": the half whose tiles look more damaged than the other
  half, or the whole image when no half stands out;
- "How is the overall quality / how severe is X?": the level of the tiles' mean pseudo-MOS (the
  corpus's severity words follow the level), the nearest listed option.

What the heads get right is what a linear layer reads of each question from the tower's features —
the evidence a language model on the same tower has to answer from, set against the list it is
given. Writes ``answers.json`` (right / asked, by kind, for each question set given).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from data_builders.d2 import SEVERITY_WORDS
from qsit.levels import LEVELS, level_thresholds

YES_AT = 0.5
""""Yes" when the asked damage is at least this fraction as likely as the likeliest damage …"""
CLEAN_AT = 0.9
"""… and the tiles' 'none' is below this (both rules chosen on the dev set's questions)."""
PART_MARGIN = 0.15
"""How much more damaged (share of tiles' damage probability) a half must look than the other half."""
HALVES = {"top part": (0, 0), "bottom part": (0, 1), "left part": (1, 0), "right part": (1, 1)}
"""part -> (axis of the tile grid, which half)."""


def question_kind(question: dict) -> str:
    """'yes-no', 'what', 'where' or 'how' (LLVisionQA's types, with 'where' split from 'what')."""
    if question["question"].startswith("Which part"):
        return "where"
    return ("yes-no", "what", "how")[question["type"]]


def damage_probabilities(tile_probs: np.ndarray) -> np.ndarray:
    """The image's distortion probabilities (the last class is 'none'): the mean over its tiles."""
    return tile_probs.mean(0)


def is_present(probs: np.ndarray, index: int, yes_at: float = YES_AT, clean_at: float = CLEAN_AT) -> bool:
    damage = probs[:-1]
    return bool(damage[index] >= yes_at * damage.max() and probs[-1] < clean_at)


def likeliest_listed(probs: np.ndarray, options: list[str], index_of: dict[str, int]) -> str | None:
    known = [o for o in options if o in index_of]
    return max(known, key=lambda o: probs[index_of[o]]) if known else None


def likeliest_of_all(probs: np.ndarray, index_of: dict[str, int]) -> str:
    return max(index_of, key=lambda name: probs[index_of[name]])


def damaged_part(tile_probs: np.ndarray, grid: tuple[int, int], options: list[str],
                 margin: float = PART_MARGIN) -> str:
    """The listed half of the image whose tiles look more damaged than the opposite half."""
    rows, cols = grid
    damage = (1 - tile_probs[:, -1]).reshape(rows, cols)
    contrast = {}
    for part, (axis, half) in HALVES.items():
        n = damage.shape[axis]
        k = max(n // 2, 1)
        first, last = np.take(damage, range(k), axis).mean(), np.take(damage, range(n - k, n), axis).mean()
        contrast[part] = (first - last) if half == 0 else (last - first)
    listed = [o for o in options if o in contrast]
    best = max(listed, key=contrast.get) if listed else None
    if best is not None and (contrast[best] > margin or "whole image" not in options):
        return best
    return "whole image"


def level_index(mos: float) -> int:
    """0 (bad) .. 4 (excellent) of a pseudo-MOS on the corpus's 0..100 (eq. 1)."""
    return int(np.searchsorted(level_thresholds(0.0, 100.0), mos, side="left"))


def nearest_option(options: list[str], scale: tuple[str, ...], index: int) -> str | None:
    known = [o for o in options if o.lower() in scale]
    return min(known, key=lambda o: abs(scale.index(o.lower()) - index)) if known else None


def answer(question: dict, tile_probs: np.ndarray, tile_mos: np.ndarray, grid: tuple[int, int],
           index_of: dict[str, int]) -> str | None:
    """The heads' answer to one LLVisionQA question, from its image's tiles; None where they cannot say."""
    kind, options = question_kind(question), question["candidates"]
    probs = damage_probabilities(tile_probs)
    if kind == "yes-no":
        name = question["question"].removeprefix("Is there ").removesuffix(" in the image?")
        if name not in index_of:
            return None
        return "Yes" if is_present(probs, index_of[name]) else "No"
    if kind == "what":
        return likeliest_listed(probs, options, index_of)
    if kind == "where":
        return damaged_part(tile_probs, grid, options)
    level = level_index(float(tile_mos.mean()))
    if question["question"].startswith("How severe"):
        return nearest_option(options, SEVERITY_WORDS, len(LEVELS) - 1 - level)
    return nearest_option(options, tuple(LEVELS), level)


def tally(questions: list[dict], answers: list[str | None], free: list[str | None]) -> dict:
    """Right / asked by kind, and the 'what' answers had the list not been read."""
    right, asked = Counter(), Counter()
    free_right = 0
    for q, a, f in zip(questions, answers, free, strict=True):
        kind = question_kind(q)
        asked[kind] += 1
        right[kind] += a is not None and a.lower() == q["correct_ans"].lower()
        free_right += kind == "what" and f == q["correct_ans"]
    total = sum(right.values())
    return {"by_kind": {k: {"right": right[k], "asked": asked[k]} for k in asked},
            "what_without_the_list": free_right, "right": total, "asked": len(questions),
            "accuracy": total / len(questions) if questions else None}


class Heads:
    """A perception checkpoint's tower and heads, read tile by tile."""

    def __init__(self, checkpoint: Path):
        from data_builders.distortions import DISTORTIONS
        from qsit import Assessor
        from qsit.perception import HEADS_FILE, load_perception_heads

        if not (checkpoint / HEADS_FILE).is_file():
            raise SystemExit(f"{checkpoint}: no {HEADS_FILE} (give the perception stage's final checkpoint)")
        self.assessor = Assessor.from_pretrained(str(checkpoint))
        self.tower = self.assessor.model.model.vision_tower.eval()
        self.heads, names = load_perception_heads(checkpoint, self.tower.config.hidden_size)
        self.index_of = {DISTORTIONS[k].name: i for i, k in enumerate(names)}
        ip = self.assessor.processor.image_processor
        self.pinpoints, self.tile = ip.image_grid_pinpoints, ip.size["height"]

    def read(self, image_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """(tile distortion probabilities, tile pseudo-MOS, tile grid) of the anyres tiles."""
        import torch
        from transformers.image_processing_utils import select_best_resolution

        from qsit.perception import head_outputs, tower_tokens

        image = self.assessor.load(image_path).image
        enc = self.assessor.processor(images=[image], text=[self.assessor.processor.image_token],
                                      return_tensors="pt")
        with torch.no_grad():
            out = head_outputs(self.heads, tower_tokens(self.tower, enc["pixel_values"][0].float()))
        height, width = select_best_resolution((image.height, image.width), self.pinpoints)
        return (out["distortion"].softmax(-1)[1:].numpy(), out["mos"][1:].numpy(),
                (height // self.tile, width // self.tile))


def probe(heads: Heads, corpus: Path, questions: list[dict]) -> dict:
    from tqdm import tqdm

    answers, free = [], []
    for q in tqdm(questions, desc="questions", unit="q"):
        probs, mos, grid = heads.read(corpus / q["img_path"])
        answers.append(answer(q, probs, mos, grid, heads.index_of))
        free.append(likeliest_of_all(damage_probabilities(probs), heads.index_of))
    return tally(questions, answers, free)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the perception stage's final checkpoint")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", default=["dev", "tests"], help="folders of the corpus with llvisionqa.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    heads = Heads(args.model)
    results = {}
    for name in args.sets:
        questions = json.loads((args.corpus / name / "llvisionqa.json").read_text())
        results[name] = probe(heads, args.corpus, questions)
        by_kind = ", ".join(f"{k} {v['right']}/{v['asked']}" for k, v in results[name]["by_kind"].items())
        print(f"{name}: {results[name]['accuracy']:.1%} ({by_kind}; 'what' without the list "
              f"{results[name]['what_without_the_list']})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "answers.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
