"""Training throughput and the share of step time spent waiting for data.

Trains a CPU recipe (cpu-small) on SynthPedes for a fixed number of steps with the default
number of DataLoader workers, and with data loading in the main process (0 workers) as the
in-run baseline, and prints samples/s and the data-wait share of each (first steps excluded).
With several ``--configs`` each recipe is measured at the same batch: the first row is the baseline.

    python benchmarks/train_throughput.py [--size small] [--steps 60] [--workers 0 2]
    python benchmarks/train_throughput.py --workers 0 --configs cpu-small tbpr-lite   # towers vs tbpr-tiny
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tbpr.train import load_config, train
from training_bench import synthpedes_in_tempdir


def measure(
    data: Path, out: Path, recipe: str, workers: int, steps: int, warmup: int, extra: list[str]
) -> dict:
    cfg = load_config(
        recipe,
        [
            f"data.path={data}",
            f"output_dir={out}",
            f"data.num_workers={workers}",
            f"max_steps={steps}",
            "log_every=1",
            "eval_every=0",
            *extra,
        ],
    )
    train(cfg, resume=False)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r["kind"] == "train" and r["step"] > warmup]
    time_per_step = [1.0 / r["samples_per_s"] for r in records]  # seconds per sample, per step
    total = sum(time_per_step)
    return {
        "recipe": recipe,
        "workers": workers,
        "samples_per_s": len(records) / total,
        "data_wait_frac": sum(r["data_wait_frac"] * t for r, t in zip(records, time_per_step)) / total,
        "batch": cfg.data.batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="small", help="SynthPedes size (default: small)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out (worker start-up)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 2],
        help="DataLoader workers to compare; the first is the baseline (default: 0 2)",
    )
    parser.add_argument(
        "--configs", nargs="+", default=["cpu-small"], help="recipes to compare (default: cpu-small)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with synthpedes_in_tempdir(args.size) as (tmp, data):
        rows = [
            measure(data, Path(tmp) / f"{c}-{w}", c, w, args.steps, args.warmup, args.overrides)
            for c in args.configs
            for w in args.workers
        ]
    base = rows[0]["samples_per_s"]
    first = f"{rows[0]['recipe']}/{rows[0]['workers']}"
    print(
        f"{'recipe':>10} {'workers':>8} {'batch':>6} {'samples/s':>10} {'s/step':>7} {'data wait':>10} "
        f"{'speed vs ' + first:>22}"
    )
    for r in rows:
        print(
            f"{r['recipe']:>10} {r['workers']:>8} {r['batch']:>6} {r['samples_per_s']:>10.1f} "
            f"{r['batch'] / r['samples_per_s']:>7.2f} {100 * r['data_wait_frac']:>9.1f}% "
            f"{r['samples_per_s'] / base:>21.2f}x"
        )


if __name__ == "__main__":
    main()
