"""The ``qsit`` command: one entry point, one subcommand per job.

User mistakes (a missing file, a bad image, an unknown model) end in a
one-line ``qsit: error: ...`` and a non-zero exit, never a traceback; set
QSIT_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from pathlib import Path

from qsit.assessor import MODEL_ENV, views_in_notes
from qsit.commands import CLIError, add_model_args, add_views_arg, expand_images, load_assessor
from qsit.levels import LEVELS


# ---------------------------------------------------------------- assess
def cmd_assess(args) -> int:
    from qsit.report import assess_images, render

    paths, failed = expand_images(args.images, "assess")
    assessor = load_assessor(args)
    assessments, thumbs, failures = assess_images(
        assessor, paths, task=args.task, question=args.question, max_new_tokens=args.max_new_tokens)
    for problem in failures:
        print(f"qsit: error: {problem}", file=sys.stderr)
    failed += len(failures)
    if assessments:
        text = render(assessments, args.format, thumbnails=thumbs, summary=False)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"qsit: wrote {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(text)
    return 1 if failed else 0


# ---------------------------------------------------------------- score
SCORE_COLUMNS = ["path", "score", "level", *[f"p_{level}" for level in LEVELS], "spread", "notes", "error"]


def read_rows(out: Path) -> list[dict]:
    """The rows of an existing scores CSV (none if it does not exist yet)."""
    if not out.exists() or out.stat().st_size == 0:
        return []
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != SCORE_COLUMNS:
            raise CLIError(f"{out} exists but is not a qsit scores file (columns {reader.fieldnames}); "
                           "choose another --out")
        return list(reader)


def drop_error_rows(out: Path, rows: list[dict]) -> None:
    """Rewrite the CSV without its error rows (atomically), so they are scored again."""
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SCORE_COLUMNS)
        writer.writeheader()
        writer.writerows(r for r in rows if not r["error"])
    os.replace(tmp, out)


def cmd_score(args) -> int:
    from tqdm.auto import tqdm

    from qsit.images import ImageLoadError

    paths, n_problems = expand_images(args.paths, "score")
    out = Path(args.out)
    rows = read_rows(out)
    errors = [r for r in rows if r["error"]]
    if args.retry_errors and errors:
        drop_error_rows(out, rows)
        rows = [r for r in rows if not r["error"]]
        print(f"qsit: retrying {len(errors)} image(s) that failed before", file=sys.stderr)
    written = {views_in_notes(r["notes"]) for r in rows if not r["error"]}
    if written and written != {args.views}:  # one file, one kind of score
        raise CLIError(f"{out} holds scores over {', '.join(map(str, sorted(written)))} view(s); pass --views "
                       f"{min(written)} to add to it, or choose another --out")
    done = {r["path"] for r in rows}
    todo = [p for p in paths if str(p) not in done]
    if not todo:
        hint = f" ({len(errors)} with errors; --retry-errors scores those again)" if errors and not args.retry_errors else ""
        print(f"qsit: all {len(paths)} images are already in {out}{hint}; nothing to score", file=sys.stderr)
        return 0
    if len(todo) < len(paths):
        print(f"qsit: {len(paths) - len(todo)} of {len(paths)} images already in {out}; scoring the other "
              f"{len(todo)}", file=sys.stderr)
    assessor = load_assessor(args)
    new_file = not out.exists() or out.stat().st_size == 0
    n_errors = 0
    with open(out, "a", newline="", encoding="utf-8") as f, tqdm(total=len(todo), unit="img", desc="scoring") as bar:
        writer = csv.DictWriter(f, fieldnames=SCORE_COLUMNS)
        if new_file:
            writer.writeheader()
        for start in range(0, len(todo), args.batch_size):
            rows, loaded = {}, []
            for path in todo[start:start + args.batch_size]:
                try:
                    loaded.append(assessor.load(path, name=str(path)))
                except ImageLoadError as e:
                    rows[str(path)] = {"path": str(path), "error": str(e)}
                    n_errors += 1
            for r in assessor.score(loaded, task=args.task, batch_size=args.batch_size, views=args.views):
                rows[r.image] = {
                    "path": r.image, "score": f"{r.score:.6f}", "level": r.level,
                    **{f"p_{k}": f"{v:.6f}" for k, v in r.probabilities.items()},
                    "spread": f"{r.spread:.6f}", "notes": "; ".join(r.notes), "error": "",
                }
            for path in todo[start:start + args.batch_size]:
                writer.writerow(rows[str(path)])
            f.flush()  # a crash or Ctrl-C loses at most the batch in flight
            bar.update(len(rows))
    print(f"qsit: scored {len(todo) - n_errors} images, {n_errors} unreadable; results in {out}", file=sys.stderr)
    return 1 if n_errors or n_problems else 0


# ---------------------------------------------------------------- serve / ui
def cmd_serve(args) -> int:
    from ui.server import ServerConfig, is_loopback, serve

    key = args.api_key or os.environ.get("QSIT_API_KEY")
    if not is_loopback(args.host) and not key:
        raise CLIError(f"binding to {args.host} without an API key would let anyone who can reach it use the "
                       "model; give --api-key or set QSIT_API_KEY")
    config = ServerConfig(host=args.host, port=args.port, api_key=key,
                          max_request_bytes=int(args.max_request_mb * 2**20), max_batch=args.max_batch,
                          batch_wait_s=args.batch_wait_ms / 1000, default_task=args.task,
                          allow_local_dir=Path(args.allow_local_dir) if args.allow_local_dir else None)
    serve(load_assessor(args), config)
    return 0


def cmd_ui(args) -> int:
    app = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    env = dict(os.environ)
    if args.model:
        env[MODEL_ENV] = args.model
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.host,
           "--server.port", str(args.port), "--server.maxUploadSize", str(args.max_upload_mb),
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]
    print(f"qsit: serving the app on http://{args.host}:{args.port}", file=sys.stderr)
    sys.stderr.flush()
    # Become the Streamlit server, so a signal to this process (Ctrl-C, terminate) reaches it directly.
    os.execve(sys.executable, cmd, env)


# ---------------------------------------------------------------- train
def cmd_train(args) -> int:
    import json as _json

    from qsit.recipe import run, validate
    from qsit.train_config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.validate:
        report = validate(cfg)
        print(_json.dumps(report, indent=2))
        print(f"qsit: {args.config} is valid", file=sys.stderr)
        return 0
    final = run(cfg).final
    print(f"qsit: trained; the model is in {final} (qsit assess IMAGE --model {final})", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- make-tiny
def cmd_make_tiny(args) -> int:
    from qsit.tiny import TinyConfig, build_tiny_checkpoint

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise CLIError(f"{out} is not empty; pass --force to overwrite")
    build_tiny_checkpoint(out, TinyConfig(seed=args.seed))
    print(f"qsit: wrote a random-weight tiny LLaVA-OneVision checkpoint to {out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from qsit.report import FORMATS

    parser = argparse.ArgumentParser(
        prog="qsit", description="Score image quality and explain it with one multimodal model."
    )
    # The deepspeed launcher passes --local_rank=N before the subcommand.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the libraries' own progress bars and messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("assess", help="joint score + explanation report for images")
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--format", choices=FORMATS, default="markdown")
    p.add_argument("--out", help="write the report here instead of standard output")
    p.add_argument("--question", help="ask this instead of the preset's description question")
    p.add_argument("--max-new-tokens", type=int, default=256)
    add_model_args(p)
    p.set_defaults(func=cmd_assess)

    p = sub.add_parser("score", help="batch-score images into a CSV (resumable)")
    p.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, help="CSV file; images already in it are skipped")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--retry-errors", action="store_true",
                   help="score again the images whose rows hold an error (e.g. a file fixed since)")
    add_views_arg(p)
    add_model_args(p)
    p.set_defaults(func=cmd_score)

    from data_builders.cli import add_build_parser

    add_build_parser(sub)

    from evals.cli import add_eval_parser

    add_eval_parser(sub)

    from mixing.cli import add_mix_parser

    add_mix_parser(sub)

    p = sub.add_parser("train", help="fine-tune a LLaVA-OneVision checkpoint (see qsit/configs/train/)")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--validate", action="store_true", help="check config, files, data and plan; no compute")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP API (/v1/chat/completions, /v1/score)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $QSIT_API_KEY)")
    p.add_argument("--allow-local-dir", help="accept local image paths under this folder")
    p.add_argument("--max-batch", type=int, default=8, help="images per forward pass when merging requests")
    p.add_argument("--batch-wait-ms", type=float, default=0.0,
                   help="wait this long for more requests before a pass (default: merge only what is queued)")
    p.add_argument("--max-request-mb", type=float, default=20)
    add_model_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ui", help="the Streamlit chat app in the browser")
    p.add_argument("--model", help=f"checkpoint (default: ${MODEL_ENV}, then the embedded model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--max-upload-mb", type=int, default=20)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("make-tiny", help="build a random-weight tiny checkpoint (for tests and demos)")
    p.add_argument("out", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty directory")
    p.set_defaults(func=cmd_make_tiny)
    return parser


def quiet_libraries() -> None:
    """A normal run shows qsit's own lines and bars; ``-v`` shows the libraries' too."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # "Saving the dataset" per split
    # DeepSpeed logs "Setting accelerator to CPU" to stdout on every machine without a GPU.
    logging.getLogger("DeepSpeed").addFilter(lambda record: record.levelno >= logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    if getattr(args, "batch_size", 1) < 1:
        print("qsit: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    if not args.verbose:
        quiet_libraries()
    from qsit.assessor import ModelLoadError
    from qsit.images import ImageLoadError
    from qsit.llm import EndpointUnreachable
    from qsit.records import RecordError

    try:
        return args.func(args)
    except (CLIError, ModelLoadError, ImageLoadError, RecordError, ValueError, FileNotFoundError,
            EndpointUnreachable) as e:
        if os.environ.get("QSIT_DEBUG"):
            raise
        print(f"qsit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qsit: interrupted; finished work is saved (rerun to resume where supported)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
