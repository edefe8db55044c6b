"""Training-step time of the CPU PDG recipe with approximate text (and its L_c) and feature-level mixup,
against the same recipe with both off (issue: at most 1.6x), with each alone, and with the mixed rows'
copies run through the towers' first block (the path before they skipped it: same loss and gradients).

Builds the recipe's trainer once per mode on SynthPedes, loads a few batches once (from the trainer with
both on, so every mode steps on the same images and captions; a mode without approximate text on their
original captions, "tokens_orig", as its training would), then times forward + backward + optimizer step on
them, the modes interleaved round by round so machine load affects each alike; prints the median step time
per mode as a markdown table. Data loading is left out: approximate text's draws happen in the DataLoader
workers, while its second text forward (the originals of the replaced captions) and mixup's partner draws
and extra rows are inside the timed step.

    python benchmarks/pdg_step.py [--config pdg-lite] [--size small] [--batches 3] [--rounds 6] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
from unittest import mock

import torch

from tbpr.models import mixup as mixup_hooks
from training_bench import time_modes

APPROX_OFF = ["data.text_augment.approximate.ops=[]", "losses.approx_constraint=0"]
MIXUP_OFF = ["mixup.p=0"]
OLD_PATH = "both on, mixed rows' copies through the first block"
# row label -> its config overrides
MODES = {
    "both off": [*APPROX_OFF, *MIXUP_OFF],
    "approximate text + L_c": MIXUP_OFF,
    "mixup": APPROX_OFF,
    "both on (the recipe)": [],
    # the recipe with the mixed rows' copies run through the towers' first block, their outputs then
    # overwritten (tbpr.models.mixup's path for a BatchNorm first block; every tower's path before)
    OLD_PATH: [],
}


def first_block_path(mode: str):
    """For ``OLD_PATH``: every first block taken for one that mixes rows (the copies run it)."""
    if mode != OLD_PATH:
        return contextlib.nullcontext()
    return mock.patch.object(mixup_hooks, "rows_independent", lambda _block: False)


def batch_for(mode: str, batch: dict) -> dict:
    """``batch`` as ``mode`` trains on it: without approximate text, the original captions."""
    if APPROX_OFF[0] not in MODES[mode]:
        return batch
    return {**batch, "tokens": batch["tokens_orig"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="pdg-lite", help="the PDG recipe (default: pdg-lite)")
    parser.add_argument("--size", default="small", help="SynthPedes size (default: small)")
    parser.add_argument("--batches", type=int, default=3, help="batches timed per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds over all modes (the first is warm-up)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    recipe = "both on (the recipe)"
    trainers, batches, times = time_modes(
        args.config,
        args.size,
        MODES,
        args.overrides,
        args.batches,
        args.rounds,
        batches_from=recipe,
        context=first_block_path,
        batch_for=batch_for,
    )
    on = trainers[recipe]
    replaced = sum(int(b["replaced"].sum()) for b in batches)
    captions = sum(len(b["pid"]) for b in batches)
    cfg = on.cfg
    median = {m: statistics.median(t) for m, t in times.items()}
    base = median["both off"]
    print(
        f"{args.config}: {cfg.model.arch}, {tuple(cfg.model.image_size)}, batch {cfg.data.batch_size}, "
        f"torch threads {torch.get_num_threads()}, {len(times['both off'])} steps per mode; "
        f"{replaced} of {captions} captions replaced by approximate text, mixup p {cfg.mixup.p}\n"
    )
    print("| mode | step (ms) | vs both off |")
    print("|---|---:|---:|")
    for mode in MODES:
        print(f"| {mode} | {1000 * median[mode]:.1f} | {median[mode] / base:.3f}x |")


if __name__ == "__main__":
    main()
