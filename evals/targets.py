"""Checks a quality model must pass on synthetic damage: does the explanation name it, does it agree
with the score, and does the score fall as the damage grows on a photo the model never saw.

Used by ``scripts/evaluate_default_model.py`` (the embedded model's targets) and its tests.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np

from qsit.levels import concluded_level
from qsit.prompts import QUESTION_TYPES

# How an explanation may name each distortion family (the corpus's own words, and plain synonyms).
FAMILY_WORDS = {
    "noise": ("noise", "noisy", "grain"),
    "blur": ("blur", "blurry", "out of focus"),
    "compression": ("jpeg", "compression", "pixelat", "blocky"),
    "exposure": ("exposure", "overexposed", "underexposed", "bright", "dark", "contrast"),
    "weather": ("snow", "frost", "fog"),
    "geometry": ("deformation", "warp"),
}
MONOTONIC_DISTORTIONS = ("defocus_blur", "gaussian_noise", "jpeg", "underexposure")
MONOTONIC_SEVERITIES = (1, 3, 5)


def names_family(text: str, family: str) -> bool:
    """Whether a sentence that states a problem names the family.

    Sentences that describe content ("The image shows ...") or deny a problem ("no visible
    noise") are not counted, so a stock "clean image" answer names nothing.
    """
    for sentence in re.split(r"(?<=[.!?])\s+", text.lower()):
        if sentence.startswith("the image shows") or re.search(r"\b(no|not|without|free of)\b", sentence):
            continue
        if any(w in sentence for w in FAMILY_WORDS[family]):
            return True
    return False


def said_yes_or_no(output: str) -> str | None:
    """The first "yes" or "no" an answer says, in lower case, whatever letter stands before it."""
    said = re.findall(r"\b(yes|no)\b", output.lower())
    return said[0] if said else None


def yes_no_by_option_order(samples: list[dict]) -> dict:
    """Yes-no accuracy per order of the options, read by letter and by the answer's own word.

    ``samples`` are LLVisionQA sample rows (Q-Bench fields plus ``raw_output`` and
    ``correct_generate``). A model trained on one order that answers by its words but does
    not read the letters is right by word and wrong by letter in the other order.
    """
    by_order: dict[str, dict] = {}
    for s in samples:
        if s.get("type") != QUESTION_TYPES.index("yes-no") or s.get("raw_output") is None or s.get("correct_ans") is None:
            continue
        row = by_order.setdefault("/".join(s["candidates"]), {"n": 0, "by_letter": 0, "by_word": 0})
        row["n"] += 1
        row["by_letter"] += bool(s["correct_generate"])
        row["by_word"] += said_yes_or_no(s["raw_output"]) == s["correct_ans"].lower()
    return {order: {"n": r["n"], "by_letter": r["by_letter"] / r["n"], "by_word": r["by_word"] / r["n"]}
            for order, r in sorted(by_order.items())}


def stated_option(output: str, candidates: list[str]) -> str | None:
    """The candidate an answer states in words ("B. zoom blur" -> "zoom blur"), whatever its letter."""
    text = re.sub(r"^\(?[A-D][.)]\s*", "", output.strip()).rstrip(".").strip().lower()
    return next((c for c in candidates if c.strip().lower() == text), None)


def letter_and_words(samples: list[dict]) -> dict:
    """Per question type, accuracy read by the answer's letter and by the option it states in words.

    A model that knows the answer but has not learned to copy the letter in front of it is
    right more often by its words than by its letter.
    """
    tally: dict[str, list[int]] = {}
    for s in samples:
        if s.get("raw_output") is None or s.get("correct_ans") is None:
            continue
        row = tally.setdefault(QUESTION_TYPES[s["type"]], [0, 0, 0])
        row[0] += 1
        row[1] += bool(s["correct_generate"])
        row[2] += stated_option(s["raw_output"], s["candidates"]) == s["correct_ans"]
    return {t: {"n": n, "by_letter": ok / n, "by_words": words / n} for t, (n, ok, words) in tally.items()}


def yes_no_confusion(samples: list[dict]) -> dict:
    """How often a yes-no answer says "yes" when the named damage is there and when it is not.

    Equal rates mean the answer does not depend on whether the question names what is in the image.
    """
    said_yes = {"Yes": [0, 0], "No": [0, 0]}
    for s in samples:
        if s.get("type") != QUESTION_TYPES.index("yes-no") or s.get("raw_output") is None \
                or s.get("correct_ans") not in said_yes:
            continue
        said_yes[s["correct_ans"]][0] += said_yes_or_no(s["raw_output"]) == "yes"
        said_yes[s["correct_ans"]][1] += 1
    rate = {truth: (y / n if n else None) for truth, (y, n) in said_yes.items()}
    return {"yes_when_present": rate["Yes"], "yes_when_absent": rate["No"],
            "n_present": said_yes["Yes"][1], "n_absent": said_yes["No"][1]}


def default_unseen_photo() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def monotonicity(assessor, photo: Path, size: int = 224, seed: int = 0, draws: int = 8) -> dict:
    """Scores of the clean photo and of each distortion at three severities, at the corpus's size.

    A damage drawn at random (noise) is scored as the mean over ``draws`` draws (seeds ``seed``,
    ``seed + 1`` …): one draw's pattern moves a slight noise's score by more than it differs from
    the clean photo's. ``draws_monotonic`` is the share of single draws whose ladder is monotonic
    (draw i at every severity); a damage with nothing random is scored once.
    """
    from PIL import Image

    from data_builders.distortions import apply
    from qsit.images import load_image

    img = load_image(photo).image
    f = size / max(img.size)
    img = img.resize((round(img.width * f), round(img.height * f)), Image.LANCZOS)
    x = np.asarray(img, dtype=np.float64) / 255
    images, where = [img], {}
    for key in MONOTONIC_DISTORTIONS:
        for sev in MONOTONIC_SEVERITIES:
            drawn = [(apply(x, key, sev, np.random.default_rng(seed + i)) * 255 + 0.5).astype(np.uint8)
                     for i in range(draws)]
            if all(np.array_equal(d, drawn[0]) for d in drawn[1:]):
                drawn = drawn[:1]
            where[key, sev] = range(len(images), len(images) + len(drawn))
            images += [Image.fromarray(d) for d in drawn]
    scores = [r.score for r in assessor.score(images)]
    clean = scores[0]
    out = {"photo": str(photo), "clean": clean, "draws": draws, "distortions": {}}
    for key in MONOTONIC_DISTORTIONS:
        per_draw = [[scores[i] for i in where[key, sev]] for sev in MONOTONIC_SEVERITIES]
        ladder = [float(np.mean(s)) for s in per_draw]
        chains = [[clean, *(s[i] for s in per_draw)] for i in range(len(per_draw[0]))]
        out["distortions"][key] = {"scores": ladder, "monotonic": _falling(clean, ladder),
                                   "draws_monotonic": float(np.mean([_falling(c[0], c[1:]) for c in chains]))}
        if len(per_draw[0]) > 1:
            out["distortions"][key]["draw_scores"] = per_draw
    out["all_monotonic"] = all(d["monotonic"] for d in out["distortions"].values())
    return out


def colour_reliance(assessor, images: list[Path]) -> dict:
    """Each colourful image scored as it is and in grey (``qsit.images.grey``, the luminance qsit's
    pseudo-MOS compares, so its label would not change): how much of the score is colour. Many damages
    wash colour out (fog, contrast, exposure), so a model shown only colourful clean photos may learn
    that grey means damaged. Images already grey are left out (their grey view is themselves)."""
    from qsit.images import grey_image, load_image

    loaded = [load_image(p).image for p in images]
    colourful = [(p, im) for p, im in zip(images, loaded, strict=True) if np.ptp(np.asarray(im), axis=-1).any()]
    scores = [r.score for r in assessor.score([v for _, im in colourful for v in (im, grey_image(im))])]
    rows = [{"image": str(p), "colour": scores[2 * i], "grey": scores[2 * i + 1]} for i, (p, _) in enumerate(colourful)]
    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {"n": len(rows), "left_out_grey": len(images) - len(rows),
            "colour": mean([r["colour"] for r in rows]), "grey": mean([r["grey"] for r in rows]),
            "difference": mean([r["grey"] - r["colour"] for r in rows]), "images": rows}


def monotonicity_summary(results: list[dict]) -> dict:
    """How many photos pass, per distortion and on all four, and how their clean scores spread.

    One photo can pass by luck; across many photos the share that pass shows whether the model
    ranks damage below a clean photo it never saw, or only below the photos it knows.
    """
    if not results:
        raise ValueError("no photos to summarise")
    keys = list(results[0]["distortions"])
    clean = np.array([r["clean"] for r in results])
    return {"photos": len(results),
            "all_monotonic": sum(r["all_monotonic"] for r in results),
            "monotonic": {k: sum(r["distortions"][k]["monotonic"] for r in results) for k in keys},
            "severity_1_below_clean": {k: sum(r["distortions"][k]["scores"][0] < r["clean"] for r in results)
                                       for k in keys},
            "clean": {"min": float(clean.min()), "median": float(np.median(clean)), "max": float(clean.max())}}


def _falling(clean: float, ladder: list[float]) -> bool:
    chain = [clean, *ladder]
    return all(a > b for a, b in zip(chain, chain[1:], strict=False))


def explanation_checks(assessor, corpus: Path, out: Path, n: int | None = None, seed: int = 0,
                       max_new_tokens: int = 96) -> dict:
    """Explain the test images (all of them, or a seeded sample of ``n``; cached, resumable):
    how often the explanation names the family of a distorted image's damage, and how often the
    level it concludes with equals the scored level (on every explained image, pristine ones too)."""
    from tqdm.auto import tqdm

    from data_builders.distortions import DISTORTIONS
    from data_builders.synthetic import damage_in_name
    from evals.common import SampleCache

    d1 = [json.loads(line) for line in (corpus / "d1" / "records.jsonl").open()]
    tests = sorted((r for r in d1 if r["split"] == "test"), key=lambda r: r["id"])
    if n:
        tests = random.Random(seed).sample(tests, min(n, len(tests)))
    cache = SampleCache(out / "explain_cache.jsonl")
    rows = []
    for r in tqdm(tests, desc="explanations", unit="img"):
        key, _ = damage_in_name(r["images"][0])
        ck = f"{assessor.cache_id}|{r['id']}"
        if ck not in cache:
            a = assessor.assess(corpus / r["images"][0].split("/", 1)[1], max_new_tokens=max_new_tokens)
            cache.put(ck, {"level": a.level, "score": a.score, "explanation": a.explanation})
        got = cache.get(ck)
        family = DISTORTIONS[key].family if key else None
        rows.append({"id": r["id"], "distortion": key, "family": family, "level": got["level"],
                     "explanation": got["explanation"],
                     "names_family": names_family(got["explanation"], family) if family else None,
                     "concluded": concluded_level(got["explanation"])})
    return summarise_explanations(rows)


def names_any_family(text: str) -> bool:
    """Whether an explanation states any damage at all (a "sharp and well exposed" one names none)."""
    return any(names_family(text, family) for family in FAMILY_WORDS)


def summarise_explanations(rows: list[dict]) -> dict:
    """The explanation figures from per-image rows (``family`` None for a pristine image).

    Besides the targets, how often a pristine image is called clean (its explanation names no
    damage) and how often a damaged one is: a model that always names some damage is right on
    every distorted image it names and wrong on every clean photo a user gives it.
    """
    distorted = [r for r in rows if r["family"]]
    pristine = [r for r in rows if not r["family"]]

    def share(part, whole):
        return sum(part) / len(whole) if whole else None

    return {"images": len(rows), "distorted": len(distorted), "pristine": len(pristine),
            "names_family": share([r["names_family"] for r in distorted], distorted) or 0.0,
            "agreement": share([r["concluded"] == r["level"] for r in rows], rows) or 0.0,
            "no_conclusion": share([r["concluded"] is None for r in rows], rows) or 0.0,
            "pristine_called_clean": share([not names_any_family(r["explanation"]) for r in pristine], pristine),
            "distorted_called_clean": share([not names_any_family(r["explanation"]) for r in distorted], distorted),
            "by_family": names_by_family(distorted),
            "examples": distorted[:6]}


def names_by_family(distorted: list[dict]) -> dict:
    """Per damage family: how many of its images the explanation names it on, and which other
    families it names instead (the confusions a total hides, e.g. JPEG called a deformation)."""
    out = {}
    for family in sorted({r["family"] for r in distorted}):
        rows = [r for r in distorted if r["family"] == family]
        instead = Counter(other for r in rows if not r["names_family"] for other in FAMILY_WORDS
                          if other != family and names_family(r["explanation"], other))
        out[family] = {"images": len(rows), "named": sum(bool(r["names_family"]) for r in rows),
                       "instead": dict(instead.most_common())}
    return out


def score_miss_by_group(predicted, target, groups: list[str]) -> dict:
    """Where a score's miss lies: the scores mapped linearly onto the target's scale, then per group
    (a test photo, a distortion) its size, mean target, mean residual (target − mapped score: > 0,
    the model scores the group too low) and its own (SRCC+PLCC)/2; and the whole set's figure with
    each group's mean residual taken away — what calibrating the groups alone would reach."""
    from qsit.metrics import correlations

    def mean_metric(p, t) -> float | None:
        if len(p) < 3 or np.ptp(p) == 0 or np.ptp(t) == 0:
            return None
        c = correlations(p, t)
        return round((c["srcc"] + c["plcc"]) / 2, 4)

    p, t = np.asarray(predicted, float), np.asarray(target, float)
    slope, intercept = np.polyfit(p, t, 1)
    mapped = slope * p + intercept
    residual = t - mapped
    names = np.asarray(groups)
    per, calibrated = {}, mapped.copy()
    for g in sorted(set(groups)):
        idx = names == g
        per[g] = {"n": int(idx.sum()), "target": round(float(t[idx].mean()), 2),
                  "residual": round(float(residual[idx].mean()), 2), "within": mean_metric(p[idx], t[idx])}
        calibrated[idx] += residual[idx].mean()
    return {"overall": mean_metric(p, t), "offsets_removed": mean_metric(calibrated, t), "groups": per}
