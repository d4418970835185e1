"""The default model's targets, measured on a corpus's held-out test sets and on an unseen photo.

    python scripts/evaluate_default_model.py --corpus data/qsit-tiny-corpus --out runs/qsit-tiny/eval
        [--model DIR] [--explain-sample N] [--photo PATH] [--unseen-photos DIR]

Measures (pseudo-MOS from synthetic distortions, not human opinion):

* scoring: SRCC, PLCC and their mean against the pseudo-MOS (``tests/iqa.json``), and where
  the miss lies: per test photo and per damage, the mean offset and the ranking within it;
* LLVisionQA-format accuracy, generation protocol, unparsed counted as wrong (and, as
  diagnostics: per question type, read by the letter and by the option the answer states in
  words; for yes-no questions, per order of the options, and how often "yes" is said when the
  named damage is there and when it is not);
* on every test image (or a seeded sample), how often the explanation names the family of a
  distorted image's damage, and how often the level it concludes with equals the scored level
  (agreement, pristine images included), and how often a pristine or a distorted image is
  called clean (its explanation names no damage);
* on a photo in none of the corpus sources (matplotlib's Grace Hopper portrait by default),
  whether blur, noise, JPEG and darkening at three severities each score below the clean photo
  and monotonically lower with severity (noise, drawn at random, as the mean of 8 draws);
  with ``--unseen-photos DIR``, the same on every photo of a folder, counted (not a target:
  one photo can pass by luck);
* how much of the score is colour: the colourful pristine test images scored as they are and in
  grey, whose luminance (all the pseudo-MOS compares) is the same (not a target).

Writes ``targets.json``, ``targets.md``, a scatter of predicted score vs pseudo-MOS, a score
histogram per level of the pseudo-MOS, and the monotonicity plots. Evaluation caches (scores,
answers) live beside them, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from evals.targets import (
    MONOTONIC_SEVERITIES,
    colour_reliance,
    default_unseen_photo,
    explanation_checks,
    letter_and_words,
    monotonicity,
    score_miss_by_group,
    yes_no_by_option_order,
    yes_no_confusion,
)


def plot_monotonic(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for key, d in result["distortions"].items():
        [line] = ax.plot([0, *MONOTONIC_SEVERITIES], [result["clean"], *d["scores"]], "o-", label=key)
        for sev, draws in zip(MONOTONIC_SEVERITIES, d.get("draw_scores", []), strict=False):
            ax.plot([sev] * len(draws), draws, ".", color=line.get_color(), alpha=0.35, ms=4)
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("score (1..5)")
    ax.set_title(f"unseen photo: {Path(result['photo']).name}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_histogram(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qsit.levels import LEVELS, scores_to_levels

    levels = scores_to_levels([s["gt_score"] for s in samples])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for level in LEVELS:
        xs = [s["score"] for s, lv in zip(samples, levels, strict=True) if lv == level]
        if xs:
            ax.hist(xs, bins=np.linspace(1, 5, 33), alpha=0.5, label=f"pseudo-MOS level {level}")
    ax.set_xlabel("predicted score (1..5)")
    ax.set_ylabel("test images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(t: dict) -> str:
    m = t["monotonicity"]
    lines = [
        "| target | measured | goal |", "|---|---|---|",
        f"| scoring (SRCC+PLCC)/2 vs pseudo-MOS | {t['iqa']['mean']:.3f} (SRCC {t['iqa']['srcc']:.3f}, "
        f"PLCC {t['iqa']['plcc']:.3f}, {t['iqa']['n']} images) | ≥ 0.85 |",
        f"| LLVisionQA-format accuracy (generate, unparsed = wrong) | {100 * t['llvisionqa']['accuracy']:.1f} % "
        f"({t['llvisionqa']['unparsed']} unparsed of {t['llvisionqa']['n']}) | ≥ 75 % |",
        f"| explanation names the distortion family | {100 * t['explain']['names_family']:.1f} % "
        f"({t['explain']['distorted']} distorted images) | ≥ 70 % |",
        f"| explanation's concluding level = scored level | {100 * t['explain']['agreement']:.1f} % "
        f"({t['explain']['images']} images) | ≥ 90 % |",
        f"| unseen photo: each distortion monotonically below clean | "
        f"{sum(d['monotonic'] for d in m['distortions'].values())}/{len(m['distortions'])} "
        f"({', '.join(k for k, d in m['distortions'].items() if d['monotonic']) or 'none'}) | 4/4 |",
    ]
    random_ones = {k: d for k, d in m["distortions"].items() if "draw_scores" in d}
    if random_ones:
        lines.append(f"\nUnseen photo: a random damage scores as the mean of {m['draws']} draws; single draws "
                     "with a monotonic ladder: " + ", ".join(f"{k} {100 * d['draws_monotonic']:.0f} %"
                                                             for k, d in random_ones.items()) + ".")
    e = t["explain"]
    if e.get("pristine"):
        lines.append(f"\nNot a target: the explanation calls {100 * e['pristine_called_clean']:.1f} % of the "
                     f"{e['pristine']} pristine test images clean (names no damage), and "
                     f"{100 * e['distorted_called_clean']:.1f} % of the {e['distorted']} distorted ones.")
    if e.get("by_family"):
        def named(family: str, f: dict) -> str:
            instead = ", ".join(f"{k} {n}" for k, n in f["instead"].items())
            return f"{family} {f['named']}/{f['images']}" + (f" (else {instead})" if instead else "")

        lines.append("\nBy family, the explanation names the damage on: "
                     + ", ".join(named(family, f) for family, f in e["by_family"].items()) + ".")
    many = t.get("unseen_photos")
    if many:
        lines.append(f"\nNot a target: on {many['photos']} more photos in none of the sources, all four distortions "
                     f"fall monotonically below clean on {many['all_monotonic']}; per distortion "
                     + ", ".join(f"{k} {n}" for k, n in many["monotonic"].items())
                     + f"; clean scores {many['clean']['min']:.2f}–{many['clean']['max']:.2f} "
                     f"(median {many['clean']['median']:.2f}).")
    by_photo, by_damage = t["iqa"].get("by_photo"), t["iqa"].get("by_damage")
    if by_photo and by_damage:
        pristine = by_damage["groups"].get("pristine")
        lines.append(f"\nNot a target: the score with each test photo's mean offset taken away would reach "
                     f"{by_photo['offsets_removed']:.3f}, with each damage's {by_damage['offsets_removed']:.3f}"
                     + (f"; pristine images sit {pristine['residual']:+.1f} pseudo-MOS from where their scores put "
                        "them" if pristine else "") + " (`iqa.by_photo`, `iqa.by_damage` in targets.json).")
    colour = t.get("colour")
    if colour and colour["n"]:
        lines.append(f"\nNot a target: the {colour['n']} colourful pristine test images score {colour['colour']:.2f} in "
                     f"colour and {colour['grey']:.2f} in grey ({colour['difference']:+.2f}), though grey keeps the "
                     "luminance their pseudo-MOS compares (`colour` in targets.json).")
    picked = t["llvisionqa"].get("likelihood_of_answer")
    if picked:
        lines.append(f"\nNot a target: LLVisionQA by the likelihood of each whole answer (the option the model "
                     f"would pick if it kept to the list) {100 * picked['accuracy']:.1f} %.")
    return "\n".join(lines) + "\n"


def score_misses(samples: list[dict]) -> dict:
    """The test score's miss by source photo and by damage (``evals.targets.score_miss_by_group``)."""
    from data_builders.synthetic import damage_in_name, photo_in_path

    if len(samples) < 3:
        return {}
    pred, mos = [s["score"] for s in samples], [s["gt_score"] for s in samples]
    photos = [photo_in_path(s["img_path"]) for s in samples]
    damages = [damage_in_name(s["img_path"])[0] or "pristine" for s in samples]
    return {"by_photo": score_miss_by_group(pred, mos, photos), "by_damage": score_miss_by_group(pred, mos, damages)}


