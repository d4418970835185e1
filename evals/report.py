"""Joint score + explanation reports: JSON, Markdown, and self-contained HTML.

One renderer for every place a report is shown or saved (``qsit assess``, the
UI's download button, ``qsit eval report``). HTML embeds thumbnails and draws
the level-probability bars as inline SVG, so the file reads without a server.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence

from qsit.levels import LEVELS

FORMATS = ("json", "markdown", "html")


def render(assessments: Sequence, fmt: str = "markdown", thumbnails: Sequence | None = None) -> str:
    """Render assessments (``qsit.Assessment``) in ``fmt``; ``thumbnails`` are PIL images or None."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps([a.to_dict() for a in assessments], indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        return "\n".join(_markdown_one(a) for a in assessments)
    thumbs = list(thumbnails) if thumbnails is not None else [None] * len(assessments)
    return _html_page([_html_one(a, t) for a, t in zip(assessments, thumbs, strict=True)])


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
        ".meta{color:#777;font-size:.85em}"
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>qsit report</title>'
        f"<style>{style}</style></head><body><h1>Image quality report</h1>{''.join(sections)}</body></html>\n"
    )
