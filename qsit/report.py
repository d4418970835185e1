"""Joint score + explanation reports: JSON, Markdown, and self-contained HTML.

One renderer for every place a report is shown or saved (``qsit assess``, the
UI's download button, ``qsit eval report``) and the loop that feeds it. HTML embeds thumbnails and draws
the level-probability bars as inline SVG, so the file reads without a server.
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from collections.abc import Sequence

from qsit.levels import LEVELS

FORMATS = ("json", "markdown", "html")


def assess_images(assessor, paths: Sequence, *, task: str = "quality", question: str | None = None,
                  max_new_tokens: int = 256) -> tuple[list, list, list[str]]:
    """Assess each image in turn (score + explanation); the loop of ``qsit assess`` and ``qsit eval report``.

    Returns the assessments, their images (for thumbnails) and one message per image that could
    not be read; those are skipped, the rest go on. A bar shows progress over several images.
    """
    from tqdm.auto import tqdm

    from qsit.images import ImageLoadError

    assessments, images, failures = [], [], []
    for path in tqdm(paths, desc="assessing", unit="img", disable=len(paths) < 2):
        try:
            loaded = assessor.load(path)
        except ImageLoadError as e:
            failures.append(str(e))
            continue
        for note in loaded.notes:
            tqdm.write(f"qsit: note: {loaded.name}: {note}", file=sys.stderr)
        assessments.append(assessor.assess(loaded, task=task, question=question, max_new_tokens=max_new_tokens))
        images.append(loaded.image)
    return assessments, images, failures


def render(assessments: Sequence, fmt: str = "markdown", thumbnails: Sequence | None = None,
           ground_truth: dict[str, float] | None = None, summary: bool | None = None) -> str:
    """Render assessments (``qsit.Assessment``) in ``fmt``; ``thumbnails`` are PIL images or None.

    With several images (or ``summary=True``) a summary comes first: a table,
    the score histogram, and — when ``ground_truth`` maps image names to true
    scores — the predicted-vs-true scatter with its correlations.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
    with_summary = len(assessments) > 1 if summary is None else summary
    stats = _gt_stats(assessments, ground_truth) if ground_truth else None
    if fmt == "json":
        payload = [a.to_dict() for a in assessments]
        if with_summary or stats:
            return json.dumps({"assessments": payload, "summary": _summary_dict(assessments, stats)}, indent=2,
                              ensure_ascii=False) + "\n"
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        head = _markdown_summary(assessments, stats) if with_summary or stats else ""
        return head + "\n".join(_markdown_one(a) for a in assessments)
    thumbs = list(thumbnails) if thumbnails is not None else [None] * len(assessments)
    head = _html_summary(assessments, stats, ground_truth) if with_summary or stats else ""
    return _html_page([head] + [_html_one(a, t) for a, t in zip(assessments, thumbs, strict=True)])


def _gt_stats(assessments, ground_truth: dict[str, float]) -> dict:
    from qsit.metrics import correlations

    pairs = [(a.score, ground_truth[a.image]) for a in assessments if a.image in ground_truth]
    stats = {"matched": len(pairs), "of": len(assessments)}
    if len(pairs) >= 3:
        try:
            stats.update(correlations([p for p, _ in pairs], [g for _, g in pairs]))
        except ValueError as e:  # e.g. constant scores: say so in the report instead of failing it
            stats["error"] = str(e)
    return stats


def agreement(assessments) -> dict:
    """How often the level an explanation concludes with equals the scored level."""
    from qsit.levels import concluded_level

    concluded = [(concluded_level(a.explanation or ""), a.level) for a in assessments]
    stated = [(c, lv) for c, lv in concluded if c is not None]
    return {"agree": sum(c == lv for c, lv in stated), "stated": len(stated), "of": len(assessments),
            "rate": sum(c == lv for c, lv in stated) / len(stated) if stated else None}


def _summary_dict(assessments, stats) -> dict:
    scores = [a.score for a in assessments]
    counts = {level: sum(a.level == level for a in assessments) for level in LEVELS}
    out = {"images": len(assessments), "mean_score": sum(scores) / len(scores) if scores else None,
           "levels": counts, "score_explanation_agreement": agreement(assessments)}
    if stats:
        out["ground_truth"] = stats
    return out


def _stats_line(stats) -> str:
    if not stats:
        return ""
    if "srcc" in stats:
        warning = f" Warning: {stats['warning']}." if stats.get("warning") else ""
        return (f"Against ground truth ({stats['matched']} of {stats['of']} images): SRCC {stats['srcc']:.3f}, "
                f"PLCC {stats['plcc']:.3f}, KRCC {stats['krcc']:.3f}.{warning}")
    return f"Ground truth matched {stats['matched']} of {stats['of']} images; {stats.get('error', 'too few for correlations')}."


def _agreement_line(summary: dict) -> str:
    ag = summary["score_explanation_agreement"]
    if not ag["stated"]:
        return ""
    return (f"Score and explanation agree (the explanation's concluding level equals the scored level) on "
            f"{ag['agree']} of {ag['stated']} images that state a level. ")