def pristine_test_images(samples: list[dict], corpus: Path) -> list[Path]:
    """The undamaged images among the scored test images (named by the corpus's rule, as ``score_misses`` reads it)."""
    from data_builders.synthetic import damage_in_name

    return [corpus / s["img_path"] for s in samples if damage_in_name(s["img_path"])[0] is None]


def photos_in(folder: Path) -> list[Path]:
    """The image files of a folder, or an error that names what is wrong with it."""
    from qsit.images import find_images

    photos, problems = find_images([folder], recursive=False)
    if problems:
        raise SystemExit(f"--unseen-photos: {'; '.join(problems)}")
    return photos


def unseen_photos_check(assessor, folder: Path, out: Path) -> dict:
    """The unseen-photo check on every photo of a folder: per-photo results and their summary."""
    from tqdm.auto import tqdm

    from evals.targets import monotonicity_summary

    results = [monotonicity(assessor, p) for p in tqdm(photos_in(folder), desc="unseen photos", unit="photo")]
    plot_unseen_photos(results, out / "unseen_photos.png")
    return {"folder": str(folder), **monotonicity_summary(results),
            "per_photo": {Path(r["photo"]).name: {"clean": r["clean"],
                                                 **{k: d["scores"] for k, d in r["distortions"].items()}}
                          for r in results}}


