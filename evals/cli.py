"""``qsit eval ...``: the benchmarks and the joint report as subcommands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from evals.common import default_image_root
from qsit.commands import add_model_args, add_views_arg, expand_images, load_assessor, say


def cmd_iqa(args) -> int:
    from evals.iqa import run_iqa

    sets = {}
    for spec in args.set:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--set takes NAME=PATH, got {spec!r}")
        sets[name] = path
    summary = run_iqa(load_assessor(args), sets, args.images, args.out, trained_on=tuple(args.trained_on or ()),
                      batch_size=args.batch_size, fit=args.fit, task=args.task, views=args.views)
    print((Path(args.out) / "iqa.md").read_text())
    for name, r in summary["sets"].items():
        if r.get("warning"):
            say(f"warning: {name}: {r['warning']}")
        if r["missing_images"]:
            say(f"{name}: {len(r['missing_images'])} image(s) missing, e.g. {r['missing_images'][0]}")
    return 0


def cmd_llvisionqa(args) -> int:
    from evals.llvisionqa import (
        compare_lmms_eval,
        load_questions,
        read_lmms_eval_samples,
        run_llvisionqa,
        to_lmms_eval_samples,
    )

    root = args.images or str(default_image_root(args.questions))
    questions, missing = load_questions(args.questions, root)
    if missing:
        say(f"{len(missing)} image(s) missing under {root}, e.g. {missing[0]}; those questions are skipped")
    if args.compare_lmms_eval:
        result = compare_lmms_eval(read_lmms_eval_samples(args.compare_lmms_eval), {q.id: q for q in questions})
        print(json.dumps(result, indent=2))
        return 0
    results = run_llvisionqa(load_assessor(args), questions, root, args.out, mode=args.mode,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                             likelihood_of=args.likelihood_of)
    print((Path(args.out) / "llvisionqa.md").read_text())
    if args.export_lmms_eval:
        samples = [json.loads(line) for line in (Path(args.out) / "llvisionqa_samples.jsonl").read_text().splitlines()]
        with open(args.export_lmms_eval, "w", encoding="utf-8") as f:
            for row in to_lmms_eval_samples(samples):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        say(f"wrote lmms-eval samples to {args.export_lmms_eval}")
    return 0 if results else 1


def cmd_lldescribe(args) -> int:
    from evals.lldescribe import Judge, load_items, run_lldescribe

    root = args.images or str(default_image_root(args.items))
    judge = Judge(base_url=args.judge_base_url, model=args.judge_model, api_key_env=args.judge_api_key_env,
                  concurrency=args.concurrency)
    run_lldescribe(load_assessor(args), load_items(args.items), root, judge, args.out, rounds=args.rounds,
                   max_new_tokens=args.max_new_tokens)
    print((Path(args.out) / "lldescribe.md").read_text())
    return 0


def load_ground_truth(path: str | Path, image_root: str | Path | None = None) -> dict[str, float]:
    """True scores keyed by resolved image path: Q-Bench A3 JSON (img_path, gt_score) or CSV (path, score)."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    if path.suffix.lower() == ".json":
        pairs = [(d["img_path"], d["gt_score"]) for d in json.loads(path.read_text(encoding="utf-8"))]
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "path" not in cols or not ({"score", "gt_score", "mos"} & set(cols)):
                raise ValueError(f"{path}: a CSV of ground truth needs columns path and score (or gt_score, mos)")
            col = next(c for c in ("gt_score", "score", "mos") if c in cols)
            pairs = [(r["path"], r[col]) for r in reader]
    out = {}
    for img, score in pairs:
        p = Path(img)
        out[str((p if p.is_absolute() else root / p).resolve())] = float(score)
    return out


def cmd_report(args) -> int:
    from qsit.report import assess_images, render

    paths, failed = expand_images(args.images, "report on")
    gt_by_path = load_ground_truth(args.gt, args.gt_root) if args.gt else None
    assessor = load_assessor(args)
    assessments, thumbs, failures = assess_images(assessor, paths, task=args.task, max_new_tokens=args.max_new_tokens)
    for problem in failures:
        say(f"error: {problem}")
    failed += len(failures)
    ground_truth = None
    if gt_by_path is not None:
        ground_truth = {str(p): gt_by_path[str(Path(p).resolve())] for p in paths
                        if str(Path(p).resolve()) in gt_by_path}
    text = render(assessments, args.format, thumbnails=thumbs, ground_truth=ground_truth, summary=True)
    Path(args.out).write_text(text, encoding="utf-8")
    say(f"wrote a report on {len(assessments)} image(s) to {args.out}")
    return 1 if failed else 0


def add_eval_parser(sub) -> None:
    from qsit.metrics import FITS
    from qsit.report import FORMATS

    ev = sub.add_parser("eval", help="benchmarks (IQA, LLVisionQA, LLDescribe) and joint reports")
    esub = ev.add_subparsers(dest="eval", required=True, metavar="EVAL")

    p = esub.add_parser("iqa", help="SRCC/PLCC/KRCC on test lists (paper Table IV)")
    p.add_argument("--set", action="append", required=True, metavar="NAME=PATH",
                   help="a test list: Q-Bench A3 JSON (img_path, gt_score) or a D1 build folder; repeatable")
    p.add_argument("--images", help="image root for the JSON lists (default: each list's folder; a corpus's "
                   "tests/ lists: the corpus)")
    p.add_argument("--out", required=True)
    p.add_argument("--trained-on", nargs="*", help="set names the model was trained on (others are cross-set)")
    p.add_argument("--fit", choices=[f for f in FITS if f], help="map predictions by a logistic before PLCC")
    p.add_argument("--batch-size", type=int, default=8)
    add_views_arg(p)
    add_model_args(p)
    p.set_defaults(func=cmd_iqa)

    p = esub.add_parser("llvisionqa", help="multiple-choice low-level questions (paper Table V)")
    p.add_argument("questions", help="Q-Bench LLVisionQA JSON")
    p.add_argument("--images", help="image root (default: the JSON's folder)")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=["generate", "likelihood", "both"], default="generate")
    p.add_argument("--likelihood-of", choices=["letter", "answer"], default="letter",
                   help="likelihood mode: the option letter as the next token (Q-Bench), or each option's "
                        "words as the whole answer (models trained to answer in words)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--export-lmms-eval", metavar="JSONL", help="also write samples in lmms-eval's layout")
    p.add_argument("--compare-lmms-eval", metavar="JSONL",
                   help="re-score lmms-eval qbench_dev samples with qsit's rules instead of running a model")
    add_model_args(p, with_task=False)
    p.set_defaults(func=cmd_llvisionqa)

    p = esub.add_parser("lldescribe", help="LLM-judged quality descriptions (paper Table VI)")
    p.add_argument("items", help="JSON list of img_path + golden_description")
    p.add_argument("--images", help="image root (default: the JSON's folder)")
    p.add_argument("--out", required=True)
    p.add_argument("--judge-base-url", required=True, help="OpenAI-compatible endpoint of the judge")
    p.add_argument("--judge-model", required=True)
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=256)
    add_model_args(p, with_task=False)
    p.set_defaults(func=cmd_lldescribe)

    p = esub.add_parser("report", help="joint score + explanation report for images or folders")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=FORMATS, default="html")
    p.add_argument("--gt", help="ground truth: Q-Bench A3 JSON or CSV with path,score; adds a scatter plot")
    p.add_argument("--gt-root", help="root for relative paths in --gt (default: its folder)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    add_model_args(p)
    p.set_defaults(func=cmd_report)
