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
from pathlib import Path
from unittest import mock

import torch

from tbpr.models import mixup as mixup_hooks
from tbpr.train import load_config
from tbpr.train.engine import Trainer
from training_bench import synthpedes_in_tempdir, train_step

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


def build(config: str, data: Path, out: Path, mode: str, overrides: list[str]) -> Trainer:
    cfg = load_config(
        config, [f"data.path={data}", f"output_dir={out}", "data.num_workers=0", *MODES[mode], *overrides]
    )
    torch.manual_seed(0)
    return Trainer(cfg, resume=False)


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
    with synthpedes_in_tempdir(args.size) as (tmp, data):
        trainers = {
            m: build(args.config, data, Path(tmp) / f"mode{i}", m, args.overrides)
            for i, m in enumerate(MODES)
        }
        on = trainers["both on (the recipe)"]
        loader = iter(on.loader)
        batches = [next(loader) for _ in range(args.batches)]
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for round_ in range(args.rounds):
            for mode, trainer in trainers.items():
                with first_block_path(mode):
                    spent = [train_step(trainer, batch_for(mode, b)) for b in batches]
                if round_:
                    times[mode].extend(spent)
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
