"""How wide is the 95% paired-bootstrap interval of an ablation's Rank-1 difference, by test size?

No training: each run's per-query Rank-1 hits are Bernoulli(p) draws, independent across queries,
seeds and rows (the worst case: real runs agree on many queries, which narrows the paired interval).
For each test-query count and seed count it prints the interval width that ``tbpr ablate`` would
report between two rows of equal accuracy (``tbpr.evaluation.bootstrap.paired_bootstrap``), the
normal approximation 2 * 1.96 * 100 * sqrt(2 p (1 - p) / (seeds * queries)), and the number of queries
that approximation needs for a width of ``--target`` points.

    python benchmarks/bootstrap_width.py [--queries 800 8000] [--p 0.15 0.3] [--seeds 1 3] [--target 3]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from tbpr.evaluation.bootstrap import paired_bootstrap

Z = 1.959964  # the normal distribution's 97.5% point


def simulated_width(queries: int, p: float, seeds: int, rng: np.random.Generator) -> float:
    rows = [100.0 * (rng.random((seeds, queries)) < p).mean(0) for _ in range(2)]
    low, high = paired_bootstrap(*rows)
    return high - low


def normal_width(queries: int, p: float, seeds: int) -> float:
    return 2 * Z * 100 * math.sqrt(2 * p * (1 - p) / (seeds * queries))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, nargs="+", default=[800, 8000], help="test-query counts")
    parser.add_argument("--p", type=float, nargs="+", default=[0.15, 0.3], help="Rank-1 of both rows (0-1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3], help="seeds per row")
    parser.add_argument("--target", type=float, default=3.0, help="interval width (points) to size for")
    parser.add_argument("--repeats", type=int, default=5, help="simulations averaged per cell")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"| Rank-1 | seeds | queries | bootstrap width | normal width | queries for {args.target:g} points |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for p in args.p:
        for seeds in args.seeds:
            need = math.ceil((2 * Z * 100 / args.target) ** 2 * 2 * p * (1 - p) / seeds)
            for queries in args.queries:
                width = np.mean([simulated_width(queries, p, seeds, rng) for _ in range(args.repeats)])
                print(
                    f"| {100 * p:.0f} | {seeds} | {queries:,} | {width:.2f} | "
                    f"{normal_width(queries, p, seeds):.2f} | {need:,} |"
                )


if __name__ == "__main__":
    main()
