"""Training at real size: the recipe's own step (``TrainRecipe.train_step``) on a random model of a
published checkpoint's shape, since the weights cannot be downloaded here.

The model is drawn on the device, the shipped config (mini-0.5b or primary-7b) is loaded with this
run's records and without DeepSpeed (one process), and the recipe sets itself up as ``qsit train``
does: float32 master weights, bf16 autocast, activation checkpointing, AdamW, LoRA when asked.
Records are scoring and description conversations on crops of two real photographs at their own
size (up to 640×427), so each image becomes the anyres token count real data gives.

    python bench/train_real_size.py --size 0.5b --config qsit/configs/train/mini-0.5b.yaml
    python bench/train_real_size.py --size 7b --config qsit/configs/train/primary-7b.yaml --lora

Prints a Markdown row and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from score_throughput import SIZES, bench_images

# A description of the length Q-Instruct's answers have (about 60 words), for the interpreting records.
DESCRIPTION = (
    "The image is slightly blurry, with soft edges on the main subject and some loss of fine texture in "
    "the background. The exposure is balanced, colours look natural and there is no visible noise, but "
    "the lack of sharpness reduces the visibility of details such as the leaves and the roof tiles. "
    "Overall, the quality of the image is fair."
)


def write_corpus(folder: Path, n: int, preset: str) -> None:
    """``n`` scoring and ``n`` interpreting training records (and two of each for validation)."""
    from qsit.levels import LEVELS
    from qsit.prompts import get_preset
    from qsit.records import INTERPRETING, SCORING, Record, write_jsonl

    p = get_preset(preset)
    prompt = p.scoring_prompt(p.tasks[0])
    images = folder / "images"
    images.mkdir(parents=True)
    records = []
    for i, im in enumerate(bench_images(n + 2, seed=1)):
        name = f"images/{i:04d}.png"
        im.save(folder / name)
        split = "val" if i >= n else "train"
        level = i % len(LEVELS)
        records.append(Record(f"{name}/score", SCORING, [name], [
            {"role": "user", "content": f"<image>\n{prompt.question}"},
            {"role": "assistant", "content": prompt.answer(level)}], "bench", split, {"level": LEVELS[level]}))
        records.append(Record(f"{name}/describe", INTERPRETING, [name], [
            {"role": "user", "content": f"<image>\n{p.describe_question}"},
            {"role": "assistant", "content": DESCRIPTION}], "bench", split, {"task": "describe"}))
    write_jsonl(records, folder / "records.jsonl")


def count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def main(argv=None):
    import torch

    from qsit.recipe import TrainRecipe
    from qsit.tiny import build_tiny_checkpoint
    from qsit.train_config import LoraConfig, load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b",
                        help="tiny and small check the bench on a CPU; 0.5b and 7b are the published shapes")
    parser.add_argument("--config", default="qsit/configs/train/mini-0.5b.yaml")
    parser.add_argument("--model", help="a checkpoint to train instead of a random one of --size")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters on the language model (qsit's defaults)")
    parser.add_argument("--batch-size", type=int, help="default: the config's")
    parser.add_argument("--steps", type=int, default=8, help="timed steps, after two warm-up steps")
    parser.add_argument("--out", default="bench/results/train_real_size.json")
    args = parser.parse_args(argv)
    from qsit.cli import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        t0 = time.perf_counter()
        model = args.model or build_tiny_checkpoint(tmp / "model", SIZES[args.size], device=device,
                                                    dtype="bfloat16" if device == "cuda" else None)
        drawn_s = time.perf_counter() - t0
        overrides = [f"model={model}", f"output_dir={tmp / 'run'}", f"data.sources=[{{path: {tmp / 'corpus'}}}]",
                     "deepspeed=null", "mix.ratios={scoring: 1.0, interpreting: 1.0}"]
        cfg = load_config(args.config, overrides)
        if args.batch_size:
            cfg.train.batch_size = args.batch_size
        cfg.train.grad_accum = 1
        if args.lora:
            cfg.lora = LoraConfig()
        n = (args.steps + 2) * cfg.train.batch_size
        write_corpus(tmp / "corpus", n, cfg.preset)

        recipe = TrainRecipe(cfg, progress=False)
        t0 = time.perf_counter()
        recipe.setup()
        setup_s = time.perf_counter() - t0
        batches, _ = recipe.data.epoch_batches(0, recipe.state["sizes"])
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for b in range(2):  # warm-up: kernels chosen, allocator grown
            recipe.train_step(batches[b], 0, b, boundary=True)
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        tokens, losses, t0 = 0, [], time.perf_counter()
        steps = min(args.steps, len(batches) - 2)
        for b in range(2, 2 + steps):
            loss, n_tokens = recipe.train_step(batches[b], 0, b, boundary=True)
            tokens += n_tokens
            losses.append(loss)
        sync()
        seconds = time.perf_counter() - t0
        trainable = sum(p.numel() for p in recipe.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in recipe.model.parameters())
        summary = {
            "size": args.size, "model": args.model or f"random {args.size} shape",
            "config": args.config, "lora": args.lora, "batch_size": cfg.train.batch_size,
            "precision": cfg.train.precision, "gradient_checkpointing": cfg.train.gradient_checkpointing,
            "parameters": total, "trainable": trainable, "steps": steps,
            "seconds_per_step": seconds / steps, "real_tokens_per_s": tokens / seconds,
            "tokens_per_record": tokens / (steps * cfg.train.batch_size),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
            "model_drawn_s": drawn_s, "setup_s": setup_s, "losses": losses,
            "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "python": sys.version.split()[0],
        }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    peak = f"{summary['peak_gib']:.1f}" if summary["peak_gib"] is not None else "–"
    print("| size | training | batch | params (trainable) | s/step | real tokens/s | tokens/record | peak GiB |\n"
          "|---|---|---|---|---|---|---|---|")
    print(f"| {args.size} | {'LoRA' if args.lora else 'full'} | {summary['batch_size']} | {count(total)} "
          f"({count(trainable)}) | {summary['seconds_per_step']:.2f} | {summary['real_tokens_per_s']:,.0f} | "
          f"{summary['tokens_per_record']:.0f} | {peak} |")


if __name__ == "__main__":
    main()
