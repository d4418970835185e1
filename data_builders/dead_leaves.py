"""Drawn pristine images with the statistics of natural ones (``qsit build dead-leaves``).

    qsit build dead-leaves --out data/photos/dead-leaves --count 40

The dead-leaves model (Matheron; Lee, Mumford & Huang 2001) stacks random shapes whose sizes follow
a power law, so the image is scale-invariant and full of occluding edges, as photographs are.
Achddou et al. (2021, "Synthetic images as a regularity prior for image restoration neural
networks") trained denoisers on such images nearly as well as on photos. Here each leaf also gets a
texture (band-limited noise of a random scale and strength) and a shading gradient, so that fine
detail, the thing a blur or a noise costs, varies from leaf to leaf and from image to image.
Offline photographs are few; these give a perception stage unlimited content to calibrate damage on.
Rendered at twice the size and downscaled, so edges are sharp without aliasing. Images already
written are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image

# texture scales (Gaussian sigma, px of the rendered image): from grain to soft mottling
TEXTURE_SIGMAS = (0.8, 1.6, 3.2, 6.4)


def leaf_radii(rng: np.random.Generator, n: int, r_min: float, r_max: float, alpha: float = 3.0) -> np.ndarray:
    """Radii with density ∝ r^-alpha on [r_min, r_max] (inverse CDF); alpha = 3 is scale-invariant,
    a smaller one leaves more large, smooth surfaces."""
    u = rng.random(n)
    a, b = r_min ** (1 - alpha), r_max ** (1 - alpha)
    return (a - u * (a - b)) ** (1 / (1 - alpha))


def leaf_colour(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour in [0, 1], mostly muted, as most of a photograph's surfaces are."""
    h, s, v = rng.random(), rng.beta(1.2, 2.5), rng.beta(2.0, 1.6)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def texture_fields(rng: np.random.Generator, side: int) -> np.ndarray:
    """(len(TEXTURE_SIGMAS), side, side) zero-mean, unit-spread noise fields, one per scale."""
    from scipy.ndimage import gaussian_filter

    fields = []
    for sigma in TEXTURE_SIGMAS:
        f = gaussian_filter(rng.standard_normal((side, side)), sigma, mode="wrap")
        fields.append((f - f.mean()) / (f.std() + 1e-8))
    return np.stack(fields)


def draw_dead_leaves(seed: int, size: int = 512, supersample: int = 2) -> Image.Image:
    """One dead-leaves image (RGB, ``size`` × ``size``), the same for the same seed."""
    rng = np.random.default_rng(seed)
    side = size * supersample
    out = np.zeros((side, side, 3))
    covered = np.zeros((side, side), dtype=bool)
    fields = texture_fields(rng, side)
    yy, xx = np.mgrid[0:side, 0:side] / side
    # Leaves fall front to back: each paints only what no earlier (nearer) leaf covers.
    r_max, alpha = side * rng.uniform(0.15, 0.4), rng.uniform(2.5, 3.2)
    while not covered.all():
        for r in leaf_radii(rng, 256, 3 * supersample, r_max, alpha):
            cy, cx = rng.uniform(-r, side + r, size=2)
            aspect, angle = rng.uniform(1.0, 2.5), rng.uniform(0, np.pi)
            reach = r * aspect
            y0, y1 = max(0, int(cy - reach)), min(side, int(cy + reach) + 1)
            x0, x1 = max(0, int(cx - reach)), min(side, int(cx + reach) + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            dy, dx = np.ogrid[y0:y1, x0:x1]
            dy, dx = dy - cy, dx - cx
            u = dx * np.cos(angle) + dy * np.sin(angle)
            v = -dx * np.sin(angle) + dy * np.cos(angle)
            mask = (u / aspect) ** 2 + v ** 2 <= r * r
            mask &= ~covered[y0:y1, x0:x1]
            if not mask.any():
                continue
            colour = leaf_colour(rng)
            value = np.broadcast_to(colour, (y1 - y0, x1 - x0, 3)).copy()
            if rng.random() < 0.6:  # a texture of one scale, tinted by the leaf's colour
                field = fields[rng.integers(len(TEXTURE_SIGMAS))][y0:y1, x0:x1]
                value += rng.uniform(0.02, 0.15) * field[..., None] * (0.5 + colour)
            if rng.random() < 0.5:  # shading across the leaf
                theta = rng.uniform(0, 2 * np.pi)
                ramp = np.cos(theta) * yy[y0:y1, x0:x1] + np.sin(theta) * xx[y0:y1, x0:x1]
                value += rng.uniform(-0.6, 0.6) * (ramp - ramp.mean())[..., None]
            out[y0:y1, x0:x1][mask] = value[mask]
            covered[y0:y1, x0:x1] |= mask
    img = Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))
    return img.resize((size, size), Image.LANCZOS) if supersample > 1 else img


def build_dead_leaves(out: str | Path, count: int, size: int = 512, seed: int = 0, progress: bool = False) -> list[Path]:
    """Write ``count`` images as ``dead-leaves-NNNN.png``; ones already there are kept."""
    from tqdm import tqdm

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in tqdm(range(count), desc="dead leaves", unit="image", disable=not progress):
        path = folder / f"dead-leaves-{i:04d}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            draw_dead_leaves(seed * 1_000_003 + i, size).save(tmp)
            tmp.replace(path)
        paths.append(path)
    return paths
