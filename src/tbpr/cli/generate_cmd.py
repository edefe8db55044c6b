"""``tbpr generate``: image generation for training data (diffusion fine-tuning for now)."""

from __future__ import annotations

import argparse

from tbpr.cli.generate_finetune_cmd import register_finetune_command


def register(sub: argparse._SubParsersAction) -> None:
    generate = sub.add_parser(
        "generate",
        help="generate training images (fine-tune a Stable Diffusion model on a training set)",
        description="Generate person images for training. See docs/image-generation.md.",
    )
    actions = generate.add_subparsers(dest="generate_command", metavar="ACTION", required=True)
    register_finetune_command(actions)
