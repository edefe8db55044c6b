"""Training-step time of the CPU PDG recipe with approximate text (and its L_c) and feature-level mixup,
against the same recipe with both off (issue: at most 1.6x), and with each alone.

Builds the recipe's trainer once per mode on SynthPedes, loads a few batches once (from the trainer with
both on, so every mode steps on the same images and captions), then times forward + backward + optimizer
step on them, the modes interleaved round by round so machine load affects each alike; prints the median
step time per mode as a markdown table. Data loading is left out: approximate text's draws happen in the
DataLoader workers, while its second text forward (the originals of the replaced captions) and mixup's
partner draws and extra rows are inside the timed step.

    python benchmarks/pdg_step.py [--config pdg-lite] [--size small] [--batches 3] [--rounds 6] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import logging
import statistics

import torch

from training_bench import time_modes

APPROX_OFF = ["data.text_augment.approximate.ops=[]", "losses.approx_constraint=0"]
MIXUP_OFF = ["mixup.p=0"]
# row label -> its config overrides
MODES = {
    "both off": [*APPROX_OFF, *MIXUP_OFF],
    "approximate text + L_c": MIXUP_OFF,
    "mixup": APPROX_OFF,
    "both on (the recipe)": [],
}


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
        args.config, args.size, MODES, args.overrides, args.batches, args.rounds, batches_from=recipe
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
