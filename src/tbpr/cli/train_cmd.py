"""``tbpr train``: train or resume a run from a recipe."""

from __future__ import annotations

import argparse
import json
import os

from tbpr.cli.options import add_config_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train (or resume) a retrieval model from a recipe",
        description="Train a dual encoder. A run folder that already has checkpoints/last.pt is resumed "
        "exactly where it stopped unless --no-resume is given; resuming with another config (other than "
        "max_steps, checkpoint_every, log_every, device, data.num_workers ...) is refused. Under torchrun every process runs this "
        "same command (DDP, global batch = data.batch_size).",
    )
    add_config_options(p)
    p.add_argument("--data", help="dataset folder (shortcut for --set data.path=...)")
    p.add_argument("--out", help="run folder (shortcut for --set output_dir=...)")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start from scratch even if the run folder has a checkpoint (also the way to reuse a run folder "
        "with another config: resuming refuses one that differs)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="train on the data that passes `tbpr data check`, dropping bad records and images "
        "(shortcut for --set data.skip_bad=true; the count skipped is logged)",
    )
    p.add_argument(
        "--train-fraction",
        type=float,
        metavar="F",
        help="few-shot: train on a seeded fraction F in (0, 1] of the training identities, e.g. 0.05 "
        "(shortcut for --set data.train_fraction=F)",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="fine-tune: start from the model weights of a run folder (its best.pt) or checkpoint file; "
        "optimizer, schedule and epoch start fresh (shortcut for --set init_from=RUN)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tbpr.train import load_config, train
    from tbpr.train.summary import run_summary

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    if args.out:
        overrides.append(f"output_dir={args.out}")
    if args.train_fraction is not None:
        overrides.append(f"data.train_fraction={args.train_fraction}")
    if args.init_from:
        overrides.append(f"init_from={json.dumps(args.init_from)}")  # a YAML string
    cfg = load_config(args.config, overrides)
    out = train(cfg, resume=not args.no_resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, the first process only
        print(run_summary(out))
    return 0
