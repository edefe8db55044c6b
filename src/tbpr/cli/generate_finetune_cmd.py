"""``tbpr generate finetune``: fine-tune a Stable Diffusion model on a training set's pairs (PDG eq. 8)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tbpr.cli.options import add_device_option, resolve_device


def register_finetune_command(actions: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` action to ``tbpr generate``."""
    p = actions.add_parser(
        "finetune",
        help="fine-tune a Stable Diffusion UNet (full or LoRA) on a training set's image-caption pairs",
        description="Fine-tune the UNet of a Stable Diffusion-family model on the training split's "
        "(image, caption) pairs of DATA with the plain noise-prediction loss (PDG eq. 8). Writes OUT/model "
        "(a full pipeline folder) or, with --lora-rank, OUT/lora (LoRA weights for the base model). "
        "Checkpointed every --checkpoint-every steps: rerunning the same command after a kill continues "
        "where it stopped; a larger --steps trains further; other changed settings are refused.",
    )
    p.add_argument("data", type=Path, help="dataset folder (any format tbpr data reads)")
    p.add_argument(
        "--model",
        required=True,
        help="base pipeline: hub name (e.g. runwayml/stable-diffusion-v1-5) or local folder with model_index.json",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (settings, checkpoint, result)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps in total (default: 1000)")
    p.add_argument("--batch-size", type=int, default=1, help="pairs per step (default: 1)")
    p.add_argument(
        "--lr", type=float, default=1e-5, help="AdamW learning rate (default: 1e-5; LoRA: try 1e-4)"
    )
    p.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        help="train LoRA adapters of this rank instead of the whole UNet (default: 0, full)",
    )
    p.add_argument("--height", type=int, default=512, help="training image height in pixels (default: 512)")
    p.add_argument("--width", type=int, default=256, help="training image width in pixels (default: 256)")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=100,
        help="save a resumable checkpoint every N steps (default: 100)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the pair order, noise and timesteps (default: 0)"
    )
    add_device_option(p)
    p.set_defaults(func=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from tbpr.errors import ConfigError
    from tbpr.generate.images.diffusion.finetune import FinetuneConfig, finetune

    for name in ("steps", "batch_size", "height", "width", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if args.lora_rank < 0:
        raise ConfigError(f"--lora-rank must be 0 (full fine-tuning) or positive, not {args.lora_rank}")
    cfg = FinetuneConfig(
        model=args.model,
        data=str(args.data.resolve()),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lora_rank=args.lora_rank,
        height=args.height,
        width=args.width,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    print(finetune(cfg, args.out, resolve_device(args.device)))
    return 0
