"""D1 — scoring data: MOS datasets as Q-SiT level conversations.

A source row (an image and its mean opinion score) becomes one record::

    koniq10k_scores_and_distributions.csv, line 2:
      "10004473376.jpg",0,0,25,73,7,105,3.828571429,0.527278,77.38362069
    →
    {"id": "koniq10k/10004473376.jpg", "kind": "scoring",
     "images": ["koniq10k/10004473376.jpg"],
     "messages": [{"role": "user", "content": "<image>\\nAssume you are an image quality evaluator. How would
                   you rate the quality of this image?"},
                  {"role": "assistant", "content": "The quality of the image is excellent."}],
     "source": "koniq10k", "split": "train", "meta": {"mos": 77.38362069, "level": "excellent", ...}}

Levels follow eq. 1 with [m, M] from the training split (or ``score_range``).
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_builders.common import BuildError, Problems, duplicate_groups, file_sha256, seeded_split
from qsit.levels import level_thresholds, level_value, scores_to_levels
from qsit.prompts import QSIT_PREFIX_SENTENCE, get_preset
from qsit.records import IMAGE_MARKER, SCORING, Record

# Q-Align's augmentation: the same request in other words (the prefix sentence stays).
QUESTION_PARAPHRASES = (
    "How would you rate the quality of this image?",
    "Can you evaluate the quality of the image?",
    "What do you think about the quality of this image?",
    "How is the quality of this image?",
    "Rate the quality of the image.",
    "Could you rate the quality of this picture?",
    "What is your quality rating for this image?",
    "How good is the quality of this image?",
    "Please judge the quality of this image.",
)


@dataclass(frozen=True)
class MOSRow:
    image: str
    """Path of the image relative to the dataset's image folder."""
    mos: float
    where: str
    """file:line (or file:index) of the row, for messages."""


@dataclass(frozen=True)
class MOSReader:
    name: str
    read: Callable[[Path], tuple[list[MOSRow], Problems]]
    nominal_range: tuple[float, float] | None
    image_dir: str
    """Where the images live relative to the dataset root, in the published layout."""
    layout: str


def _float(text, where: str, problems: Problems) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        problems.add(where, f"score {text!r} is not a number")
        return None
    if not math.isfinite(value):
        problems.add(where, f"score {text!r} is NaN or infinite")
        return None
    return value


def _table_rows(path: Path, image_col: str, score_col: str) -> tuple[list[MOSRow], Problems]:
    """CSV/TSV (by suffix), XLSX, or a JSON list of objects, with named columns."""
    problems = Problems()
    suffix = path.suffix.lower()
    if suffix == ".json":
        items = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(items, list):
            raise BuildError(f"{path}: expected a JSON list of objects")
        entries = [(f"{path}:item {i}", item) for i, item in enumerate(items)]
    elif suffix in (".xlsx", ".xls"):
        import pandas as pd

        frame = pd.read_excel(path)
        entries = [(f"{path}:row {i + 2}", row) for i, row in enumerate(frame.to_dict("records"))]
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix in (".tsv", ".txt") else ",")
            entries = [(f"{path}:{i + 2}", row) for i, row in enumerate(reader)]
    if entries:
        first = entries[0][1]
        missing = [c for c in (image_col, score_col) if not isinstance(first, dict) or c not in first]
        if missing:
            cols = list(first) if isinstance(first, dict) else []
            raise BuildError(f"{path}: no column(s) {missing}; columns are {cols}")
    rows = []
    for where, row in entries:
        if not isinstance(row, dict):
            problems.add(where, "not an object")
            continue
        image = row.get(image_col)
        if not isinstance(image, str) or not image.strip():
            problems.add(where, f"no image name in column {image_col!r}")
            continue
        value = _float(row.get(score_col), where, problems)
        if value is not None:
            rows.append(MOSRow(image=image.strip(), mos=value, where=where))
    return rows, problems


def _in_dir(path: Path, name: str) -> Path:
    return path / name if path.is_dir() else path


def read_koniq10k(path: Path, column: str = "MOS_zscore"):
    return _table_rows(_in_dir(path, "koniq10k_scores_and_distributions.csv"), "image_name", column)


def read_spaq(path: Path):
    target = path / "Annotations" / "MOS and Image attribute scores.xlsx" if path.is_dir() else path
    return _table_rows(target, "Image name", "MOS")


def read_agiqa3k(path: Path):
    return _table_rows(_in_dir(path, "data.csv"), "name", "mos_quality")


def read_kadid10k(path: Path):
    return _table_rows(_in_dir(path, "dmos.csv"), "dist_img", "dmos")


def read_qbench_a3(path: Path):
    return _table_rows(path, "img_path", "gt_score")


