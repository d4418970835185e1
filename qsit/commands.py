"""What every package's subcommands share: model arguments, loading the model, image arguments.

``qsit/cli.py``, ``evals/cli.py`` and ``mixing/cli.py`` build on this module and never on each
other, so no command module imports another.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qsit.assessor import MODEL_ENV, resolve_model


class CLIError(Exception):
    """A problem to report to the user in one line."""


def say(text: str) -> None:
    print(f"qsit: {text}", file=sys.stderr)


def add_model_args(p: argparse.ArgumentParser, with_task: bool = True) -> None:
    """The model options; ``with_task`` only where a scoring task means something."""
    from qsit.prompts import PRESETS

    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"checkpoint directory or hub id (default: ${MODEL_ENV}, then the embedded model)")
    g.add_argument("--preset", choices=list(PRESETS),
                   help="prompt preset (default: the one the checkpoint was trained with, else qsit)")
    if with_task:
        g.add_argument("--task", default="quality", help="scoring task of the preset (quality, aesthetics)")
    g.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--dtype", help="bfloat16, float16 or float32 (default: bf16 on GPU, fp32 on CPU)")
    g.add_argument("--max-pixels", type=int, help="refuse images larger than this (default: Pillow's limit)")
    g.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with the checkpoint")


def add_views_arg(p: argparse.ArgumentParser) -> None:
    """``--views``: scores averaged over the image and its flips (``Assessor.score(views=)``)."""
    p.add_argument("--views", type=int, choices=range(1, 5), default=1, metavar="{1,2,3,4}",
                   help="average each score over the image and its flips: 2 adds the mirror image, 4 the "
                        "upside-down views too (default 1; N times the work)")


def load_assessor(args):
    """The Assessor the model arguments name; an unknown --task is refused before any work."""
    from qsit.assessor import Assessor

    model = resolve_model(args.model)
    say(f"loading {model} ...")
    assessor = Assessor.from_pretrained(
        model, device=args.device, dtype=args.dtype, preset=args.preset,
        trust_remote_code=args.trust_remote_code, max_pixels=args.max_pixels,
    )
    task = getattr(args, "task", None)
    if task is not None and task not in assessor.preset.tasks:
        raise CLIError(f"unknown --task {task!r}; the {assessor.preset.name} prompts have "
                       f"{', '.join(assessor.preset.tasks)}")
    return assessor


def expand_images(inputs, what: str) -> tuple[list[Path], int]:
    """Files, folders and globs → image paths; each input that matched nothing is reported."""
    from qsit.images import find_images

    paths, problems = find_images(inputs)
    for problem in problems:
        say(f"error: {problem}")
    if not paths:
        raise CLIError(f"no images to {what}")
    return paths, len(problems)
