"""The perception stage: teach a LLaVA-OneVision vision tower low-level quality before any chat.

LLaVA's towers come pretrained; a tower trained from scratch on a few dozen
photos learns *which photo* it sees, not *how damaged* it is. This stage
shows the tower tiles exactly as the anyres processor cuts them (the tower's
own tile size, native pixels) from pristine training photos, distorted on the
fly every step — a fresh family, severity, crop position, scale and flip each
time, and with ``grey_fraction`` some photos seen in grey — and trains it,
through small heads on its mean-pooled last features (the same features the
projector receives), to tell

* the distortion (one of the corpus's distortions, or none),
* its severity (0..5, as a regression; with ``severity_per_distortion`` one
  regression for each distortion, read at the tile's own), and
* a pseudo-MOS of the tile (``100·SSIM₂³`` against its pristine tile, the
  corpus's own formula), and with ``local_mos_weight`` > 0
* the same pseudo-MOS of each patch, from every patch token (a quality map, as
  BIECON trains on local full-reference scores): 64 labels a tile instead of one,
  each tying a damage's cost to the content under that patch.

With ``ranking_weight`` > 0 the tiles come in pairs: one window, one distortion, two
severities (or one of them pristine), and the pseudo-MOS head is also taught to *order*
each pair (a hinge on the difference, as RankIQA's Siamese pre-training does). A pair
holds the content fixed, so the tower is shown how strong a damage is apart from
what it damages (qsit-tiny's test read-out did not gain from it, nor from one
severity regression per distortion: its model card, steps 59-60).

The rest of the checkpoint (projector, language model) is saved unchanged, so
the next stage of the same recipe starts from it. Photos held out of a chat
stage's test sets must be held out here too: ``photos`` are folders of
*training* photos (``qsit build synthetic`` writes them to ``photos/train``).
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qsit.model_info import describe_training, read_model_info, run_finished, write_model_info

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def find_photos(folders: list[str | os.PathLike]) -> list[Path]:
    """Every image file under the given folders, sorted (so a seed gives the same split)."""
    out: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"perception photos folder {root} does not exist")
        out += sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not out:
        raise FileNotFoundError(f"no photos (png/jpg/...) under {', '.join(map(str, folders))}")
    return out


def split_photos(photos: list[Path], n_val: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Training and held-out photos. A file listed twice (the same bytes in two folders, e.g. a
    wallpaper both in a corpus's ``photos/train`` and in its own folder) stays on one side: the
    copies of a held-out photo are held out too, or the check would score photos it trained on."""
    def content(path: Path) -> bytes:
        return hashlib.sha256(path.read_bytes()).digest()

    val = random.Random(seed).sample(photos, min(n_val, len(photos) - 1))
    held = {content(p) for p in val}
    train = [p for p in photos if p not in val and content(p) not in held]
    return train, val


@dataclass
class Sample:
    pixels: np.ndarray
    """(3, tile, tile) float32, normalised the way the processor normalises."""
    distortion: int
    """Index into the distortion list; len(list) means pristine."""
    severity: int
    mos: float
    local: np.ndarray | None = None
    """(patches,) pseudo-MOS of each patch, rows first, when the sampler draws quality maps."""


