"""The offline corpus: D1, D2, D3 and benchmark-format test sets from real photos, built with no download.

Each source (a real photo from an installed package, or a drawn scene) gives
one or more crops; each crop gives a pristine image and *ladders*: one
distortion at severities 1..5, sometimes confined to one region. Everything
is deterministic from the seed.

**Pseudo-MOS, not human opinion.** An image's score is a full-reference
similarity to its pristine crop — the mean of SSIM on luminance at full and at
half resolution, so it depends on content (blur costs a textured crop more
than a smooth one) — mapped to 0..100 as ``100 · q³`` (the cube spreads the
default corpus about evenly over the five levels). Along each ladder
the score is then made strictly decreasing with severity (each step at least
1 point below the previous), because a stronger distortion of the same kind
must never score higher. Pristine crops score 100.

Test sets come from held-out photos (``sources.TEST_PHOTOS``) and drawn scenes
with their own seeds, never used in training:

* ``tests/iqa.json`` — Q-Bench A3 format: ``img_path``, ``gt_score``;
* ``tests/llvisionqa.json`` — LLVisionQA format: ``img_path``, ``question``, ``candidates``,
  ``correct_ans``, ``type`` (0 yes-no, 1 what, 2 how), ``concern`` (0 distortion,
  1 other, 2 in-context distortion; the rule-based writer makes no concern-3 questions);
* ``tests/lldescribe.json`` — ``img_path``, ``golden_description``.

``dev/`` holds the same three files built from the validation crops (training
photos, never test ones): for model selection and the mix search.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from data_builders.common import BuildError, write_output
from data_builders.d1 import MOSRow, build_d1
from data_builders.d2 import (
    SEVERITY_WORD_SOURCES,
    Defect,
    KnownQuality,
    LetterBalancer,
    QualityQA,
    Question,
    balance_yes_no,
    choice_only_records,
    qa_records,
    rule_based_qa,
)
from data_builders.distortions import DISTORTIONS, FAMILY_MEMBERS, FAMILY_NAMES, REGIONS, apply
from data_builders.sources import PHOTOS, TEST_PHOTOS, Source, folder_sources, scene_source
from qsit.levels import level_value
from qsit.prompts import QUESTION_TYPES
from qsit.records import GENERAL, IMAGE_MARKER, Record

PREFIX = "synthetic"


@dataclass(frozen=True)
class SyntheticConfig:
    size: int = 224
    """Longest side of every corpus image, in pixels."""
    crops_per_photo: int = 2
    ladders_per_crop: int = 4
    """Distortion ladders (severities 1..5) per crop."""
    train_scenes: int = 10
    test_scenes: int = 4
    regional_fraction: float = 0.3
    """Share of ladders confined to one region (for distortions that allow it)."""
    val_fraction: float = 0.1
    """Share of training crops held out as validation (with all their ladders)."""
    photos: str | None = None
    """A folder of extra pristine photos; every ``photos_test_every``-th (sorted by name) is held out
    for the test sets."""
    photos_test_every: int = 5
    """0 puts every photo of ``photos`` in training (the test sets stay those of the package photos
    and scenes, unchanged)."""
    package_photos: bool = True
    """Use the photos inside installed packages (off: only ``photos`` and drawn scenes)."""
    content_in_descriptions: bool = True
    """Begin each D2 description with the photo's caption. A model too small to recognise content
    learns from it which training photo it sees, which is no use on other photos (D3 keeps captions)."""
    mcq_answers: str = "letter"
    """How multiple-choice answers are written: "B. zoom blur" (``letter``) or "zoom blur" (``words``)."""
    severity_words: str = "distortion"
    """What "slight" … "severe" in D2 follow: the distortion's parameter (``distortion``: severity 1 is
    "slight" however much it hurts this image) or the image's quality level (``level``: excellent is
    "slight", bad "severe"), so that a description's severity word and its concluding level agree."""
    family_choices: bool = False
    """Ask each distorted training and validation image "What is the most obvious distortion?" once
    more, with one option per family, each worded by family ("blur") or by name ("zoom blur") at
    random: the right answer's words then come from the list, so a model learns to read it rather
    than to name what it sees whatever is offered. The test sets do not change."""
    seed: int = 0

    def __post_init__(self):
        if self.size < 32:
            raise BuildError(f"size must be at least 32 pixels, got {self.size}")
        if self.photos_test_every < 0:
            raise BuildError(f"photos_test_every must be 0 (none) or more, got {self.photos_test_every}")
        for name in ("crops_per_photo", "ladders_per_crop"):
            if getattr(self, name) < 1:
                raise BuildError(f"{name} must be at least 1")
        if self.severity_words not in SEVERITY_WORD_SOURCES:
            raise BuildError(f"severity_words must be one of {', '.join(SEVERITY_WORD_SOURCES)}, "
                             f"got {self.severity_words!r}")
        if not 0 <= self.regional_fraction <= 1 or not 0 <= self.val_fraction < 1:
            raise BuildError("regional_fraction must be in [0, 1] and val_fraction in [0, 1)")


