"""Caption encoding at evaluation: batches in caption order against batches of similar length (what
``tbpr.evaluation.evaluator.encode_split`` does), with a recipe's text tower, in one run.

Both orders encode the same captions with the same model; the text towers cut a batch's padding at its
longest caption, so grouping captions by length encodes fewer padding tokens. Prints the median time of
--rounds rounds (the two orders interleaved, so machine load affects both alike), the ratio, the padded
token counts and the largest feature difference.

    python benchmarks/caption_encoding.py --data data/synthpedes-small [--config tbpr-lite] [--rounds 3]
    python benchmarks/caption_encoding.py                      # SynthPedes tiny in a temporary folder
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from tbpr.data.readers import read_dataset
from tbpr.evaluation.evaluator import length_batches
from tbpr.models import DualEncoder
from tbpr.train import load_config
from training_bench import synthpedes_in_tempdir


@torch.no_grad()
def encode(
    model: DualEncoder, tokens: torch.Tensor, batches: list[list[int]]
) -> tuple[torch.Tensor, float, int]:
    """(features in caption order, seconds, tokens encoded including padding)."""
    feats, padded = torch.empty(len(tokens), model.config.embed_dim), 0
    start = time.perf_counter()
    for batch in batches:
        rows = tokens[batch]
        feats[batch] = model.encode_text(rows)
        padded += len(batch) * int((rows != model.tokenizer.pad_id).sum(dim=1).max())
    return feats, time.perf_counter() - start, padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a dataset folder (default: SynthPedes tiny, generated)")
    parser.add_argument("--split", default="test", help="whose captions to encode (default: test)")
    parser.add_argument(
        "--config", default="tbpr-lite", help="the recipe whose model encodes (default: tbpr-lite)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="captions per batch (default: 256)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per order (default: 3)")
    args = parser.parse_args()

    with nullcontext((None, args.data)) if args.data else synthpedes_in_tempdir("tiny") as (_, data):
        manifest = read_dataset(data).split(args.split)
    model = DualEncoder(load_config(args.config, []).model).eval()
    tokens = model.tokenizer([c.text for c in manifest.captions])
    n = len(manifest.captions)
    orders = {
        "caption order": [list(range(i, min(i + args.batch_size, n))) for i in range(0, n, args.batch_size)],
        "length batches": [
            b.tolist() for b in length_batches(tokens, model.tokenizer.pad_id, args.batch_size)
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in orders}
    results = {}
    for _ in range(args.rounds):
        for name, batches in orders.items():
            feats, seconds, padded = encode(model, tokens, batches)
            times[name].append(seconds)
            results[name] = feats, padded
    (base, base_tokens), (ours, our_tokens) = results.values()
    print(
        f"{args.config}: {n} captions of {data} ({args.split}), batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    print("| order | median s | captions/s | tokens incl. padding | ratio |")
    print("|---|---:|---:|---:|---:|")
    base_s = statistics.median(times["caption order"])
    for name, tok in (("caption order", base_tokens), ("length batches", our_tokens)):
        s = statistics.median(times[name])
        print(f"| {name} | {s:.2f} | {n / s:.0f} | {tok:,} | {base_s / s:.2f}x |")
    print(f"\nlargest feature difference: {(base - ours).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
