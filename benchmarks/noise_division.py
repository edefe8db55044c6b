"""One epoch's clean-sample division against one training epoch of the same recipe (issue: <= 0.3x).

Builds the ``rde-small`` trainer (tbpr-tiny, 128x64, batch 64, TAL on the global and the TSE embedding) on
SynthPedes, then, in one run and one process: times one full training epoch (data loading, forward,
backward, optimizer steps), and the division that precedes an epoch, in its two parts: the per-sample
losses of both embeddings over the whole training set (one no-grad encoding of every training image and
caption, then TAL per batch on each embedding) and the two Gaussian mixtures with their consensus. The
division is timed after the epoch, on the trained weights, as a run computes it. Prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/noise_division.py [--size small] [--recipe rde-small] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from tbpr.train.noise import divide, per_sample_losses
from training_bench import recipe_trainer, synthpedes_in_tempdir


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="small", help="SynthPedes size (default: small)")
    parser.add_argument("--recipe", default="rde-small", help="training recipe (default: rde-small)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with synthpedes_in_tempdir(args.size) as (tmp, data):
        trainer = recipe_trainer(args.recipe, data, tmp / "run", ["eval_every=0", *args.overrides])
        cfg = trainer.cfg
        trainer.model.train()
        _, epoch = timed(trainer._train_epoch)
        split, n = trainer.train_split, len(trainer.train_split.captions)
        vectors, losses = timed(
            lambda: per_sample_losses(
                trainer.model,
                split,
                trainer.eval_transform,
                trainer.tokenizer,
                cfg.losses,
                cfg.noise.losses,
                cfg.loss_params,
                seed=cfg.seed,
                epoch=1,
                batch_size=cfg.data.batch_size,
                eval_batch_size=cfg.data.eval_batch_size,
                num_workers=0,
                device=trainer.device,
            )  # fmt: skip
        )
        keys = np.array([c.id for c in split.captions])
        record, mixtures = timed(lambda: divide(vectors, cfg.seed, 1, keys, cfg.noise.threshold))
    print(
        f"{args.recipe} ({cfg.model.arch}, {tuple(cfg.model.image_size)}, batch {cfg.data.batch_size}, "
        f"TSE {cfg.model.tse is not None}) on SynthPedes {args.size}: {n} training pairs, "
        f"{trainer.steps_per_epoch} steps per epoch, torch threads {torch.get_num_threads()}; "
        f"loss vectors {sorted(vectors)}, {int(record['clean'].sum())} called clean\n"
    )
    print("| part | seconds | vs training epoch |")
    print("|---|---:|---:|")
    rows = [
        ("training epoch (baseline)", epoch),
        ("per-sample losses of both embeddings (encode the training set + TAL per batch)", losses),
        ("two Gaussian mixtures + consensus", mixtures),
        ("**division total**", losses + mixtures),
    ]
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {seconds / epoch:.3f}x |")


if __name__ == "__main__":
    main()
