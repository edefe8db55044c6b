"""Evaluation speed and memory: tbpr.evaluation.retrieval_metrics vs the field's implementation.

Each measurement runs in a fresh subprocess that builds a similarity matrix with a realistic person-id
structure, resets its peak-RSS counter (Linux /proc/self/clear_refs), runs the evaluation and reports
the wall time (fastest of --repeats), the absolute peak RSS (resource.getrusage) and the increase of
that peak over the RSS after building the inputs (so the fixed cost of the matrix itself is visible).
The parent checks that both implementations skip the same queries and agree on every metric (to
1e-3 points: the reference sums in float32 as IRRA does) and prints a table with the ratios.

    python benchmarks/eval_speed.py --repeats 3   # CUHK-PEDES and ICFG-PEDES test sizes (~12 GB peak)
    python benchmarks/eval_speed.py --quick       # a small size, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from tbpr.evaluation.metrics import retrieval_metrics
from tbpr.evaluation.reference import reference_retrieval_metrics

IMPLEMENTATIONS = {"tbpr": retrieval_metrics, "reference": reference_retrieval_metrics}
METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP")
# The reference computes in float32 (as IRRA does), so its means differ from ours in the last bits.
TOLERANCE = 1e-3  # percentage points


@dataclass(frozen=True)
class Size:
    """A test split: person ids, gallery images, and captions (queries), each caption of one image."""

    num_ids: int
    num_images: int
    num_captions: int


SIZES = {
    "cuhk-pedes": Size(num_ids=1_000, num_images=3_074, num_captions=6_156),
    "icfg-pedes": Size(num_ids=1_000, num_images=19_848, num_captions=19_848),
    "quick": Size(num_ids=300, num_images=1_000, num_captions=2_000),
}


def build_inputs(
    size: Size, seed: int = 0, dim: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(similarity captions x images float32, caption pids, image pids) from noisy per-id prototypes."""
    rng = np.random.default_rng(seed)
    # Every id has at least one image; the rest are spread unevenly (lognormal weights).
    weights = rng.lognormal(0.0, 0.5, size.num_ids)
    per_id = 1 + rng.multinomial(size.num_images - size.num_ids, weights / weights.sum())
    image_pids = np.repeat(np.arange(size.num_ids), per_id)
    # Every image has num_captions // num_images captions; the remainder go to random images.
    caption_images = np.concatenate(
        [
            np.repeat(np.arange(size.num_images), size.num_captions // size.num_images),
            rng.choice(size.num_images, size.num_captions % size.num_images, replace=False),
        ]
    )
    caption_pids = image_pids[np.sort(caption_images)]
    prototypes = rng.standard_normal((size.num_ids, dim), dtype=np.float32)

    def features(pids: np.ndarray, noise: float) -> torch.Tensor:
        feats = torch.from_numpy(
            prototypes[pids] + noise * rng.standard_normal((len(pids), dim), dtype=np.float32)
        )
        return torch.nn.functional.normalize(feats, dim=1)

    text, image = features(caption_pids, 2.4), features(image_pids, 1.6)
    similarity = torch.empty(len(caption_pids), len(image_pids))
    for start in range(0, len(text), 4096):
        torch.matmul(text[start : start + 4096], image.T, out=similarity[start : start + 4096])
    return similarity, torch.from_numpy(caption_pids), torch.from_numpy(image_pids)


def current_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def measure(size_name: str, implementation: str, repeats: int) -> dict:
    """Worker: build the inputs, reset the peak RSS, evaluate ``repeats`` times (fastest time kept)."""
    impl = IMPLEMENTATIONS[implementation]
    warm = torch.rand(64, 32)
    impl(warm, torch.arange(64) % 8, torch.arange(32) % 8)  # thread pools and lazy init off the clock
    similarity, caption_pids, image_pids = build_inputs(SIZES[size_name])
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak-RSS counter that getrusage reports
    base = current_rss_bytes()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = impl(similarity, caption_pids, image_pids)
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": min(seconds), "peak": peak, "increase": peak - base, "metrics": metrics}


def run_worker(size_name: str, implementation: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", size_name, implementation, "--repeats", str(repeats)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def compare(ours: dict, ref: dict) -> float:
    """Largest metric difference (percentage points); raises if the results disagree."""
    if ours["skipped_queries"] != ref["skipped_queries"]:
        raise AssertionError("the implementations skip different queries")
    diff = max(abs(ours[key] - ref[key]) for key in METRIC_KEYS)
    if diff > TOLERANCE:
        raise AssertionError(f"metrics differ by {diff:.2e} points: {ours} vs {ref}")
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small 'quick' size")
    parser.add_argument(
        "--repeats", type=int, default=1, help="evaluations per measurement; the fastest is reported"
    )
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(*args.worker, args.repeats)))
        return

    gb = 1024**3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeat(s)")
    print("| size (queries x gallery) | impl | time s | peak RSS GB | increase GB | R1 | mAP | mINP |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    summary = []
    for size_name in ["quick"] if args.quick else ["cuhk-pedes", "icfg-pedes"]:
        size = SIZES[size_name]
        runs = {impl: run_worker(size_name, impl, args.repeats) for impl in IMPLEMENTATIONS}
        for impl, run in runs.items():
            m = run["metrics"]
            print(
                f"| {size_name} ({size.num_captions:,} x {size.num_images:,}) | {impl} | {run['seconds']:.2f} "
                f"| {run['peak'] / gb:.2f} | {run['increase'] / gb:.2f} "
                f"| {m['R1']:.2f} | {m['mAP']:.2f} | {m['mINP']:.2f} |"
            )
        ours, ref = runs["tbpr"], runs["reference"]
        diff = compare(ours["metrics"], ref["metrics"])
        summary.append(
            f"{size_name}: {ref['seconds'] / ours['seconds']:.1f}x faster, peak RSS "
            f"{ours['peak'] / ref['peak']:.3f} of the reference's (increase {ours['increase'] / ref['increase']:.3f}), "
            f"max metric difference {diff:.1e} points"
        )
    print("\n".join(["", *summary]))


if __name__ == "__main__":
    main()