@dataclass
class CorpusImage:
    path: str
    """Relative to the corpus folder."""
    base: str
    source: Source = field(repr=False)
    split: str
    distortion: str | None = None
    severity: int = 0
    region: str | None = None
    similarity: float = 1.0
    mos: float = 100.0


def crop_and_resize(img: Image.Image, size: int, rng: np.random.Generator, scale: float) -> Image.Image:
    """A random crop covering ``scale`` of each side, resized so its longest side is ``size``."""
    w, h = img.size
    cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = img.crop((x, y, x + cw, y + ch))
    f = size / max(cw, ch)
    return crop.resize((max(8, round(cw * f)), max(8, round(ch * f))), Image.LANCZOS)


def damaged_image_name(key: str, region: str | None, severity: int) -> str:
    """A damaged corpus image's file name: ``jpeg_s3.png``, ``motion_blur_left_s2.png`` (the
    region's first word)."""
    tag = f"{key}_{region.split()[0]}" if region else key
    return f"{tag}_s{severity}.png"


def damage_in_name(path: str | Path) -> tuple[str | None, int]:
    """(distortion, severity) read back from a corpus image's file name; (None, 0) for ``pristine.png``."""
    tag, _, severity = Path(path).stem.rpartition("_s")
    if not tag or not severity.isdigit():
        return None, 0
    for region in REGIONS:
        tag = tag.removesuffix(f"_{region.split()[0]}")
    return tag, int(severity)


def photo_in_path(path: str | Path) -> str:
    """The source photo of a corpus image, read back from its folder: ``<photo>_c<crop>/<damage>.png``."""
    return Path(path).parent.name.rsplit("_c", 1)[0]


def _ssim_at_two_scales(reference: np.ndarray, distorted: np.ndarray, full: bool = False):
    """Luminance SSIM at full and half resolution: the two means, or with ``full`` the two maps."""
    from skimage.metrics import structural_similarity
    from skimage.transform import rescale

    a, b = reference.mean(-1), distorted.mean(-1)
    halves = rescale(a, 0.5, anti_aliasing=True), rescale(b, 0.5, anti_aliasing=True)
    return tuple(structural_similarity(x, y, data_range=1.0, full=full) for x, y in ((a, b), halves))


