"""IQA correlations (paper Table IV): SRCC, PLCC, KRCC between predicted scores and MOS.

Like the official scripts, PLCC is plain Pearson on the raw predictions by
default; ``fit="logistic4"|"logistic5"`` first maps predictions through the
fitted logistic, as many IQA papers do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evals.common import SampleCache, default_image_root, resolve_image, write_results
from qsit.metrics import correlations
from qsit.records import SCORING


@dataclass(frozen=True)
class IQAItem:
    img_path: str
    gt: float


def load_iqa_list(path: str | Path) -> tuple[list[IQAItem], Path | None]:
    """A test list: Q-Bench A3 JSON (``img_path``, ``gt_score``), or a D1 build folder (its test split).

    Returns the items and, for a D1 folder, the image root its manifest names.
    """
    path = Path(path)
    if path.is_dir():
        from qsit.records import iter_jsonl

        manifest = json.loads((path / "manifest.json").read_text())
        prefix = manifest.get("image_prefix", "")
        items = [IQAItem(r.images[0].removeprefix(f"{prefix}/") if prefix else r.images[0], float(r.meta["mos"]))
                 for r in iter_jsonl(path / "records.jsonl") if r.kind == SCORING and r.split == "test"]
        return items, Path(manifest["image_root"])
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{img_path, gt_score}}")
    items = []
    for i, d in enumerate(data):
        try:
            items.append(IQAItem(str(d["img_path"]), float(d["gt_score"])))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: item {i} needs img_path and a numeric gt_score") from None
    return items, None


def run_iqa(assessor, test_sets: dict[str, str], image_root: str | Path | None, out_dir: str | Path,
            trained_on: tuple[str, ...] = (), batch_size: int = 8, fit: str | None = None,
            progress: bool = True, task: str = "quality", views: int = 1) -> dict:
    """Score every test set (resuming from the cache), correlate, plot, and write the tables.
    ``views`` > 1 scores each image as the mean over it and its flips (``Assessor.score``)."""
    out = Path(out_dir)
    cache = SampleCache(out / "iqa_cache.jsonl")
    results, samples = {}, []
    for name, path in test_sets.items():
        items, root = load_iqa_list(path)
        root = root or Path(image_root or default_image_root(path))
        seen = f"|views{views}" if views > 1 else ""  # a view-averaged score is another number
        keys = [f"{assessor.cache_id}|{assessor.preset.version}|{task}{seen}|{name}|{it.img_path}" for it in items]
        todo = [(k, it) for k, it in zip(keys, items, strict=True) if k not in cache]
        missing = []
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            ok = []
            for k, it in chunk:
                p = resolve_image(root, it.img_path)
                if p.is_file():
                    ok.append((k, it, p))
                else:
                    missing.append(it.img_path)
            scores = assessor.score([p for _, _, p in ok], task=task, batch_size=batch_size, views=views)
            for (k, _it, _p), r in zip(ok, scores, strict=True):
                cache.put(k, r.to_dict())
        scored = [(it, cache.get(k)) for k, it in zip(keys, items, strict=True) if k in cache]
        pred = [s["score"] for _, s in scored]
        gt = [it.gt for it, _ in scored]
        if missing and len(scored) < 3:
            raise FileNotFoundError(f"test set {name}: {len(missing)} of {len(items)} images not found under "
                                    f"{root}, e.g. {resolve_image(root, missing[0])}; pass --images ROOT")
        results[name] = {**correlations(pred, gt, fit=fit), "cross_set": name not in trained_on,
                         "missing_images": missing}
        samples += [{"set": name, "img_path": it.img_path, "gt_score": it.gt, "score": s["score"],
                     "level": s["level"], "probabilities": s["probabilities"]} for it, s in scored]
        scatter_plot(pred, gt, results[name], out / f"iqa_scatter_{name}.png", title=name)
    avg = np.mean([(r["srcc"] + r["plcc"]) / 2 for r in results.values()])
    summary = {"sets": results, "average_srcc_plcc": float(avg), "model": assessor.model_id,
               "prompt_version": assessor.preset.version, "task": task, "fit": fit, "views": views}
    write_results(out, "iqa", summary, iqa_markdown(summary), samples)
    return summary


def iqa_markdown(summary: dict) -> str:
    sets = summary["sets"]
    head = "| model | " + " | ".join(f"{n}{'†' if r['cross_set'] else ''}" for n, r in sets.items()) + " | avg |"
    sep = "|---|" + "---|" * (len(sets) + 1)
    cells = " | ".join(f"{r['srcc']:.3f}/{r['plcc']:.3f}" for r in sets.values())
    row = f"| {summary['model']} | {cells} | {summary['average_srcc_plcc']:.3f} |"
    note = ("\nSRCC/PLCC per test set; † marks sets the model was not trained on (cross-set); "
            "avg is the mean of (SRCC+PLCC)/2, as in the paper. PLCC "
            + (f"after a {summary['fit']} fit." if summary["fit"] else "on raw predictions (no fit).")
            + (f" Each score is the mean over {summary['views']} views (the image and its flips)."
               if summary.get("views", 1) > 1 else "") + "\n")
    warnings = "".join(f"\n**Warning ({n}):** {r['warning']}.\n" for n, r in sets.items() if r.get("warning"))
    return "\n".join([head, sep, row]) + "\n" + note + warnings


def scatter_plot(pred, gt, stats: dict, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(gt, pred, s=10, alpha=0.6)
    ax.set_xlabel("ground truth")
    ax.set_ylabel("predicted score (1..5)")
    ax.set_title(f"{title}  SRCC {stats['srcc']:.3f}  PLCC {stats['plcc']:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
