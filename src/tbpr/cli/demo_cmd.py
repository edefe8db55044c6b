"""``tbpr demo``: the whole pipeline on the embedded SynthPedes benchmark, on CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.cli.options import add_config_options

# = tbpr.demo.DEMO_RECIPE / COMPARE_RECIPE / COMPARE_EPOCHS (tested), without importing torch
DEMO_RECIPE, COMPARE_RECIPE, COMPARE_EPOCHS = "tbpr-lite", "cpu-small", 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate SynthPedes, fine-tune pretrained towers on CPU (and a model from scratch to "
        "compare), evaluate and write a report",
        description="Runs synth -> train -> eval end to end: the --config recipe (default: tbpr-lite, "
        "pretrained MiniLM-L6 + EfficientNet-Lite0) and the --compare recipe as a second row (default: "
        "cpu-small, tbpr-tiny from scratch, for --compare-epochs: about the same training time). Writes "
        "report.md (both models and random ranking on the test split), metrics.json and a retrieval figure "
        "into --out, then prints the commands that index, search and serve images with the trained model. "
        "Re-running resumes: finished data and checkpoints are reused.",
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
        default=COMPARE_RECIPE,
        help=f"recipe trained into --out/run-compare and reported as a second row; 'none' skips it "
        f"(default: {COMPARE_RECIPE})",
    )
    p.add_argument(
        "--compare-epochs",
        type=int,
        default=COMPARE_EPOCHS,
        help=f"epochs of the --compare run, before --set; 0: its recipe's (default: {COMPARE_EPOCHS})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tbpr.demo import run_demo

    compare = None if args.compare.lower() == "none" else args.compare
    run_demo(args.out, args.size, args.seed, args.config, args.overrides, compare, args.compare_epochs)
    return 0