def plot_unseen_photos(results: list[dict], path: Path) -> None:
    """Each distortion's ladder minus the clean photo's score, one thin line a photo, the median bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results[0]["distortions"])
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.9), sharey=True)
    xs = [0, *MONOTONIC_SEVERITIES]
    for ax, key in zip(axes, keys, strict=True):
        drops = np.array([[0.0, *(s - r["clean"] for s in r["distortions"][key]["scores"])] for r in results])
        falling = [r["distortions"][key]["monotonic"] for r in results]
        for row, ok in zip(drops, falling, strict=True):
            ax.plot(xs, row, color="tab:blue" if ok else "tab:red", lw=0.7, alpha=0.5)
        ax.plot(xs, np.median(drops, axis=0), "k-o", lw=2, ms=3)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(f"{key}: {sum(falling)}/{len(results)}", fontsize=9)
        ax.set_xlabel("severity")
    axes[0].set_ylabel("score − clean score")
    fig.suptitle(f"{len(results)} photos in none of the sources (red: not falling monotonically)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def test_list(path: Path, out: Path, limit: int | None) -> Path:
    """The test list itself, or a seeded sample of it written beside the results."""
    if not limit:
        return path
    import random

    items = json.loads(path.read_text())
    sample = random.Random(0).sample(items, min(limit, len(items)))
    target = out / f"sample_{path.name}"
    target.write_text(json.dumps(sample))
    return target


def main(argv=None) -> int:
    from evals.iqa import run_iqa
    from evals.llvisionqa import load_questions, run_llvisionqa
    from qsit.assessor import Assessor, resolve_model
    from qsit.cli import quiet_libraries

    quiet_libraries()  # qsit's own lines and bars, as in `qsit` itself
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="a `qsit build synthetic` folder")
    p.add_argument("--model", help="checkpoint (default: the embedded default model)")
    p.add_argument("--out", required=True)
    p.add_argument("--explain-sample", type=int, help="explain a seeded sample of this many test images "
                   "(default: all of them)")
    p.add_argument("--photo", help="a photo in none of the corpus sources (default: Grace Hopper)")
    p.add_argument("--unseen-photos", help="a folder of more photos in none of the corpus sources: the "
                   "unseen-photo check on each of them, summarised (not a target)")
    p.add_argument("--limit", type=int, help="a seeded sample of this many test images per set (a quick check)")
    args = p.parse_args(argv)
    corpus, out = Path(args.corpus), Path(args.out)
    if args.unseen_photos:
        photos_in(Path(args.unseen_photos))  # a wrong folder fails now, not after the whole evaluation
    out.mkdir(parents=True, exist_ok=True)
    assessor = Assessor.from_pretrained(resolve_model(args.model), device="cpu")
    iqa_list, qa_list = (test_list(corpus / "tests" / name, out, args.limit) for name in ("iqa.json", "llvisionqa.json"))

    iqa = run_iqa(assessor, {"synthetic": str(iqa_list)}, corpus, out)["sets"]["synthetic"]
    samples = [json.loads(line) for line in (out / "iqa_samples.jsonl").open()] \
        if (out / "iqa_samples.jsonl").is_file() else []
    if samples:
        plot_histogram(samples, out / "score_histogram.png")
    questions, _ = load_questions(qa_list, corpus)
    # Generation is the target's protocol; the likelihood of each whole answer shows what the model
    # would pick if it kept to the options (it answers in words, so the letter's likelihood is chance).
    qa_both = run_llvisionqa(assessor, questions, corpus, out, mode="both", likelihood_of="answer")
    qa, picked = qa_both["generate"], qa_both["likelihood"]
    qa_samples = [json.loads(line) for line in (out / "llvisionqa_samples.jsonl").open()]
    explain = explanation_checks(assessor, corpus, out, args.explain_sample)
    colour = colour_reliance(assessor, pristine_test_images(samples, corpus))
    mono = monotonicity(assessor, Path(args.photo) if args.photo else default_unseen_photo())
    plot_monotonic(mono, out / "monotonic.png")
    if args.unseen_photos:
        many = unseen_photos_check(assessor, Path(args.unseen_photos), out)
    targets = {
        "model": assessor.model_id,
        "iqa": {"srcc": iqa["srcc"], "plcc": iqa["plcc"], "mean": (iqa["srcc"] + iqa["plcc"]) / 2, "n": iqa["n"],
                **score_misses(samples)},
        "llvisionqa": {"accuracy": qa["overall"]["accuracy"], "unparsed": qa["unparsed"], "n": qa["overall"]["n"],
                       "by_type": {k: v["accuracy"] for k, v in qa["by_type"].items()},
                       "unparsed_by_type": qa["unparsed_by_type"],
                       "yes_no_by_option_order": yes_no_by_option_order(qa_samples),
                       "by_letter_and_words": letter_and_words(qa_samples),
                       "yes_no_confusion": yes_no_confusion(qa_samples),
                       "likelihood_of_answer": {"accuracy": picked["overall"]["accuracy"],
                                                "by_type": {k: v["accuracy"] for k, v in picked["by_type"].items()}}},
        "explain": explain, "monotonicity": mono, "colour": colour,
    }
    if args.unseen_photos:
        targets["unseen_photos"] = many
    (out / "targets.json").write_text(json.dumps(targets, indent=2) + "\n")
    (out / "targets.md").write_text(markdown(targets))
    print(markdown(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
