"""Prompts are data: every wording the model is trained or asked with lives here.

A *preset* bundles the scoring prompts (one per task: quality, aesthetics) and
the interpreting prompts, under a version string that travels with every
result, so a score can always be traced to the exact words that produced it.

Presets:

* ``qsit`` (default) — the Q-SiT training conversation: the prefix sentence
  "Assume you are an image quality evaluator." tells scoring turns from
  interpreting turns; answer "The quality of the image is {level}.".
* ``qsit-official`` — the published Q-SiT inference script, word for word: the
  longer instruction listing the five categories, the answer prefix
  "The quality of this image is " (trailing space) and capitalised levels. Use it
  with the released Q-SiT weights to score as their authors do.
* ``qalign`` — Q-Align's scorer prompts (no prefix sentence).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from qsit.levels import LEVELS

OPTION_LETTERS = "ABCD"


@dataclass(frozen=True)
class ScoringPrompt:
    """One scoring conversation: the user's question and the assistant's answer prefix."""

    question: str
    answer_prefix: str
    level_words: tuple[str, ...] = LEVELS
    """The level words as the model writes them after the prefix, low → high."""

    def answer(self, level_index: int) -> str:
        """The full training answer for a level, e.g. "The quality of the image is good."."""
        sep = "" if self.answer_prefix[-1:].isspace() else " "
        return f"{self.answer_prefix}{sep}{self.level_words[level_index]}."


@dataclass(frozen=True)
class PromptPreset:
    name: str
    version: str
    summary: str
    scoring: Mapping[str, ScoringPrompt]
    describe_question: str
    """The default interpreting question: a free-text quality description."""
    tasks: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "scoring", MappingProxyType(dict(self.scoring)))
        object.__setattr__(self, "tasks", tuple(self.scoring))

    def scoring_prompt(self, task: str) -> ScoringPrompt:
        if task not in self.scoring:
            raise ValueError(
                f"preset {self.name!r} has no scoring task {task!r}; tasks: {', '.join(self.tasks)}"
            )
        return self.scoring[task]


QSIT_PREFIX_SENTENCE = "Assume you are an image quality evaluator."

PRESETS: Mapping[str, PromptPreset] = MappingProxyType(
    {
        "qsit": PromptPreset(
            name="qsit",
            version="qsit-1",
            summary="Q-SiT training conversation (default)",
            scoring={
                "quality": ScoringPrompt(
                    question=f"{QSIT_PREFIX_SENTENCE} How would you rate the quality of this image?",
                    answer_prefix="The quality of the image is",
                ),
                "aesthetics": ScoringPrompt(
                    question="Assume you are an image aesthetics evaluator. How is the aesthetics of the image?",
                    answer_prefix="The aesthetics of the image is",
                ),
            },
            describe_question="Describe and evaluate the quality of the image.",
        ),
        "qsit-official": PromptPreset(
            name="qsit-official",
            version="qsit-official-1",
            summary="the published Q-SiT inference script, word for word",
            scoring={
                "quality": ScoringPrompt(
                    question=(
                        "Assume you are an image quality evaluator. \n"
                        "Your rating should be chosen from the following five categories: "
                        "Excellent, Good, Fair, Poor, and Bad (from high to low). \n"
                        "How would you rate the quality of this image?"
                    ),
                    answer_prefix="The quality of this image is ",
                    level_words=tuple(w.capitalize() for w in LEVELS),
                ),
            },
            describe_question="Describe and evaluate the quality of the image.",
        ),
        "qalign": PromptPreset(
            name="qalign",
            version="qalign-1",
            summary="Q-Align scorer prompts",
            scoring={
                "quality": ScoringPrompt(
                    question="How would you rate the quality of this image?",
                    answer_prefix="The quality of the image is",
                ),
                "aesthetics": ScoringPrompt(
                    question="How would you rate the aesthetics of this image?",
                    answer_prefix="The aesthetics of the image is",
                ),
            },
            describe_question="Describe and evaluate the quality of the image.",
        ),
    }
)

DEFAULT_PRESET = "qsit"


def get_preset(name: str) -> PromptPreset:
    """Look a preset up by name; an unknown name lists the close matches."""
    from qsit.suggest import did_you_mean

    if name in PRESETS:
        return PRESETS[name]
    raise ValueError(f"unknown prompt preset {name!r}.{did_you_mean(name, PRESETS)}")


QUESTION_TYPES = ("yes-no", "what", "how")
"""Kinds of closed question about an image; the index is Q-Bench's ``type`` code."""


@dataclass(frozen=True)
class Question:
    """A closed question about an image: what the D2 builder writes and LLVisionQA asks."""

    type: str
    """One of ``QUESTION_TYPES``."""
    question: str
    answer: str | None
    """The right option (None where a benchmark split publishes no answers)."""
    options: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return multiple_choice_question(self.question, self.options)

    @property
    def correct_letter(self) -> str | None:
        return None if self.answer is None else OPTION_LETTERS[self.options.index(self.answer)]


def multiple_choice_question(question: str, candidates: Sequence[str]) -> str:
    """The LLVisionQA prompt of the Q-SiT script: the question, then "A. option" lines."""
    if not 2 <= len(candidates) <= len(OPTION_LETTERS):
        raise ValueError(f"need 2 to {len(OPTION_LETTERS)} candidates, got {len(candidates)}")
    lines = [question] + [f"{letter}. {c}" for letter, c in zip(OPTION_LETTERS, candidates, strict=False)]
    return "\n".join(lines) + "\n"


def user_turn(text: str, with_image: bool = True) -> dict:
    """A user message in the structured form processors' chat templates take."""
    content = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def text_turn(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}
