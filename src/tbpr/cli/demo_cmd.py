"""``tbpr demo``: the whole pipeline on the embedded SynthPedes benchmark, on CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.cli.options import add_config_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate SynthPedes, train a small model on CPU, evaluate and write a report",
        description="Runs synth -> train -> eval end to end and writes report.md, metrics.json and a "
        "retrieval figure into --out. Re-running resumes: finished data and checkpoints are reused.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: ./demo)")
    p.add_argument(
        "--size",
        default="small",
        choices=["tiny", "small", "standard"],
        help="SynthPedes size (default: small)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for data and training (default: 0)")
    add_config_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tbpr.demo import run_demo

    run_demo(args.out, args.size, args.seed, args.config, args.overrides)
    return 0
