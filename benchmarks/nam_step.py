"""Training-step time of Noise-Aware Masking vs Equal Masking vs no masking (issue: NAM <= 1.15x EM),
and of NAM with the optional MLM loss (IRRA's cross-modal head).

Builds the mllm4text-small trainer once per masking mode on SynthPedes, loads a few batches once, then
times forward + backward + optimizer step on them, the modes interleaved round by round so machine
load affects each alike; prints the median step time per mode as a markdown table. Data loading is
left out (it is the same for every mode); the masking itself (per-sample seeded draws on the CPU) and
NAM's text pass to layer l with the token-patch similarities are inside the timed step.

    python benchmarks/nam_step.py [--size small] [--batches 4] [--rounds 10] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import logging
import statistics

import torch

from training_bench import time_modes

# row label -> its config overrides
MODES = {
    "none": ["masking.mode=none"],
    "em": ["masking.mode=em"],
    "nam": ["masking.mode=nam"],
    "nam+mlm": ["masking.mode=nam", "losses.mlm=1.0"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="small", help="SynthPedes size (default: small)")
    parser.add_argument("--batches", type=int, default=4, help="batches timed per round")
    parser.add_argument("--rounds", type=int, default=10, help="rounds over all modes (the first is warm-up)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trainers, _, times = time_modes(
        "mllm4text-small", args.size, MODES, args.overrides, args.batches, args.rounds, batches_from="none"
    )
    cfg = trainers["nam"].cfg
    median = {m: statistics.median(t) for m, t in times.items()}
    print(
        f"{cfg.model.arch}, {tuple(cfg.model.image_size)}, batch {cfg.data.batch_size}, "
        f"torch threads {torch.get_num_threads()}, {len(times['em'])} steps per mode\n"
    )
    print("| masking | step (ms) | vs none | vs EM |")
    print("|---|---:|---:|---:|")
    for mode in MODES:
        t = median[mode]
        print(f"| {mode} | {1000 * t:.1f} | {t / median['none']:.3f}x | {t / median['em']:.3f}x |")


if __name__ == "__main__":
    main()
