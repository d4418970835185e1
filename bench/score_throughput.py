"""Scoring throughput: ``Assessor.score`` (batched, one forward pass) vs the published Q-SiT loop.

The published script scores one image at a time with
``generate(max_new_tokens=1, output_logits=True)``; qsit pads a batch on the
left and runs one forward pass that computes logits at the last position only.
Both run here on the same model and the same images, each mode in its own
child process so that peak memory is measured per mode, and the scores are
compared.

    python bench/score_throughput.py                       # tiny random model on CPU
    python bench/score_throughput.py --model DIR --dtype bfloat16 --device cuda

Prints a Markdown table and writes JSON next to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict

import numpy as np

from qsit.tiny import REAL_SHAPES, TinyConfig

# "tiny" is the test checkpoint (~1M parameters; image preprocessing dominates);
# "small" (~8M) gives the model a share of the time closer to real checkpoints;
# "0.5b" and "7b" are random models of the published checkpoints' shapes (qsit.tiny.REAL_SHAPES).
SIZES = {
    "tiny": TinyConfig(),
    "small": TinyConfig(image_size=64, vision_hidden=128, vision_layers=4, text_hidden=256, text_layers=4,
                        text_heads=4, text_kv_heads=2),
    **REAL_SHAPES,
}


def bench_images(n: int, seed: int = 0):
    """Crops of the two real photographs that scikit-learn ships, at varied sizes and aspect ratios."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = photos[i % 2]
        w = int(rng.integers(200, src.width))
        h = int(rng.integers(150, src.height))
        x, y = int(rng.integers(0, src.width - w + 1)), int(rng.integers(0, src.height - h + 1))
        out.append(src.crop((x, y, x + w, y + h)))
    return out


def _run_mode(mode, model, preset, device, dtype, n_images, batch_size, threads, repeats, queue):
    import torch

    from qsit.assessor import Assessor
    from qsit.cli import quiet_libraries
    from qsit.levels import level_probabilities
    from qsit.reference import reference_level_logits

    quiet_libraries()
    torch.set_num_threads(threads)
    a = Assessor.from_pretrained(model, device=device, dtype=dtype, preset=preset)
    images = [a.load(im) for im in bench_images(n_images)]
    cuda = a.device.type == "cuda"

    def run():
        """Level probabilities per image, through the reference loop or the public ``score``."""
        if mode == "reference":
            return level_probabilities(np.stack([reference_level_logits(a, im) for im in images]))
        return np.array([list(r.probabilities.values()) for r in a.score(images, batch_size=batch_size)])

    run()  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        probs = run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    peak = (torch.cuda.max_memory_allocated() / 2**20) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"mode": mode, "seconds": seconds, "images_per_s": len(images) / seconds,
               "peak_mib": peak, "repeat_seconds": times, "peak_kind": "cuda max allocated" if cuda else "process max RSS",
               "probs": probs.tolist()})


def measure(mode, args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_run_mode, args=(mode, args.model, args.preset, args.device, args.dtype,
                                            args.images, args.batch_size, args.threads, args.repeats, queue))
    p.start()
    result = queue.get()
    p.join()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: build a random one of --size)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="random model to build when no --model is given")
    parser.add_argument("--preset", default="qsit-official", help="prompt preset (default: the published script's)")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode; the median is reported")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default="bench/results/score_throughput.json")
    args = parser.parse_args(argv)
    from qsit.cli import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from qsit.tiny import build_tiny_checkpoint

            # Drawn where it will run, and saved in the dtype it runs in: a 7B model in float32 on a
            # CPU takes minutes to draw and 30 GB to save.
            args.model = build_tiny_checkpoint(os.path.join(tmp, args.size), SIZES[args.size],
                                               device=args.device, dtype=args.dtype)
            model_name = f"random {args.size} LLaVA-OneVision ({asdict(SIZES[args.size])})"
        else:
            model_name = args.model
        ref = measure("reference", args)
        ours = measure("batched", args)

    p_ref, p_ours = np.array(ref["probs"]), np.array(ours["probs"])
    diff = float(np.abs(p_ref - p_ours).max())
    levels = np.arange(1, p_ref.shape[1] + 1)
    score_diff = float(np.abs(p_ref @ levels - p_ours @ levels).max())
    summary = {
        "model": model_name, "preset": args.preset, "images": args.images, "batch_size": args.batch_size, "repeats": args.repeats,
        "device": args.device or "auto", "dtype": args.dtype or "auto", "threads": args.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {sys.version.split()[0]}",
        "reference": {k: v for k, v in ref.items() if k != "probs"},
        "batched": {k: v for k, v in ours.items() if k != "probs"},
        "speedup": ours["images_per_s"] / ref["images_per_s"],
        "max_abs_probability_diff": diff, "max_abs_score_diff": score_diff,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"model: {model_name} · {args.images} images · batch {args.batch_size} · {summary['machine']}")
    print("| mode | images/s | peak memory (MiB) |\n|---|---|---|")
    for name, r in (("published loop (generate, 1 image)", ref), (f"qsit Assessor.score (batch {args.batch_size})", ours)):
        print(f"| {name} | {r['images_per_s']:.3g} | {r['peak_mib']:.0f} ({r['peak_kind']}) |")
    print(f"speed-up ×{summary['speedup']:.2f}; max |Δ score| = {score_diff:.2e}, max |Δ probability| = {diff:.2e}")


if __name__ == "__main__":
    main()
