"""Training throughput and padding: (a) every batch padded to the model maximum, as is common,
(b) dynamic padding to the longest record in the batch, (c) dynamic padding with length grouping.

Same records, same model, same number of optimizer steps in each mode; reports
real (non-padding) tokens per second and the padding fraction.

    python bench/train_padding.py [--corpus data/synthetic] [--batches 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path


def main(argv=None):
    import torch
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    from qsit.mixture import length_grouped_batches, padding_fraction
    from qsit.tiny import TinyConfig, build_tiny_checkpoint
    from qsit.tokenization import Collator, encode
    from qsit.train_config import load_config
    from qsit.train_data import load_sources

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/synthetic", help="an offline corpus (qsit build synthetic)")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pad-to", type=int, default=1024, help="the 'model maximum' of mode (a)")
    parser.add_argument("--out", default="bench/results/train_padding.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg_path = Path(__file__).resolve().parent.parent / "qsit" / "configs" / "train" / "tiny-cpu.yaml"
    corpus = Path(args.corpus)
    cfg = load_config(cfg_path, [f"data.sources=[{{path: {corpus / 'd1'}}}, {{path: {corpus / 'd2'}}}]"])
    pairs = [(r, p) for r, p in load_sources(cfg) if r.split == "train"]
    random.Random(0).shuffle(pairs)
    n = args.batches * args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_tiny_checkpoint(Path(tmp) / "m", TinyConfig(**cfg.tiny_size))
        proc = AutoProcessor.from_pretrained(ckpt)
        examples = [encode(proc, r, p) for r, p in pairs[:n]]
        lengths = [len(e) for e in examples]
        plain = [list(range(i, i + args.batch_size)) for i in range(0, n, args.batch_size)]
        grouped = length_grouped_batches(lengths, args.batch_size, seed=0)
        modes = {"(a) pad to model maximum": (plain, args.pad_to), "(b) dynamic padding": (plain, None),
                 "(c) dynamic + length grouping": (grouped, None)}
        rows = {}
        for name, (batches, pad_to) in modes.items():
            model = LlavaOnevisionForConditionalGeneration.from_pretrained(ckpt)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            collate = Collator(proc.tokenizer.pad_token_id, pad_to=pad_to)
            model.train()
            t0 = time.perf_counter()
            for b in batches:
                loss = model(**collate([examples[i] for i in b])).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
            seconds = time.perf_counter() - t0
            rows[name] = {"seconds": seconds, "real_tokens_per_s": sum(lengths) / seconds,
                          "padding_fraction": padding_fraction(lengths, batches, pad_to)}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    Path(args.out).write_text(json.dumps({"records": n, "batch_size": args.batch_size, "pad_to": args.pad_to,
                                          "mean_length": sum(lengths) / n, "modes": rows}, indent=2))
    print(f"{n} records (mean length {sum(lengths) / n:.0f} tokens), batch {args.batch_size}, tiny-cpu model sizes")
    print("| batching | real tokens/s | padding | time |\n|---|---|---|---|")
    base = rows["(a) pad to model maximum"]["real_tokens_per_s"]
    for name, r in rows.items():
        print(f"| {name} | {r['real_tokens_per_s']:.0f} (×{r['real_tokens_per_s'] / base:.1f}) | "
              f"{100 * r['padding_fraction']:.1f}% | {r['seconds']:.1f} s |")


if __name__ == "__main__":
    main()
