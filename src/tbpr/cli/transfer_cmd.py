"""``tbpr transfer``: the source -> target matrix of several runs on several datasets (paper Table 4)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tbpr.cli.options import add_device_option, add_encoding_options, resolve_device
from tbpr.errors import ConfigError

log = logging.getLogger(__name__)
_METRICS = ("R1", "R5", "R10", "mAP", "mINP")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer",
        help="evaluate several runs on several datasets: a source -> target matrix",
        description="Evaluate every --run on every --data (text-to-image) and write OUT/transfer.md (rows: "
        "runs with their init and training set, column groups: targets) and OUT/transfer.json. Cells are "
        "cached in OUT/cells/, so an interrupted matrix resumes.",
    )
    p.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="NAME=RUN",
        help="a run folder or checkpoint file, optionally named (repeatable)",
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a target dataset folder, optionally named (repeatable)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for transfer.md, transfer.json, cells/")
    p.add_argument("--format", help="annotation format if not recognized from the file name")
    p.add_argument("--split", default="test", choices=["test", "val", "train"], help="default: test")
    p.add_argument("--checkpoint", default="best", help="best or last (default: best)")
    p.add_argument("--metrics", default="R1,mAP", help="comma-separated metrics per target (default: R1,mAP)")
    add_encoding_options(p)
    add_device_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tbpr.evaluation.transfer import matrix_markdown, parse_named, transfer_matrix, write_matrix

    runs = parse_named(args.run, "--run")
    targets = parse_named(args.data, "--data")
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = sorted(set(metrics) - set(_METRICS))
    if unknown or not metrics:
        raise ConfigError(f"--metrics {args.metrics!r}: choose from {', '.join(_METRICS)}")
    matrix = transfer_matrix(
        runs,
        targets,
        args.out,
        args.split,
        args.checkpoint,
        args.format,
        args.batch_size,
        args.num_workers,
        resolve_device(args.device),
    )
    md = write_matrix(matrix, args.out, metrics)
    log.info("wrote %s", md)
    print(matrix_markdown(matrix, metrics))
    return 0
