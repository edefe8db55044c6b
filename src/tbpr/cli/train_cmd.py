"""``tbpr train``: train or resume a run from a recipe."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train (or resume) a retrieval model from a recipe",
        description="Train a dual encoder. A run folder that already has checkpoints/last.pt is resumed "
        "exactly where it stopped unless --no-resume is given. Under torchrun every process runs this "
        "same command (DDP, global batch = data.batch_size).",
    )
    p.add_argument(
        "--config",
        default="cpu-small",
        help="shipped recipe name (cpu-small, clip-sdm) or a YAML file (default: cpu-small)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable; values are YAML)",
    )
    p.add_argument("--data", help="dataset folder (shortcut for --set data.path=...)")
    p.add_argument("--out", help="run folder (shortcut for --set output_dir=...)")
    p.add_argument(
        "--no-resume", action="store_true", help="start from scratch even if the run folder has a checkpoint"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tbpr.train import load_config, train

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.out:
        overrides.append(f"output_dir={args.out}")
    cfg = load_config(args.config, overrides)
    out = train(cfg, resume=not args.no_resume)
    print(f"run folder: {out}")
    return 0
