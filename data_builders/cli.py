"""``qsit build ...``: the builders as subcommands, each with a progress bar and a summary."""

from __future__ import annotations

import sys
from pathlib import Path

from data_builders.common import BuildError, Problems, read_manifest, write_output
from data_builders.d2 import MCQ_ANSWERS, SEVERITY_WORD_SOURCES
from data_builders.wallpapers import DEFAULT_PACKAGES, WALLPAPERS, build_wallpapers


def _summary(out: Path, records: list, problems: Problems, extra: str = "") -> None:
    from data_builders.common import counts

    c = counts(records)
    print(f"qsit: wrote {c['total']} records to {out} (kinds {c['kind']}, splits {c['split']})", file=sys.stderr)
    if extra:
        print(f"qsit: {extra}", file=sys.stderr)
    if problems:
        print(f"qsit: {len(problems)} problem(s), listed in {out / 'manifest.json'}; first ones:", file=sys.stderr)
        for line in problems.lines()[:5]:
            print(f"  {line}", file=sys.stderr)


def cmd_d1(args) -> int:
    from data_builders.d1 import _table_rows, build_d1, get_reader, read_split_file

    path = Path(args.table)
    if args.dataset == "table":
        if not (args.image_column and args.score_column):
            raise BuildError("the generic 'table' reader needs --image-column and --score-column")
        rows, problems = _table_rows(path, args.image_column, args.score_column)
        nominal, default_dir = None, "."
    else:
        reader = get_reader(args.dataset)
        rows, problems = reader.read(path) if args.column is None else reader.read(path, column=args.column)
        nominal, default_dir = reader.nominal_range, reader.image_dir
    root = Path(args.images) if args.images else (path if path.is_dir() else path.parent) / default_dir
    known = {}
    for other in args.against or []:
        known.update(read_manifest(other).get("input_hashes", {}))
    result = build_d1(
        rows, args.source or args.dataset, root, score_range=tuple(args.score_range) if args.score_range else None,
        nominal_range=nominal, split_of=read_split_file(Path(args.split_file)) if args.split_file else None,
        test_fraction=args.test_fraction, val_fraction=args.val_fraction, paraphrases=args.paraphrases,
        seed=args.seed, known_hashes=known, problems=problems, verify_images=not args.no_verify_images,
        progress=True,
    )
    out = write_output(args.out, result.records, {**result.manifest, "args": _args(args)})
    p = result.manifest["conversion_precision"]
    _summary(out, result.records, result.problems,
             f"levels on [{result.manifest['level_range'][0]:g}, {result.manifest['level_range'][1]:g}]; "
             f"conversion precision SRCC {p['srcc']:.4f} PLCC {p['plcc']:.4f} (n={p['n']})" if p["srcc"] is not None
             else "conversion precision: too few training rows")
    return 0


def cmd_d2(args) -> int:
    import random

    from data_builders.d2 import (
        LetterBalancer,
        LLMQuestionWriter,
        balance_yes_no,
        qa_records,
        read_feedback,
        read_instruction_json,
    )

    records, problems, meta = [], Problems(), {}
    if args.instructions:
        recs, probs = read_instruction_json(Path(args.instructions), args.source)
        records += recs
        problems.items += probs.items
    if args.feedback:
        if not (args.base_url and args.model):
            raise BuildError("D2 from free-text feedback needs an LLM endpoint: give --base-url and --model "
                             "(the key comes from $OPENAI_API_KEY or --api-key-env)")
        items, probs = read_feedback(Path(args.feedback))
        problems.items += probs.items
        writer = LLMQuestionWriter(base_url=args.base_url, model=args.model, cache_dir=Path(args.out) / "llm_cache",
                                   api_key_env=args.api_key_env, concurrency=args.concurrency)
        by_id = {it["id"]: it for it in items}
        qas, failed = writer.write_all([(it["id"], it["feedback"]) for it in items])
        for key, why in sorted(failed.items()):
            problems.add(by_id[key]["where"], f"LLM generation failed: {why}")
        qas, dropped = balance_yes_no(qas, args.seed)
        balancer = LetterBalancer(args.seed)
        for key in sorted(qas):
            image = f"{args.image_prefix}/{by_id[key]['image']}" if args.image_prefix else by_id[key]["image"]
            split = "val" if random.Random(f"{args.seed}/{key}").random() < args.val_fraction else "train"
            records += qa_records(f"{args.source}/{key}", image, qas[key], args.source, split, balancer,
                                  mcq_answers=args.mcq_answers)
        meta = {"llm": {"base_url": args.base_url, "model": args.model}, "failed": sorted(failed),
                "yes_no_dropped_for_balance": dropped}
    if not (args.instructions or args.feedback):
        raise BuildError("give --feedback (with an LLM endpoint) and/or --instructions")
    out = write_output(args.out, records, {"builder": "d2", "source": args.source, "seed": args.seed, **meta,
                                           "problems": problems.items, "args": _args(args)})
    _summary(out, records, problems)
    return 0


