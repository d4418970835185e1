"""Render what a checkpoint's vision tower receives for one image: the base tile and every anyres tile.

    python scripts/show_tower_input.py IMAGE --model CHECKPOINT --out tower_input.png

The tensors are the processor's own ``pixel_values`` (de-normalised for display), so the
picture shows exactly what the tower sees — if a blur or noise is invisible here, no training
can find it. The title gives the tile size, the patch grid, the anyres grid and how many image
tokens reach the language model after ``anyres_max_N`` pooling.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def tower_input(model_dir: str, image_path: str) -> tuple[list, dict]:
    import numpy as np
    from transformers import AutoConfig, AutoProcessor

    from qsit.images import load_image

    processor = AutoProcessor.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    image = load_image(image_path).image
    enc = processor(images=[image], text=[processor.image_token], return_tensors="pt")
    ip = processor.image_processor
    mean = np.asarray(ip.image_mean)[:, None, None]
    std = np.asarray(ip.image_std)[:, None, None]
    tiles = [np.clip((t.numpy() * std + mean).transpose(1, 2, 0), 0, 1) for t in enc["pixel_values"][0]]
    tile = ip.size["height"]
    patch = config.vision_config.patch_size
    grid_h, grid_w = (int(v) for v in enc["image_sizes"][0])
    info = {"image": f"{image.width}×{image.height}", "tile": tile, "patch": patch,
            "tokens_per_tile": (tile // patch) ** 2, "tiles": len(tiles) - 1,
            "image_tokens": int((enc["input_ids"] == config.image_token_id).sum()),
            "aspect": config.vision_aspect_ratio, "image_sizes": f"{grid_w}×{grid_h}"}
    return tiles, info


def render(tiles: list, info: dict, out: Path, source_image: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n = len(tiles) - 1
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(3 + 1.6 * cols, max(3.2, 1.6 * rows + 0.8)))
    gs = fig.add_gridspec(rows, cols + 2)
    ax = fig.add_subplot(gs[:, :2])
    ax.imshow(Image.open(source_image).convert("RGB"))
    ax.set_title(f"input {info['image']}; base tile →", fontsize=8)
    ax.axis("off")
    inset = ax.inset_axes([0.0, -0.55, 0.5, 0.5])
    inset.imshow(tiles[0], interpolation="nearest")
    inset.set_title(f"base tile {info['tile']} px", fontsize=7)
    inset.axis("off")
    for i, t in enumerate(tiles[1:]):
        a = fig.add_subplot(gs[i // cols, 2 + i % cols])
        a.imshow(t, interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"what the vision tower sees: {info['tiles']} anyres tiles of {info['tile']} px "
                 f"({info['tokens_per_tile']} patches of {info['patch']} px each), {info['aspect']} → "
                 f"{info['image_tokens']} image tokens", fontsize=9)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("--model", required=True)
    p.add_argument("--out", default="tower_input.png")
    args = p.parse_args(argv)
    tiles, info = tower_input(args.model, args.image)
    render(tiles, info, Path(args.out), args.image)
    print(info)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
