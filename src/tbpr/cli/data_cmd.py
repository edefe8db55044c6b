"""``tbpr data stats|check PATH``: per-split statistics and a full validation of a dataset folder."""

from __future__ import annotations

import argparse
import json

from tbpr.data.check import check_dataset
from tbpr.data.readers import FORMATS, read_dataset
from tbpr.data.stats import format_stats_table, split_stats, stats_json


def _stats(args: argparse.Namespace) -> int:
    stats = split_stats(read_dataset(args.path, args.format))
    print(json.dumps(stats_json(stats)) if args.json else format_stats_table(stats))
    return 0


def _check(args: argparse.Namespace) -> int:
    report = check_dataset(args.path, args.format, workers=args.workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"{report.annotation_file} ({report.format}): {len(report.manifest.images)} images, "
            f"{len(report.manifest.captions)} captions"
        )
        for message in report.errors:
            print(f"ERROR: {message}")
        for message in report.warnings:
            print(f"WARNING: {message}")
        verdict = "OK" if report.ok else "FAILED"
        print(f"{verdict}: {len(report.errors)} errors, {len(report.warnings)} warnings")
    return 0 if report.ok else 1


def _from_captions(args: argparse.Namespace) -> int:
    from tbpr.data.from_captions import build_from_captions

    summary = build_from_captions(args.store, args.images, args.out, args.limit_images)
    print(summary.line(args.out))
    print("train on it with --config mllm4text (every caption a sample of its own, every epoch)")
    return 0


def _register_from_captions(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "from-captions",
        help="a training set from a `tbpr caption` store: each image its own identity",
        description="Write a dataset folder (annotations.jsonl in the jsonl format, imgs/ linking to "
        "--images) with one training record per captioned image: its own identity, holding all its "
        "accepted captions. Train with --config mllm4text: every caption is a sample of its own every epoch "
        "(data.sampler: per_image draws one caption per image per epoch instead).",
    )
    p.add_argument("store", metavar="STORE", help="caption store filled by `tbpr caption`")
    p.add_argument("--images", required=True, metavar="DIR", help="the images folder that was captioned")
    p.add_argument("--out", required=True, metavar="PATH", help="dataset folder to write")
    p.add_argument(
        "--limit-images",
        type=int,
        metavar="N",
        help="keep N images: a fixed pseudo-random subset (by caption id), nested across N",
    )
    p.set_defaults(func=_from_captions)


def _from_generated(args: argparse.Namespace) -> int:
    from tbpr.data.from_generated import build_from_generated

    print(build_from_generated(args.stores, args.out, args.captions).line(args.out))
    return 0


def _register_from_generated(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "from-generated",
        help="a training set from `tbpr generate persons`/`edit` stores: one identity per prompt",
        description="Write a dataset folder (annotations.jsonl in the jsonl format, imgs/ linking to the "
        "stores' folder) with one training record per accepted generated image; the images of one prompt "
        "and their edits share an identity. Captions: the construction prompts (an edit keeps its "
        "source's), or with --captions the accepted captions of a `tbpr caption` run over the stores' folder.",
    )
    p.add_argument("stores", metavar="STORE", nargs="+", help="generation stores, all in one folder")
    p.add_argument("--out", required=True, metavar="PATH", help="dataset folder to write")
    p.add_argument(
        "--captions", metavar="STORE", help="caption store of `tbpr caption` over the stores' folder"
    )
    p.set_defaults(func=_from_generated)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help="inspect and validate datasets",
        description="Inspect and validate a dataset folder (annotation file + imgs/).",
    )
    commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def add(name: str, help: str, func) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, description=help)
        parser.add_argument("path", metavar="PATH", help="dataset folder (annotation file and imgs/)")
        parser.add_argument(
            "--format",
            choices=sorted(FORMATS),
            help="annotation format (default: recognized from the annotation file's name)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        parser.set_defaults(func=func)
        return parser

    add("stats", "print identities, images, captions and mean caption words per split", _stats)
    check = add(
        "check", "validate annotations, images, captions and splits; exit 1 if anything is wrong", _check
    )
    _register_from_captions(commands)
    _register_from_generated(commands)
    check.add_argument(
        "--workers", type=int, default=None, help="threads decoding images (default: min(32, CPUs + 4))"
    )