def similarity(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Mean luminance SSIM at full and half resolution (a two-scale full-reference similarity)."""
    full, half = _ssim_at_two_scales(reference, distorted)
    return float((full + half) / 2)


def similarity_map(reference: np.ndarray, distorted: np.ndarray, block: int) -> np.ndarray:
    """``similarity`` per ``block``-px square (the mean of the two scales' SSIM maps over it), rows
    first: where in the image the damage shows, and how much, against the content that is there."""
    def blocks(ssim: np.ndarray, side: int) -> np.ndarray:
        h, w = ssim.shape[0] // side, ssim.shape[1] // side
        return ssim[:h * side, :w * side].reshape(h, side, w, side).mean((1, 3))

    (_, full), (_, half) = _ssim_at_two_scales(reference, distorted, full=True)
    return (blocks(full, block) + blocks(half, block // 2)) / 2


def pseudo_mos_ladder(similarities: list[float]) -> list[float]:
    """0..100 scores for severities 1..5 of one ladder: ``100·q³``, strictly decreasing, below 100."""
    out, previous = [], 100.0
    for q in similarities:
        score = min(100.0 * max(q, 0.0) ** 3, previous - 1.0)
        out.append(round(max(score, 0.0), 4))
        previous = score
    return out


def _sources(cfg: SyntheticConfig) -> list[tuple[Source, str, int]]:
    """(source, split, number of crops): photos and scenes, test ones held out by name or seed."""
    out = [(s, "test" if s.key in TEST_PHOTOS else "train", cfg.crops_per_photo) for s in PHOTOS
           if cfg.package_photos]
    out += [(scene_source(1000 + i), "train", 1) for i in range(cfg.train_scenes)]
    out += [(scene_source(9000 + i), "test", 1) for i in range(cfg.test_scenes)]
    if cfg.photos:  # last, so adding a folder leaves every other source's crops and ladders as they were
        every = cfg.photos_test_every
        out += [(s, "test" if every and i % every == every - 1 else "train", cfg.crops_per_photo)
                for i, s in enumerate(folder_sources(cfg.photos))]
    return out


def render_corpus(out: Path, cfg: SyntheticConfig, progress: bool = True) -> list[CorpusImage]:
    """Write every corpus image as PNG and return their descriptions (with pseudo-MOS)."""
    from tqdm.auto import tqdm

    plan = _sources(cfg)
    total = sum(n for _, _, n in plan) * (1 + 5 * cfg.ladders_per_crop)
    items: list[CorpusImage] = []
    keys = list(DISTORTIONS)
    train_bases = [f"{s.key}_c{c}" for s, split, n in plan if split == "train" for c in range(n)]
    n_val = round(len(train_bases) * cfg.val_fraction)
    val_bases = set(random.Random(cfg.seed).sample(sorted(train_bases), n_val))
    with tqdm(total=total, desc="synthetic images", unit="img", disable=not progress) as bar:
        for si, (source, split, n_crops) in enumerate(plan):
            photo = source.load()
            # The whole pristine photo, by split: the perception stage draws tiles from photos/train.
            (out / "photos" / split).mkdir(parents=True, exist_ok=True)
            photo.save(out / "photos" / split / f"{source.key}.png")
            for c in range(n_crops):
                rng = np.random.default_rng([cfg.seed, si, c])
                base = f"{source.key}_c{c}"
                base_split = "val" if base in val_bases else split
                crop = crop_and_resize(photo, cfg.size, rng, scale=1.0 if c == 0 else rng.uniform(0.55, 0.8))
                folder = out / "images" / split / base
                folder.mkdir(parents=True, exist_ok=True)
                crop.save(folder / "pristine.png")
                items.append(CorpusImage(f"images/{split}/{base}/pristine.png", base, source, base_split))
                bar.update(1)
                ref = np.asarray(crop, dtype=np.float64) / 255
                for key in rng.choice(keys, size=cfg.ladders_per_crop, replace=cfg.ladders_per_crop > len(keys)):
                    region = None
                    if DISTORTIONS[key].regional and rng.random() < cfg.regional_fraction:
                        region = REGIONS[int(rng.integers(len(REGIONS)))]
                    ladder, sims = [], []
                    for sev in range(1, 6):
                        y = apply(ref, str(key), sev, rng, region=region)
                        rel = f"images/{split}/{base}/{damaged_image_name(str(key), region, sev)}"
                        Image.fromarray((y * 255 + 0.5).astype(np.uint8)).save(out / rel)
                        sims.append(similarity(ref, y))
                        ladder.append(CorpusImage(rel, base, source, base_split, str(key), sev, region))
                        bar.update(1)
                    for item, q, mos in zip(ladder, sims, pseudo_mos_ladder(sims), strict=True):
                        item.similarity, item.mos = q, mos
                    items.extend(ladder)
    return items


def _known(item: CorpusImage, level: str, with_content: bool, severity_words: str = "distortion") -> KnownQuality:
    content = item.source.caption if with_content else None
    if item.distortion is None:
        return KnownQuality(content, level)
    d = DISTORTIONS[item.distortion]
    severity = item.severity if severity_words == "distortion" else 6 - level_value(level)  # excellent → slight
    return KnownQuality(content, level, (Defect(d.name, severity, item.region, d.cause, d.fix),))


def family_choice_question(key: str, rng: random.Random) -> Question:
    """The most obvious distortion among one option per family, each worded by family or by name."""
    d = DISTORTIONS[key]

    def worded(family: str, name: str) -> str:
        return FAMILY_NAMES[family] if rng.random() < 0.5 else name

    answer = worded(d.family, d.name)
    others = rng.sample(sorted(FAMILY_NAMES.keys() - {d.family}), 3)
    distractors = [worded(f, rng.choice(FAMILY_MEMBERS[f])) for f in others]
    return Question("what", "What is the most obvious distortion in the image?", answer, (answer, *distractors))


def _concern(question: str, item: CorpusImage) -> int:
    if "overall quality" in question:
        return 1
    return 2 if item.region else 0


def build_synthetic(out_dir: str | Path, cfg: SyntheticConfig | None = None, progress: bool = True) -> dict:
    """Build the whole corpus into ``out_dir``; returns the top-level manifest."""
    cfg = cfg or SyntheticConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    items = render_corpus(out, cfg, progress)
    by_path = {it.path: it for it in items}

    # D1 — the same builder as for real MOS tables, with the corpus's own split.
    rows = [MOSRow(it.path, it.mos, f"{it.path}") for it in items]
    d1 = build_d1(rows, PREFIX, out, split_of={it.path: it.split for it in items}, seed=cfg.seed,
                  verify_images=False)  # just written by us
    write_output(out / "d1", d1.records, {**d1.manifest, "pseudo_mos": "100·SSIM2³, strictly decreasing "
                                                                       "along severity; synthetic, not human"})
    level_of = {r.images[0].removeprefix(f"{PREFIX}/"): r.meta["level"] for r in d1.records}

    # D2 — known defects → description, balanced VQA and MCQ, conversation.
    rng = random.Random(cfg.seed)
    absent_pool = [d.name for d in DISTORTIONS.values()]
    qas: dict[str, QualityQA] = {it.path: rule_based_qa(_known(it, level_of[it.path], cfg.content_in_descriptions,
                                                                  cfg.severity_words),
                                                           absent_pool, rng)
                                 for it in items}
    qas, dropped = balance_yes_no(qas, cfg.seed)
    balancer = LetterBalancer(cfg.seed)
    d2_records = [r for path, qa in qas.items()
                  for r in qa_records(f"{PREFIX}/{path}", f"{PREFIX}/{path}", qa, PREFIX, by_path[path].split,
                                      balancer, meta={"level": level_of[path]}, mcq_answers=cfg.mcq_answers)]
    if cfg.family_choices:  # their own random stream and letter balance: the records above stay as they were
        rng, balancer = random.Random(f"{cfg.seed}/family-choices"), LetterBalancer(cfg.seed + 1)
        d2_records += [r for it in items if it.distortion and it.split != "test"
                       for r in choice_only_records(f"{PREFIX}/{it.path}", f"{PREFIX}/{it.path}",
                                                    [family_choice_question(it.distortion, rng)], PREFIX,
                                                    it.split, balancer, meta={"level": level_of[it.path]},
                                                    mcq_answers=cfg.mcq_answers)]
    write_output(out / "d2", d2_records, {"builder": "d2-rule-based", "seed": cfg.seed, "image_root": str(out),
                                          "image_prefix": PREFIX, "yes_no_dropped_for_balance": dropped,
                                          "problems": []})

    # D3 — captions and content questions of the pristine training crops.
    d3_records = []
    for it in items:
        if it.distortion is None and it.split != "test":
            image = f"{PREFIX}/{it.path}"
            caption = it.source.caption[0].upper() + it.source.caption[1:] + "."
            turns = [("Describe the content of this image.", caption), *it.source.questions]
            d3_records.append(Record(
                id=f"{PREFIX}/{it.base}/content", kind=GENERAL, images=[image],
                messages=[m for i, (q, a) in enumerate(turns) for m in (
                    {"role": "user", "content": f"{IMAGE_MARKER}\n{q}" if i == 0 else q},
                    {"role": "assistant", "content": a})],
                source=PREFIX, split=it.split))
    write_output(out / "d3", d3_records, {"builder": "d3-captions", "seed": cfg.seed, "image_root": str(out),
                                          "image_prefix": PREFIX, "problems": []})

    tests = write_test_sets(out, [it for it in items if it.split == "test"], qas, cfg.seed)
    # The same formats from the validation crops: dev sets for model selection and mix searches.
    write_test_sets(out, [it for it in items if it.split == "val"], qas, cfg.seed, folder="dev")
    manifest = {
        "builder": "synthetic", "config": asdict(cfg), "seconds": round(time.perf_counter() - t0, 1),
        "images": len(items), "splits": {s: sum(it.split == s for it in items) for s in ("train", "val", "test")},
        "d1_conversion_precision": d1.manifest["conversion_precision"], "d1_level_range": d1.manifest["level_range"],
        "records": {"d1": len(d1.records), "d2": len(d2_records), "d3": len(d3_records)}, "test_sets": tests,
        "pseudo_mos": "synthetic: full-reference similarity to the pristine crop, not human opinion",
        "held_out_photos": list(TEST_PHOTOS),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_test_sets(out: Path, test_items: list[CorpusImage], qas: dict[str, QualityQA], seed: int,
                    folder: str = "tests") -> dict:
    folder = out / folder
    folder.mkdir(exist_ok=True)
    iqa = [{"img_path": it.path, "gt_score": it.mos} for it in test_items]
    rng = random.Random(seed)
    questions, described = [], []
    for i, it in enumerate(test_items):
        qa = qas[it.path]
        # One question per image, cycling through the question types so each is well represented.
        wanted = QUESTION_TYPES[i % 3]
        pool = [q for q in qa.questions if q.type == wanted] or qa.questions
        q = rng.choice(pool)
        candidates = list(q.options)
        rng.shuffle(candidates)
        questions.append({"img_path": it.path, "question": q.question, "candidates": candidates,
                          "correct_ans": q.answer, "type": QUESTION_TYPES.index(q.type), "concern": _concern(q.question, it)})
        if it.severity in (0, 2, 4):
            described.append({"img_path": it.path, "golden_description": qa.description})
    for name, data in (("iqa.json", iqa), ("llvisionqa.json", questions), ("lldescribe.json", described)):
        (folder / name).write_text(json.dumps(data, indent=1) + "\n")
    return {"iqa": len(iqa), "llvisionqa": len(questions), "lldescribe": len(described)}

