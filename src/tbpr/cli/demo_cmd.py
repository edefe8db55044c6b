"""``tbpr demo``: the whole pipeline on the embedded SynthPedes benchmark, on CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.cli.options import add_config_options

DEMO_RECIPE = "cpu-small"  # = tbpr.demo.DEMO_RECIPE (tested), without importing torch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate SynthPedes, train a small model on CPU, evaluate and write a report",
        description="Runs synth -> train -> eval end to end: the --config recipe (default: cpu-small, "
        "tbpr-tiny from scratch) and, with --compare, a second recipe as a comparison row (e.g. --compare "
        "tbpr-lite: pretrained MiniLM-L6 + EfficientNet-Lite0). Writes report.md (the models and random "
        "ranking on the test split), metrics.json and a retrieval figure into --out, then prints the "
        "commands that index, search and serve images with the trained model. Re-running resumes: "
        "finished data and checkpoints are reused.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: ./demo)")
    p.add_argument(
        "--size",
        default="small",
        choices=["tiny", "small", "standard"],
        help="SynthPedes size (default: small)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for data and training (default: 0)")
    add_config_options(p, default_recipe=DEMO_RECIPE)
    p.add_argument(
        "--compare",
        metavar="RECIPE",
        help="also train this recipe into --out/run-compare and report it as a second row (default: none)",
    )
    p.add_argument(
        "--compare-epochs",
        type=int,
        help="epochs of the --compare run, before --set (default: its recipe's)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tbpr.demo import run_demo

    run_demo(args.out, args.size, args.seed, args.config, args.overrides, args.compare, args.compare_epochs)
    return 0
