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
from pathlib import Path

import torch

from tbpr.train import load_config
from tbpr.train.engine import Trainer
from training_bench import synthpedes_in_tempdir, train_step

# row label -> its config overrides
MODES = {
    "none": ["masking.mode=none"],
    "em": ["masking.mode=em"],
    "nam": ["masking.mode=nam"],
    "nam+mlm": ["masking.mode=nam", "losses.mlm=1.0"],
}


def build(data: Path, out: Path, mode: str, overrides: list[str]) -> Trainer:
    cfg = load_config(
        "mllm4text-small",
        [f"data.path={data}", f"output_dir={out}", "data.num_workers=0", *MODES[mode], *overrides],
    )
    torch.manual_seed(0)
    return Trainer(cfg, resume=False)


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
    with synthpedes_in_tempdir(args.size) as (tmp, data):
        trainers = {m: build(data, Path(tmp) / m.replace("+", "-"), m, args.overrides) for m in MODES}
        loader = iter(trainers["none"].loader)
        batches = [next(loader) for _ in range(args.batches)]
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for round_ in range(args.rounds):
            for mode, trainer in trainers.items():
                spent = [train_step(trainer, b) for b in batches]
                if round_:
                    times[mode].extend(spent)
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