def cmd_d3(args) -> int:
    from data_builders.d3 import build_d3

    result = build_d3(Path(args.json), Path(args.images), source=args.source, image_prefix=args.image_prefix,
                      fraction=args.fraction, count=args.count, seed=args.seed)
    out = write_output(args.out, result.records, {**result.manifest, "args": _args(args)})
    _summary(out, result.records, result.problems)
    return 0


def cmd_synthetic(args) -> int:
    from data_builders.synthetic import SyntheticConfig, build_synthetic

    cfg = SyntheticConfig(size=args.size, crops_per_photo=args.crops_per_photo,
                          ladders_per_crop=args.ladders_per_crop, train_scenes=args.train_scenes,
                          test_scenes=args.test_scenes, photos=args.photos,
                          photos_test_every=args.photos_test_every,
                          package_photos=not args.no_package_photos,
                          content_in_descriptions=not args.no_content_in_descriptions,
                          mcq_answers=args.mcq_answers, severity_words=args.severity_words,
                          family_choices=args.family_choices, seed=args.seed)
    try:
        m = build_synthetic(args.out, cfg)
    except FileNotFoundError as e:
        raise BuildError(str(e)) from None
    p = m["d1_conversion_precision"]
    print(f"qsit: {m['images']} images ({m['splits']}) in {m['seconds']} s; records {m['records']}; "
          f"test sets {m['test_sets']}", file=sys.stderr)
    print(f"qsit: D1 conversion precision SRCC {p['srcc']:.4f} PLCC {p['plcc']:.4f} on {p['n']} training images "
          "(pseudo-MOS, synthetic)", file=sys.stderr)
    return 0


def cmd_wallpapers(args) -> int:
    photos = build_wallpapers(args.out, tuple(args.packages))
    print(f"qsit: {len(photos)} pristine photos in {args.out} (licences: qsit/assets/qsit-tiny/ATTRIBUTION.md)",
          file=sys.stderr)
    return 0


def cmd_dead_leaves(args) -> int:
    from data_builders.dead_leaves import build_dead_leaves

    if args.count < 1 or args.size < 16:
        raise BuildError("dead-leaves needs --count of at least 1 and --size of at least 16 px")
    paths = build_dead_leaves(args.out, args.count, args.size, args.seed, progress=True)
    print(f"qsit: {len(paths)} dead-leaves images in {args.out}", file=sys.stderr)
    return 0