def read_livec(path: Path):
    """LIVE Challenge: ``Data/AllImages_release.mat`` + ``Data/AllMOS_release.mat``; the
    first 7 entries are the observers' practice images and are skipped, as is customary."""
    from scipy.io import loadmat

    data = path / "Data" if (path / "Data").is_dir() else path
    names_file, mos_file = data / "AllImages_release.mat", data / "AllMOS_release.mat"
    for f in (names_file, mos_file):
        if not f.is_file():
            raise BuildError(f"{f}: not found (LIVE Challenge layout: Data/AllImages_release.mat, "
                             "Data/AllMOS_release.mat)")
    names = loadmat(names_file)["AllImages_release"].reshape(-1)
    mos = loadmat(mos_file)["AllMOS_release"].reshape(-1)
    if len(names) != len(mos):
        raise BuildError(f"{data}: {len(names)} image names but {len(mos)} MOS values")
    problems, rows = Problems(), []
    for i in range(7, len(names)):
        where = f"{mos_file}:index {i}"
        name = str(np.asarray(names[i]).reshape(-1)[0])
        value = _float(mos[i], where, problems)
        if value is not None:
            rows.append(MOSRow(image=name, mos=value, where=where))
    return rows, problems


READERS: dict[str, MOSReader] = {
    r.name: r
    for r in (
        MOSReader("koniq10k", read_koniq10k, (0.0, 100.0), "1024x768",
                  "koniq10k_scores_and_distributions.csv: image_name, MOS_zscore (0-100)"),
        MOSReader("spaq", read_spaq, (0.0, 100.0), "TestImage",
                  "Annotations/MOS and Image attribute scores.xlsx: Image name, MOS (0-100)"),
        MOSReader("livec", read_livec, (0.0, 100.0), "Images",
                  "Data/AllImages_release.mat + Data/AllMOS_release.mat (0-100)"),
        MOSReader("agiqa3k", read_agiqa3k, None, ".", "data.csv: name, mos_quality"),
        MOSReader("kadid10k", read_kadid10k, (1.0, 5.0), "images", "dmos.csv: dist_img, dmos (1-5)"),
        MOSReader("qbench-a3", read_qbench_a3, None, ".", "JSON list: img_path, gt_score"),
    )
}


def get_reader(name: str) -> MOSReader:
    from qsit.suggest import did_you_mean

    if name in READERS:
        return READERS[name]
    raise BuildError(f"unknown MOS dataset {name!r} (or use 'table').{did_you_mean(name, READERS)}")


def read_split_file(path: Path) -> dict[str, str]:
    """An official split: CSV with image + split/set columns (KonIQ's koniq10k_distributions_sets.csv
    uses image_name + set = training/validation/test), or a JSON object {image: split}."""
    alias = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test"}
    if path.suffix.lower() == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            image_col = next((c for c in ("image_name", "image", "img_path", "name") if c in cols), None)
            split_col = next((c for c in ("set", "split") if c in cols), None)
            if not image_col or not split_col:
                raise BuildError(f"{path}: need an image column and a set/split column, got {cols}")
            raw = {row[image_col]: row[split_col] for row in reader}
    bad = sorted({v for v in raw.values() if v not in alias})
    if bad:
        raise BuildError(f"{path}: unknown split names {bad}; use train/val/test (or training/validation)")
    return {k: alias[v] for k, v in raw.items()}


@dataclass
class D1Result:
    records: list[Record]
    problems: Problems
    manifest: dict