class TileSampler:
    """Draws distorted native-pixel tiles from photos; pure NumPy/Pillow, seeded per draw."""

    def __init__(self, photos: list[Path], tile: int, distortions: list[str], mean, std,
                 scale_range: tuple[float, float] = (0.45, 1.0), pristine_fraction: float = 1 / 6,
                 corpus_side: int = 256, tile_rescale: tuple[float, float] | None = None,
                 window_side: int | None = None, tiles_per_window: int = 1, local_block: int | None = None,
                 grey_fraction: float = 0.0):
        from PIL import Image

        from qsit.images import load_image

        self.tile = tile
        self.distortions = distortions
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.scale_range = scale_range
        self.pristine_fraction = pristine_fraction
        self.tile_rescale = tile_rescale
        # A damaged window a little larger than the tile (so blurs and warps have real neighbours), or
        # one as large as a corpus image: the damage whose size follows the image's (zoom blur, elastic
        # warps, fog, frost) then acts at an image's scale, and tiles are cut anywhere in it.
        self.window_side = window_side or tile + tile // 2
        self.tile_anywhere = window_side is not None
        self.tiles_per_window = tiles_per_window
        self.local_block = local_block
        self.grey_fraction = grey_fraction
        # Photos are kept at most twice the corpus size: a tile then covers what a tile of a
        # corpus image (or of a user photo after the processor's resize) covers, give or take the scale.
        self.photos = []
        for p in photos:
            img = load_image(p).image
            f = min(1.0, 2 * corpus_side / max(img.size))
            if f < 1:
                img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.LANCZOS)
            self.photos.append(np.asarray(img, dtype=np.float64) / 255)

    def _tile_box(self, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, int, int]:
        """(y, x, size) of the tile inside a damaged window of ``shape``: its centre, or with
        ``tile_rescale`` (or an image-sized window) a random offset, and a size that rescales to the tile."""
        h, w = shape[:2]
        if self.tile_rescale is None and not self.tile_anywhere:
            return (h - self.tile) // 2, (w - self.tile) // 2, self.tile
        size = self.tile if self.tile_rescale is None else round(self.tile / rng.uniform(*self.tile_rescale))
        size = min(h, w, max(8, size))
        y, x = (int(v) for v in rng.integers(0, [h - size + 1, w - size + 1]))
        return y, x, size

    def _cut(self, window: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
        from PIL import Image

        y, x, size = box
        crop = window[y:y + size, x:x + size]
        if size == self.tile:
            return crop
        im = Image.fromarray((crop * 255 + 0.5).astype(np.uint8)).resize((self.tile, self.tile), Image.BICUBIC)
        return np.asarray(im, dtype=np.float64) / 255

    def _window(self, rng: np.random.Generator) -> np.ndarray:
        """A random crop of a random photo, rescaled and maybe flipped: a square of 1.5 tiles, or
        cut and resized as the corpus cuts its images (longest side ``window_side``); a share
        ``grey_fraction`` of them in grey."""
        photo = self.photos[int(rng.integers(len(self.photos)))]
        window = self._image_window(photo, rng) if self.tile_anywhere else self._square_window(photo, rng)
        window = window[:, ::-1] if rng.random() < 0.5 else window
        # Drawn only when asked, so a config without it draws exactly the tiles it always drew.
        if self.grey_fraction and rng.random() < self.grey_fraction:
            from qsit.images import grey

            window = grey(window)
        return window

    def _square_window(self, photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from PIL import Image

        h, w = photo.shape[:2]
        side = self.window_side
        scale = rng.uniform(*self.scale_range)
        src = max(8, min(h, w, int(round(side / scale))))
        y, x = int(rng.integers(0, h - src + 1)), int(rng.integers(0, w - src + 1))
        window = photo[y:y + src, x:x + src]
        if src == side:
            return window
        im = Image.fromarray((window * 255 + 0.5).astype(np.uint8)).resize((side, side), Image.LANCZOS)
        return np.asarray(im, dtype=np.float64) / 255

    def _image_window(self, photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from PIL import Image

        from data_builders.synthetic import crop_and_resize

        img = crop_and_resize(Image.fromarray((photo * 255 + 0.5).astype(np.uint8)), self.window_side, rng,
                              rng.uniform(*self.scale_range))
        if min(img.size) < self.tile:  # a very long, thin photo: stretch its short side to one tile
            img = img.resize((max(img.width, self.tile), max(img.height, self.tile)), Image.LANCZOS)
        return np.asarray(img, dtype=np.float64) / 255

    def _sample(self, window: np.ndarray, out: np.ndarray, box, d: int, sev: int) -> Sample:
        from data_builders.synthetic import similarity

        ref_tile, tile = self._cut(window, box), self._cut(out, box)
        mos = 100.0 if sev == 0 else 100.0 * max(similarity(ref_tile, tile), 0.0) ** 3
        pixels = (np.ascontiguousarray(tile.transpose(2, 0, 1), dtype=np.float32) - self.mean) / self.std
        return Sample(pixels, d, sev, float(mos), self._local(ref_tile, tile, sev))

    def _local(self, ref_tile: np.ndarray, tile: np.ndarray, sev: int) -> np.ndarray | None:
        from data_builders.synthetic import similarity_map

        if self.local_block is None:
            return None
        if sev == 0:
            return np.full((self.tile // self.local_block) ** 2, 100.0, np.float32)
        q = similarity_map(ref_tile, tile, self.local_block)
        return (100.0 * np.clip(q, 0.0, None) ** 3).astype(np.float32).ravel()

    def draw(self, rng: np.random.Generator) -> Sample:
        return self.draw_group(rng, 1)[0]

    def draw_group(self, rng: np.random.Generator, n: int | None = None) -> list[Sample]:
        """``n`` (default ``tiles_per_window``) tiles of one window under one damage."""
        from data_builders.distortions import apply

        window = self._window(rng)
        if rng.random() < self.pristine_fraction:
            d, sev, out = len(self.distortions), 0, window
        else:
            d = int(rng.integers(len(self.distortions)))
            sev = int(rng.integers(1, 6))
            out = apply(window, self.distortions[d], sev, rng)
        return [self._sample(window, out, self._tile_box(window.shape, rng), d, sev)
                for _ in range(n or self.tiles_per_window)]

    def draw_pair(self, rng: np.random.Generator) -> tuple[Sample, Sample]:
        """Two tiles of one window and one distortion at two severities, lighter first; severity 0 is
        the pristine tile (one pair in three holds it, so a sixth of the tiles are pristine, as in ``draw``)."""
        from data_builders.distortions import apply

        window = self._window(rng)
        d = int(rng.integers(len(self.distortions)))
        light, heavy = sorted(int(v) for v in rng.choice(6, size=2, replace=False))
        box = self._tile_box(window.shape, rng)
        return tuple(self._sample(window, window, box, len(self.distortions), 0) if sev == 0 else
                     self._sample(window, apply(window, self.distortions[d], sev, rng), box, d, sev)
                     for sev in (light, heavy))


def _batches(sampler: TileSampler, batch_size: int, seed: int, start_step: int, workers: int,
             pairs: bool = False):
    """Step-indexed batches (each step's RNG depends only on seed and step, so resuming is exact);
    with ``pairs``, tiles 2i and 2i+1 are ``draw_pair``'s."""
    import torch

    class _Steps(torch.utils.data.Dataset):
        def __len__(self):
            return 1 << 30

        def __getitem__(self, step):
            rng = np.random.default_rng([seed, start_step + step])
            samples = ([s for _ in range(batch_size // 2) for s in sampler.draw_pair(rng)] if pairs
                       else [s for _ in range(batch_size // sampler.tiles_per_window)
                             for s in sampler.draw_group(rng)])
            local = (torch.from_numpy(np.stack([s.local for s in samples])) if sampler.local_block
                     else torch.zeros(len(samples), 0))
            return (torch.from_numpy(np.stack([s.pixels for s in samples])),
                    torch.tensor([s.distortion for s in samples]),
                    torch.tensor([s.severity for s in samples], dtype=torch.float32),
                    torch.tensor([s.mos for s in samples], dtype=torch.float32), local)

    return iter(torch.utils.data.DataLoader(_Steps(), batch_size=None, num_workers=workers,
                                            persistent_workers=workers > 0))


def perception_heads(hidden: int, n_classes: int, severity_per_distortion: bool = False, local: bool = False):
    import torch

    heads = {"distortion": torch.nn.Linear(hidden, n_classes),
             "severity": torch.nn.Linear(hidden, n_classes if severity_per_distortion else 1),
             "mos": torch.nn.Linear(hidden, 1)}
    if local:  # read from every patch token, not from their mean
        heads["local"] = torch.nn.Linear(hidden, 1)
    return torch.nn.ModuleDict(heads)


def tower_tokens(vision_tower, pixels):
    """The tower's last hidden states, one per patch: what the projector sees."""
    return vision_tower(pixel_values=pixels).last_hidden_state


def head_outputs(heads, tokens) -> dict:
    """The heads on (B, patches, hidden) tokens: the tile's heads on their mean, ``local`` on each."""
    feats = tokens.mean(1)
    severity = heads["severity"](feats) * 5  # (B, 1), or (B, distortions + 1): one per distortion
    out = {"distortion": heads["distortion"](feats), "severity": severity.squeeze(-1) if severity.shape[-1] == 1
           else severity, "mos": heads["mos"](feats).squeeze(-1) * 100}
    if "local" in heads:
        out["local"] = heads["local"](tokens).squeeze(-1) * 100
    return out


def severity_of(out: dict, distortion):
    """The severity the heads predict, read at the given distortion where there is one per distortion."""
    sev = out["severity"]
    return sev if sev.dim() == 1 else sev.gather(1, distortion[:, None]).squeeze(1)


HEADS_FILE = "perception_heads.pt"
"""The perception stage's heads, saved beside its final checkpoint."""

RANK_MARGIN = 0.05
"""How far (in pseudo-MOS / 100) the lighter tile of a pair must score above the heavier."""


def losses(out: dict, distortion, severity, mos, ranking_weight: float = 0.0, local=None,
           local_weight: float = 0.0) -> dict:
    import torch.nn.functional as F

    parts = {"distortion": F.cross_entropy(out["distortion"], distortion),
             "severity": F.mse_loss(severity_of(out, distortion) / 5, severity / 5),
             "mos": F.mse_loss(out["mos"] / 100, mos / 100)}
    if local_weight > 0:
        parts["local"] = local_weight * F.mse_loss(out["local"] / 100, local / 100)
    if ranking_weight > 0:  # tiles 2i, 2i+1 are a pair; order them as their pseudo-MOS does
        pred, true = out["mos"].view(-1, 2) / 100, mos.view(-1, 2)
        sign = (true[:, 0] - true[:, 1]).sign()
        hinge = F.relu(RANK_MARGIN - sign * (pred[:, 0] - pred[:, 1]))
        parts["ranking"] = ranking_weight * (hinge * sign.abs()).mean()  # ties teach nothing
    return parts


def evaluate(vision_tower, heads, batches, n_classes: int) -> dict:
    """Held-out metrics: distortion accuracy, severity and pseudo-MOS SRCC (and the patches'
    pseudo-MOS SRCC, over every patch of every tile, where the heads read one)."""
    import torch
    from scipy.stats import spearmanr

    keys = ("distortion", "severity", "mos") + (("local",) if "local" in heads else ())
    preds, truth = {k: [] for k in keys}, {k: [] for k in keys}
    vision_tower.eval()
    with torch.no_grad():
        for pixels, d, sev, mos, local in batches:
            out = head_outputs(heads, tower_tokens(vision_tower, pixels))
            preds["distortion"].append(out["distortion"].argmax(-1))
            preds["severity"].append(severity_of(out, d))  # given the true distortion
            preds["mos"].append(out["mos"])
            if "local" in heads:
                preds["local"].append(out["local"].flatten())
            for k, v in (("distortion", d), ("severity", sev), ("mos", mos), ("local", local.flatten())):
                if k in keys:
                    truth[k].append(v)
    vision_tower.train()
    p = {k: torch.cat(v).numpy() for k, v in preds.items()}
    t = {k: torch.cat(v).numpy() for k, v in truth.items()}
    distorted = t["distortion"] < n_classes - 1
    metrics = {"distortion_accuracy": float((p["distortion"] == t["distortion"]).mean()),
               "severity_srcc": float(spearmanr(p["severity"][distorted], t["severity"][distorted])[0]),
               "mos_srcc": float(spearmanr(p["mos"], t["mos"])[0])}
    if "local" in keys:
        metrics["local_mos_srcc"] = float(spearmanr(p["local"], t["local"])[0])
    return metrics


def tile_sampler(pc, photos: list[Path], tile: int, names: list[str], mean, std, patch: int) -> TileSampler:
    """The stage's sampler of tiles, as its config (``PerceptionConfig``) asks for them (``patch``: the
    tower's patch side, the block of its quality maps)."""
    fraction = {} if pc.pristine_fraction is None else {"pristine_fraction": pc.pristine_fraction}
    return TileSampler(photos, tile, names, mean, std, corpus_side=pc.corpus_side,
                       tile_rescale=tuple(pc.tile_rescale) if pc.tile_rescale else None,
                       window_side=pc.window_side, tiles_per_window=pc.tiles_per_window,
                       local_block=patch if pc.local_mos_weight > 0 else None, grey_fraction=pc.grey_fraction,
                       **fraction)


def train_perception(recipe) -> tuple[Path, dict | None, int]:
    """Run the perception stage of ``recipe`` (a TrainRecipe after setup).

    Returns the final checkpoint, the last held-out metrics and the number of steps.
    """
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from data_builders.distortions import DISTORTIONS

    cfg, pc = recipe.cfg, recipe.cfg.perception
    model = recipe.model
    tower = model.model.vision_tower
    ip = recipe.processor.image_processor
    tile = int(ip.size["height"])
    names = pc.distortions or list(DISTORTIONS)
    unknown = [n for n in names if n not in DISTORTIONS]
    if unknown:
        from qsit.train_config import ConfigError

        raise ConfigError(f"perception.distortions: unknown {unknown}; known: {', '.join(DISTORTIONS)}")
    if pc.window_side is not None and pc.window_side < tile:
        from qsit.train_config import ConfigError

        raise ConfigError(f"perception.window_side ({pc.window_side}) is smaller than the tower's {tile}-px tile")
    photos = find_photos(pc.photos)
    train_photos, val_photos = split_photos(photos, pc.val_photos, cfg.train.seed)
    n_classes = len(names) + 1
    heads = perception_heads(tower.config.hidden_size, n_classes, pc.severity_per_distortion, pc.local_mos_weight > 0)
    patch = tower.config.patch_size
    train_sampler = tile_sampler(pc, train_photos, tile, names, ip.image_mean, ip.image_std, patch)
    val_sampler = tile_sampler(pc, val_photos, tile, names, ip.image_mean, ip.image_std, patch) if val_photos else None
    trained = torch.nn.ModuleDict({"tower": tower, "heads": heads})
    params = list(trained.parameters())  # the tower's, then the heads': the order saved optimizer states hold
    ema = (AveragedModel(trained, multi_avg_fn=get_ema_multi_avg_fn(pc.ema_decay), use_buffers=True)
           if pc.ema_decay else None)
    optimizer = torch.optim.AdamW(params, lr=pc.lr, weight_decay=0.01)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=int(0.03 * pc.steps),
                              num_training_steps=pc.steps)
    state = {"step": 0, "losses": [], "val": []}
    ckpt = recipe.out / "checkpoints" / "perception.pt"
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        tower.load_state_dict(saved["tower"])
        heads.load_state_dict(saved["heads"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if ema is not None and saved.get("ema") is not None:
            ema.load_state_dict(saved["ema"])
        state = saved["state"]
        if state["step"] >= pc.steps and run_finished(recipe.out):
            # Rewriting the weights of a finished stage would only make every evaluation cache miss.
            print(f"qsit: {recipe.out} has finished all {pc.steps} steps; its model is kept as it is",
                  file=sys.stderr)
            shipped = (read_model_info(recipe.out / "final") or {}).get("run", {}).get("val")  # the average's, if any
            return recipe.out / "final", shipped, state["step"]
        print(f"qsit: resuming the perception stage at step {state['step']}", file=sys.stderr)
    recipe._log("perception_data", train_photos=[str(p) for p in train_photos],
                val_photos=[str(p) for p in val_photos], distortions=names, tile=tile)
    val_batches = None
    if val_sampler is not None:
        draws = _batches(val_sampler, pc.batch_size, cfg.train.seed + 7919, 0, 0)
        val_batches = [next(draws) for _ in range(max(1, pc.val_samples // pc.batch_size))]

    tower.train()
    batches = _batches(train_sampler, pc.batch_size, cfg.train.seed, state["step"], pc.workers,
                       pairs=pc.ranking_weight > 0)
    bar = tqdm(total=pc.steps, initial=state["step"], desc="perception", unit="step", disable=not recipe.progress)
    t0 = time.perf_counter()
    while state["step"] < pc.steps:
        pixels, d, sev, mos, local = next(batches)
        parts = losses(head_outputs(heads, tower_tokens(tower, pixels)), d, sev, mos, pc.ranking_weight,
                       local, pc.local_mos_weight)
        loss = sum(parts.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(trained)
        state["step"] += 1
        state["losses"].append([state["step"], {k: float(v.detach()) for k, v in parts.items()}])
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        bar.update(1)
        last = state["step"] == pc.steps
        if val_batches and (state["step"] % pc.eval_every == 0 or last):
            metrics = evaluate(tower, heads, val_batches, n_classes)
            state["val"].append([state["step"], metrics])
            recipe._log("perception_val", step=state["step"], **metrics)
            bar.write(f"perception step {state['step']}: held-out photos " +
                      ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        if state["step"] % pc.save_every == 0 or last:
            save_state(ckpt, tower, heads, optimizer, scheduler, state, ema)
    bar.close()
    recipe._log("perception_done", steps=state["step"], seconds=round(time.perf_counter() - t0, 1))
    plot_perception(state, recipe.out / "perception.png")
    val = state["val"][-1][1] if state["val"] else None
    if ema is not None:  # the last step's model beside the average that ships
        save_perception_model(recipe, recipe.out / "final-last", heads, describe_training(
            cfg, steps=state["step"], distortions=names, val=val, weights="the last step's"))
        trained.load_state_dict(ema.module.state_dict())
        if val_batches:
            val = evaluate(tower, heads, val_batches, n_classes)
            recipe._log("perception_val_ema", step=state["step"], **val)
            print("qsit: perception, the weights' moving average: held-out photos " +
                  ", ".join(f"{k} {v:.3f}" for k, v in val.items()), file=sys.stderr)
    final = recipe.out / "final"
    save_perception_model(recipe, final, heads, describe_training(
        cfg, steps=state["step"], distortions=names, val=val,
        weights=f"moving average, decay {pc.ema_decay}" if ema is not None else "the last step's"))
    return final, val, state["step"]


def save_perception_model(recipe, folder: Path, heads, info: dict) -> None:
    """A plain checkpoint of the model (tower trained, the rest as built) with the stage's heads."""
    import torch

    recipe.model.save_pretrained(folder)
    recipe.processor.save_pretrained(folder)
    torch.save(heads.state_dict(), folder / HEADS_FILE)
    write_model_info(folder, info)


def load_perception_heads(folder: Path, hidden: int):
    """The heads ``save_perception_model`` wrote beside a checkpoint, and the distortion keys of their
    classes in the order trained (the last class, beyond them, is 'none')."""
    import torch

    info = read_model_info(folder) or {}
    names = (info.get("run") or {}).get("distortions")
    pc = (info.get("config") or {}).get("perception") or {}
    if not names:
        raise FileNotFoundError(f"{folder}: its model info names no distortions (not a perception checkpoint)")
    heads = perception_heads(hidden, len(names) + 1, bool(pc.get("severity_per_distortion")),
                             (pc.get("local_mos_weight") or 0) > 0)
    heads.load_state_dict(torch.load(folder / HEADS_FILE, map_location="cpu"))
    return heads, names


def save_state(ckpt: Path, tower, heads, optimizer, scheduler, state: dict, ema=None) -> None:
    """The stage's resumable state, written atomically (an interruption mid-write keeps the last one)."""
    import torch

    tmp = ckpt.with_suffix(".tmp")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"tower": tower.state_dict(), "heads": heads.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "state": state,
                "ema": ema.state_dict() if ema is not None else None}, tmp)
    os.replace(tmp, ckpt)


def plot_perception(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [s for s, _ in state["losses"]]
    for key in ("distortion", "severity", "mos", "ranking", "local"):
        if key not in state["losses"][0][1]:
            continue
        values = np.array([v[key] for _, v in state["losses"]])
        k = max(1, len(values) // 100)  # a moving mean, so the trend reads through the noise
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    for key in ("distortion_accuracy", "severity_srcc", "mos_srcc", "local_mos_srcc"):
        pts = [(s, m[key]) for s, m in state["val"] if key in m]
        if pts:
            bx.plot(*zip(*pts, strict=True), "o-", label=key)
    bx.set_xlabel("step")
    bx.set_ylabel("held-out photos")
    bx.set_ylim(0, 1)
    if state["val"]:
        bx.legend(fontsize=8)
    else:  # a stage without held-out photos
        bx.text(0.5, 0.5, "no photos held out", ha="center", va="center", transform=bx.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