def _markdown_summary(assessments, stats) -> str:
    d = _summary_dict(assessments, stats)
    rows = "\n".join(f"| {a.image} | {a.score:.3f} | {a.level} |" for a in assessments)
    levels = ", ".join(f"{k} {v}" for k, v in d["levels"].items())
    return (f"# Image quality report\n\n{d['images']} images, mean score {d['mean_score']:.3f}; levels: {levels}. "
            f"{_agreement_line(d)}{_stats_line(stats)}\n\n| image | score | level |\n|---|---|---|\n{rows}\n\n")


def _png_data_url(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _html_summary(assessments, stats, ground_truth) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    esc = html.escape
    scores = [a.score for a in assessments]
    fig, ax = plt.subplots(figsize=(4.5, 2.6))
    ax.hist(scores, bins=[1 + 0.25 * i for i in range(17)], color="#4a7bd0")
    ax.set_xlabel("score (1 bad .. 5 excellent)")
    ax.set_ylabel("images")
    fig.tight_layout()
    plots = f'<img alt="score histogram" src="{_png_data_url(fig)}">'
    if stats and "srcc" in stats:
        pairs = [(a.score, ground_truth[a.image]) for a in assessments if a.image in ground_truth]
        fig, ax = plt.subplots(figsize=(3.6, 3.2))
        ax.scatter([g for _, g in pairs], [p for p, _ in pairs], s=12, alpha=0.7)
        ax.set_xlabel("ground truth")
        ax.set_ylabel("predicted score")
        ax.set_title(f"SRCC {stats['srcc']:.3f}  PLCC {stats['plcc']:.3f}", fontsize=9)
        fig.tight_layout()
        plots += f'<img alt="predicted vs ground truth" src="{_png_data_url(fig)}">'
    rows = "".join(f"<tr><td>{esc(a.image)}</td><td>{a.score:.3f}</td><td>{esc(a.level)}</td></tr>"
                   for a in assessments)
    d = _summary_dict(assessments, stats)
    return (f'<section class="summary"><p>{d["images"]} images, mean score {d["mean_score"]:.3f}. '
            f"{esc(_agreement_line(d))}{esc(_stats_line(stats))}</p><div class=\"row\">{plots}</div>"
            f"<table><tr><th>image</th><th>score</th><th>level</th></tr>{rows}</table></section>")


def _markdown_one(a) -> str:
    lo, hi = a.score_range
    bars = "\n".join(
        f"| {level} | {p:.3f} | {'█' * round(p * 20)} |" for level, p in a.probabilities.items()
    )
    notes = "".join(f"\n> note: {n}" for n in a.notes)
    return (
        f"## {a.image}\n\n"
        f"**Score:** {a.score:.3f} on {lo:g}..{hi:g} (**{a.level}**), spread ±{a.spread:.3f}"
        f"{notes}\n\n"
        f"| level | probability | |\n|---|---|---|\n{bars}\n\n"
        f"**Explanation.** {a.explanation or '(the model gave no text)'}\n\n"
        f"<sub>model `{a.model}` · prompts `{a.prompt_version}` · task {a.task}</sub>\n"
    )


def probability_bars_svg(probabilities: dict[str, float], width: int = 260, bar_height: int = 16) -> str:
    """A small horizontal bar chart of level probabilities as inline SVG."""
    label_w, gap = 70, 4
    rows = []
    for i, level in enumerate(LEVELS):
        p = float(probabilities.get(level, 0.0))
        y = i * (bar_height + gap)
        w = max(0.0, p) * (width - label_w - 50)
        rows.append(
            f'<text x="0" y="{y + bar_height - 4}" font-size="12">{level}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="#4a7bd0"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_height - 4}" font-size="11">{p:.2f}</text>'
        )
    height = len(LEVELS) * (bar_height + gap)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="level probabilities">{"".join(rows)}</svg>'
    )


def thumbnail_data_url(image, size: int = 256) -> str:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _html_one(a, thumbnail) -> str:
    esc = html.escape
    img = f'<img src="{thumbnail_data_url(thumbnail)}" alt="{esc(a.image)}">' if thumbnail is not None else ""
    notes = "".join(f'<p class="note">note: {esc(n)}</p>' for n in a.notes)
    lo, hi = a.score_range
    return (
        f'<section class="item"><h2>{esc(a.image)}</h2><div class="row">{img}<div>'
        f'<p class="score"><b>{a.score:.3f}</b> on {lo:g}..{hi:g} — <b>{esc(a.level)}</b> '
        f"(spread ±{a.spread:.3f})</p>{probability_bars_svg(a.probabilities)}{notes}</div></div>"
        f'<p class="explanation">{esc(a.explanation) or "<i>(the model gave no text)</i>"}</p>'
        f'<p class="meta">model <code>{esc(a.model)}</code> · prompts <code>{esc(a.prompt_version)}</code> '
        f"· task {esc(a.task)}</p></section>"
    )


def _html_page(sections: list[str]) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}"
        ".item{border-bottom:1px solid #ddd;padding:1em 0}.row{display:flex;gap:1.5em;align-items:flex-start}"
        ".row img{max-width:256px;border-radius:4px}.score{font-size:1.2em}.note{color:#a60}"
        ".meta{color:#777;font-size:.85em}table{border-collapse:collapse}td,th{padding:2px 8px;"
        "border-bottom:1px solid #eee;text-align:left}"
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>qsit report</title>'
        f"<style>{style}</style></head><body><h1>Image quality report</h1>{''.join(sections)}</body></html>\n"
    )