def build_d1(
    rows: list[MOSRow],
    source: str,
    image_root: Path,
    *,
    image_prefix: str | None = None,
    score_range: tuple[float, float] | None = None,
    nominal_range: tuple[float, float] | None = None,
    split_of: dict[str, str] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    paraphrases: bool = False,
    seed: int = 0,
    known_hashes: dict[str, str] | None = None,
    problems: Problems | None = None,
    verify_images: bool = True,
    progress: bool = False,
) -> D1Result:
    """Turn MOS rows into scoring records; bad rows land in ``problems`` with file and line.

    ``verify_images`` decodes every image with qsit's loader, so a truncated or
    corrupt file is reported here rather than met half-way through training.
    """
    from tqdm.auto import tqdm

    from qsit.images import ImageLoadError, load_image

    problems = problems if problems is not None else Problems()
    prefix = source if image_prefix is None else image_prefix
    check_range = score_range or nominal_range
    seen: set[str] = set()
    good: list[MOSRow] = []
    hashes: dict[str, str] = {}
    for row in tqdm(rows, desc=f"checking {source} images", unit="img", disable=not progress):
        path = image_root / row.image
        if row.image in seen:
            problems.add(row.where, f"duplicate image {row.image!r} (first row kept)")
            continue
        if check_range and not check_range[0] <= row.mos <= check_range[1]:
            problems.add(row.where, f"score {row.mos} outside the scale {check_range[0]}..{check_range[1]}")
            continue
        if not path.is_file():
            problems.add(row.where, f"image not found: {path}")
            continue
        if verify_images:
            try:
                load_image(path)
            except ImageLoadError as e:
                problems.add(row.where, f"unreadable image: {e}")
                continue
        seen.add(row.image)
        hashes[row.image] = file_sha256(path)
        good.append(row)
    if len(good) < 2:
        raise BuildError(f"{source}: fewer than two usable rows ({len(problems)} problems: "
                         f"{'; '.join(problems.lines()[:3])})")

    if split_of is not None:
        unsplit = [r for r in good if r.image not in split_of]
        for r in unsplit:
            problems.add(r.where, f"{r.image!r} is not in the split file")
        good = [r for r in good if r.image in split_of]
        split = {r.image: split_of[r.image] for r in good}
    else:
        split = seeded_split([r.image for r in good], test_fraction, val_fraction, seed)

    _refuse_duplicates(source, hashes, split, known_hashes or {})

    train = [r for r in good if split[r.image] == "train"]
    if score_range is None and len({r.mos for r in train}) < 2:
        raise BuildError(f"{source}: the training split needs two distinct scores to set the level range; "
                         "give --score-range")
    low, high = score_range or (min(r.mos for r in train), max(r.mos for r in train))
    # Val/test scores outside the training range are clipped into it: eq. 1 is
    # defined on [m, M], and these levels only feed validation losses.
    levels = scores_to_levels([min(max(r.mos, low), high) for r in good], low=low, high=high)

    prompt = get_preset("qsit").scoring_prompt("quality")
    rng = random.Random(seed)
    records = []
    for r, level in zip(good, levels, strict=True):
        question = prompt.question
        if paraphrases:
            question = f"{QSIT_PREFIX_SENTENCE} {rng.choice(QUESTION_PARAPHRASES)}"
        records.append(Record(
            id=f"{source}/{r.image}", kind=SCORING, images=[f"{prefix}/{r.image}" if prefix else r.image],
            messages=[{"role": "user", "content": f"{IMAGE_MARKER}\n{question}"},
                      {"role": "assistant", "content": prompt.answer(level_value(level) - 1)}],
            source=source, split=split[r.image],
            meta={"mos": r.mos, "level": level, "sha256": hashes[r.image]},
        ))
    manifest = {
        "builder": "d1", "source": source, "seed": seed, "image_root": str(image_root.resolve()),
        "image_prefix": prefix, "level_range": [low, high],
        "level_thresholds": [float(t) for t in level_thresholds(low, high)],
        "conversion_precision": conversion_precision(
            [r.mos for r in train], [lv for r, lv in zip(good, levels, strict=True) if split[r.image] == "train"]),
        "input_hashes": {f"{prefix}/{k}": v for k, v in sorted(hashes.items()) if k in split},
        "problems": problems.items,
    }
    return D1Result(records=records, problems=problems, manifest=manifest)


def _refuse_duplicates(source: str, hashes: dict[str, str], split: dict[str, str], known: dict[str, str]) -> None:
    """Same content under two names across splits (a leak) or across datasets is refused."""
    ours = {f"{source}/{k}": h for k, h in hashes.items() if k in split}
    leaks = [g for g in duplicate_groups(ours)
             if len({split[k.split("/", 1)[1]] for k in g}) > 1]
    known_by_hash = {h: k for k, h in known.items()}
    across = [[k, known_by_hash[h]] for k, h in sorted(ours.items()) if h in known_by_hash]
    if leaks or across:
        lines = [" = ".join(g) + " (across splits)" for g in leaks]
        lines += [f"{a} = {b} (already in another dataset)" for a, b in across]
        raise BuildError(f"{source}: {len(lines)} duplicate image(s) refused:\n  " + "\n  ".join(lines))


def conversion_precision(mos: list[float], levels: list[str]) -> dict:
    """SRCC/PLCC between level index and MOS: how much eq. 1 loses (the paper's Table II)."""
    from scipy.stats import pearsonr, spearmanr

    idx = np.array([level_value(lv) for lv in levels], dtype=float)
    values = np.asarray(mos, dtype=float)
    if len(values) < 3 or np.ptp(idx) == 0 or np.ptp(values) == 0:
        return {"srcc": None, "plcc": None, "n": len(values)}
    return {"srcc": float(spearmanr(idx, values)[0]), "plcc": float(pearsonr(idx, values)[0]), "n": len(values)}
