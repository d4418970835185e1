"""One rendering of a conversation for both training and inference.

Each user turn is rendered alone by the checkpoint's own chat template with
the generation prompt (so a one-turn prompt is exactly what the template
gives, as in the published scripts); each assistant turn is its text plus the
template's end-of-turn marker. Training targets are the assistant segments.
Rendering past assistant turns through the template instead would train on
"<|im_start|>assistant \\n…" while prompting with "<|im_start|>assistant\\n"
(the hub template's quirk); this way the two always match.
"""

from __future__ import annotations

from qsit.prompts import text_turn, user_turn
from qsit.records import IMAGE_MARKER

_PROBE = "\u2063qsit-probe\u2063"


def end_of_turn(processor) -> str:
    """The text the template puts after an assistant message (e.g. "<|im_end|>")."""
    rendered = processor.apply_chat_template([text_turn("user", "hi"), text_turn("assistant", _PROBE)])
    tail = rendered.split(_PROBE, 1)[1]
    return tail.rstrip("\n") or (processor.tokenizer.eos_token or "")


def segments(processor, messages: list[dict]) -> list[tuple[str, bool]]:
    """(text, is_assistant_target) pieces; ``messages`` are role/content strings, "<image>" markers allowed."""
    eot = end_of_turn(processor)
    out = []
    for m in messages:
        if m["role"] == "user":
            text = m["content"]
            n_images = text.count(IMAGE_MARKER)
            text = text.replace(IMAGE_MARKER, "").strip()
            turn = user_turn(text, with_image=False)
            turn["content"] = [{"type": "image"}] * n_images + turn["content"]
            out.append((processor.apply_chat_template([turn], add_generation_prompt=True), False))
        elif m["role"] == "assistant":
            out.append((m["content"] + eot, True))
        else:
            raise ValueError(f"unsupported role {m['role']!r} (user and assistant only)")
    return out


def render_prompt(processor, messages: list[dict]) -> str:
    """The text a model continues: all turns rendered, the last one a user turn."""
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("a prompt must end with a user turn")
    return "".join(text for text, _ in segments(processor, messages))
