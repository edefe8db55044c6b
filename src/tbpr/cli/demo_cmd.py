"""``tbpr demo``: the whole pipeline on the embedded SynthPedes benchmark, on CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.cli.options import add_config_options

# = tbpr.demo.DEMO_RECIPE / BASELINE_RECIPE / BASELINE_EPOCHS (tested), without importing torch
DEMO_RECIPE, BASELINE_RECIPE, BASELINE_EPOCHS = "tbpr-lite", "cpu-small", 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate SynthPedes, train a pretrained and a from-scratch model on CPU, evaluate, report",
        description="Runs synth -> train -> eval end to end: the --config recipe (default: tbpr-lite, "
        "pretrained MiniLM-L6 + EfficientNet-Lite0) and, as the comparison row, the --baseline recipe "
        "(default: cpu-small, tbpr-tiny from scratch) for --baseline-epochs. Writes report.md (both models "
        "and random ranking on the test split), metrics.json and a retrieval figure into --out, then prints "
        "the commands that index, search and serve images with the trained model. Re-running resumes: "
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
        "--baseline",
        default=BASELINE_RECIPE,
        help=f"recipe of the comparison row, trained into --out/run-scratch; 'none' skips it "
        f"(default: {BASELINE_RECIPE})",
    )
    p.add_argument(
        "--baseline-epochs",
        type=int,
        default=BASELINE_EPOCHS,
        help=f"epochs of the comparison run, before --set (default: {BASELINE_EPOCHS}: about the training "
        "time of the default --config on 2 cores)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tbpr.demo import run_demo

    baseline = None if args.baseline.lower() == "none" else args.baseline
    run_demo(args.out, args.size, args.seed, args.config, args.overrides, baseline, args.baseline_epochs)
    return 0
