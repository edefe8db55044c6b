"""Throughput of the SynthPedes renderer image backend (``tbpr generate persons --backend synthpedes``).

Measures images/s, in the same run, of
- the backend alone, one request at a time (the baseline) and as batches of ``--batch`` requests with
  ``--workers`` render processes (a warm pool: the first batch, which starts it, is not timed);
- the whole job (``run_image_job``: seeds, person filter, atomic PNG writes, fsynced store appends) with
  1 and ``--workers`` render processes, into a fresh store each time.
Each timing is the best of ``--repeats``. Prints a table with ratios against the baseline.

    python benchmarks/image_generation.py [--images 64] [--batch 16] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from tbpr.generate.images.filters import make_filter
from tbpr.generate.images.job import run_image_job
from tbpr.generate.images.persons import load_vocabulary, person_work
from tbpr.generate.images.renderer import RendererBackend


def best_rate(run, images: int, repeats: int) -> float:
    """Images/s of ``run()`` (which makes ``images`` images), best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return images / best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64, help="images per measurement (default: 64)")
    parser.add_argument("--batch", type=int, default=16, help="requests per batch (default: 16)")
    parser.add_argument(
        "--workers", type=int, default=2, help="render processes to compare with 1 (default: 2)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timings per row; the best counts (default: 3)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = person_work(load_vocabulary(), args.images // 2, 2, seed=0)
    requests = [w.request for w in work]
    rows = []
    single = RendererBackend()
    rows.append(
        (
            "backend, one request at a time",
            best_rate(lambda: [single.generate([r]) for r in requests], len(requests), args.repeats),
        )
    )
    batches = [requests[i : i + args.batch] for i in range(0, len(requests), args.batch)]
    for workers in sorted({1, args.workers}):
        backend = RendererBackend(workers=workers)
        backend.generate(batches[0])  # start the pool
        rate = best_rate(
            lambda b=backend: [b.generate(batch) for batch in batches], len(requests), args.repeats
        )
        rows.append((f"backend, batches of {args.batch}, {workers} process(es)", rate))
        backend.close()
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))
        for workers in sorted({1, args.workers}):

            def job(workers=workers) -> None:
                store = Path(tmp) / f"w{workers}-{next(counter)}.jsonl"
                run_image_job(
                    store,
                    RendererBackend(workers=workers),
                    work,
                    "bench",
                    batch_size=args.batch,
                    check=make_filter("basic"),
                )

            rows.append(
                (f"job (store + PNG files), {workers} process(es)", best_rate(job, len(work), args.repeats))
            )
    base = rows[0][1]
    print(f"{'measurement':<48} {'images/s':>9} {'x baseline':>11}")
    for name, rate in rows:
        print(f"{name:<48} {rate:>9.1f} {rate / base:>11.2f}")


if __name__ == "__main__":
    main()
