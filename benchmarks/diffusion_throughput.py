"""Text-to-image throughput of the tiny diffusers pipeline: batched prompts vs one prompt at a time.

The same prompts and seeds are generated with ``text_to_image`` in batches of each ``--batch`` size (1,
the baseline, first), measured in the same run on the same weights; "max |diff|" is the largest latent
difference from the one-at-a-time results (one seeded generator per image makes them equal up to
floating-point rounding). Torch uses ``--threads`` (default 1: the machine may be shared).
Target: batched at least 2x the images/s of one at a time.

    python benchmarks/diffusion_throughput.py [--images 32] [--batch 1 8 32] [--steps 4] [--size 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from tbpr.generate.images.diffusion.sampling import text_to_image
from tbpr.generate.images.diffusion.tiny import tiny_pipeline

COLOURS = ["red", "blue", "green", "black", "white", "grey", "yellow", "pink"]
GARMENTS = ["shirt", "coat", "jacket", "dress", "sweater", "skirt", "hoodie", "vest"]


def prompts(n: int) -> list[str]:
    return [f"a person in a {COLOURS[i % 8]} {GARMENTS[i // 8 % 8]} and dark trousers" for i in range(n)]


def run(pipe, texts: list[str], batch: int, steps: int, size: int) -> tuple[float, torch.Tensor]:
    """Seconds to generate ``texts`` in chunks of ``batch``, and the latents."""
    start = time.perf_counter()
    latents = [
        text_to_image(
            pipe,
            texts[i : i + batch],
            range(i, i + len(texts[i : i + batch])),
            steps,
            height=size,
            width=size,
        ).latents
        for i in range(0, len(texts), batch)
    ]
    return time.perf_counter() - start, torch.cat(latents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per setting (default: 32)")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes; the first is the baseline"
    )
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps per image (default: 4)")
    parser.add_argument("--size", type=int, default=64, help="image height and width (default: 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = tiny_pipeline()
    texts = prompts(args.images)
    run(pipe, texts[:2], 2, 1, args.size)  # warm up
    rows, base = [], None
    for batch in args.batch:
        seconds, latents = run(pipe, texts, batch, args.steps, args.size)
        base = base or (args.images / seconds, latents)
        diff = (latents - base[1]).abs().max().item()
        rows.append((batch, args.images / seconds, args.images / seconds / base[0], diff))
    print(
        f"tiny pipeline, {args.images} images of {args.size}x{args.size}, {args.steps} DDIM steps, guidance 7.5, {args.threads} thread(s)\n"
    )
    print("| prompts per batch | images/s | vs first row | max \\|diff\\| |")
    print("|---:|---:|---:|---:|")
    for batch, rate, ratio, diff in rows:
        print(f"| {batch} | {rate:.2f} | {ratio:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