def _args(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func",) and not callable(v)}


def add_mcq_answers(p) -> None:
    p.add_argument("--mcq-answers", choices=MCQ_ANSWERS, default="letter",
                   help='multiple-choice answers as "B. zoom blur" (letter, default) or "zoom blur" (words: '
                        'for language models too small to copy the letter; both count by LLVisionQA\'s rules)')


def add_build_parser(sub) -> None:
    from data_builders.d1 import READERS

    build = sub.add_parser("build", help="build training / test data (D1, D2, D3, the offline corpus)")
    bsub = build.add_subparsers(dest="builder", required=True, metavar="BUILDER")

    p = bsub.add_parser("d1", help="scoring records from a MOS dataset",
                        description="Readers: " + "; ".join(f"{r.name}: {r.layout}" for r in READERS.values())
                        + "; table: any CSV/TSV/JSON/XLSX with --image-column and --score-column.")
    p.add_argument("dataset", choices=[*READERS, "table"])
    p.add_argument("table", help="the MOS file, or the dataset's root folder")
    p.add_argument("--out", required=True)
    p.add_argument("--images", help="image folder (default: the dataset's published layout)")
    p.add_argument("--source", help="source name in records (default: the dataset name)")
    p.add_argument("--column", help="score column to use instead of the default (e.g. MOS for KonIQ's 1-5 scale)")
    p.add_argument("--image-column")
    p.add_argument("--score-column")
    p.add_argument("--score-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="level boundaries from this range instead of the training split's min/max")
    p.add_argument("--split-file", help="official split: CSV with image + set/split columns, or JSON")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--paraphrases", action="store_true", help="vary the question wording (Q-Align's augmentation)")
    p.add_argument("--against", nargs="*", help="earlier build outputs whose images must not reappear")
    p.add_argument("--no-verify-images", action="store_true", help="skip decoding each image (faster, riskier)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_d1)

    p = bsub.add_parser("d2", help="interpreting records from feedback (via an LLM) or instruction JSON")
    p.add_argument("--feedback", help="JSON/JSONL of {image, feedback}")
    p.add_argument("--instructions", help="Q-Instruct-style LLaVA conversation JSON, taken as-is")
    p.add_argument("--out", required=True)
    p.add_argument("--source", default="feedback")
    p.add_argument("--image-prefix", default="", help="prefix for image paths in records")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--concurrency", type=int, default=4)
    add_mcq_answers(p)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_d2)

    p = bsub.add_parser("d3", help="general records from LLaVA-Instruct JSON")
    p.add_argument("json")
    p.add_argument("--images", required=True, help="COCO image folder (e.g. train2017)")
    p.add_argument("--out", required=True)
    p.add_argument("--source", default="llava_instruct")
    p.add_argument("--image-prefix", default="coco")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fraction", type=float)
    g.add_argument("--count", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_d3)

    p = bsub.add_parser("synthetic", help="the offline corpus from photos in installed packages")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=224, help="longest image side in pixels")
    p.add_argument("--crops-per-photo", type=int, default=2)
    p.add_argument("--ladders-per-crop", type=int, default=4)
    p.add_argument("--train-scenes", type=int, default=10)
    p.add_argument("--test-scenes", type=int, default=4)
    p.add_argument("--photos", help="a folder of extra pristine photos (every fifth held out for the tests)")
    p.add_argument("--photos-test-every", type=int, default=5, metavar="N",
                   help="hold out every N-th of --photos for the tests; 0: all for training (default: 5)")
    p.add_argument("--no-package-photos", action="store_true", help="only --photos and drawn scenes")
    p.add_argument("--no-content-in-descriptions", action="store_true",
                   help="D2 descriptions speak of quality only, not of what the photo shows (for models too "
                        "small to recognise content)")
    add_mcq_answers(p)
    p.add_argument("--severity-words", choices=SEVERITY_WORD_SOURCES, default="distortion",
                   help='what "slight" .. "severe" in the descriptions and answers follow: the distortion\'s '
                        "parameter (default) or the image's quality level (excellent: slight .. bad: severe), "
                        "so that a description's severity and its concluding level agree")
    p.add_argument("--family-choices", action="store_true",
                   help='ask each distorted training image its "most obvious distortion" question once more, '
                        'with options worded by family ("blur") or by name ("zoom blur") at random, so that '
                        "the answer must be read from the list (the test sets do not change)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synthetic)

    p = bsub.add_parser("wallpapers", help="pristine photos from Debian's wallpaper packages (apt-get download; 24 by default)")
    p.add_argument("--out", required=True, help="folder for the photos (PNG, longest side 1,024 px)")
    p.add_argument("--packages", nargs="+", choices=list(WALLPAPERS), default=list(DEFAULT_PACKAGES),
                   help="Debian packages to take photos from (default: the two qsit-tiny was trained on; "
                        "lomiri-wallpapers-16.04 and -20.04 add 13 more)")
    p.set_defaults(func=cmd_wallpapers)

    p = bsub.add_parser("dead-leaves", help="drawn pristine images with natural-image statistics (dead-leaves model)")
    p.add_argument("--out", required=True, help="folder for the images (PNG; ones already there are kept)")
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--size", type=int, default=512, help="side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_dead_leaves)

