"""Text-search latency over large synthetic galleries: exact (flat) vs approximate (HNSW, IVF) indexes.

Each query is timed one at a time as tbpr.search.Searcher runs it (FAISS on one thread): the text tower of a randomly initialized
tbpr-tiny model encodes a caption, then the index returns the top 10. The vector searched is a synthetic
query drawn like the gallery (person prototypes plus noise), so that recall@10 of an approximate index
against the exact one means something; its dimension is the gallery's (128 as tbpr-tiny, 512 as ViT-B).
Also timed: exact search straight from a memory-mapped embeddings file in blocks (no index in RAM).
Build times are measured too. Prints a Markdown table.

    python benchmarks/search_latency.py                    # 10k, 100k, 1M x dims 128 and 512 (~1 h, 2 cores)
    python benchmarks/search_latency.py --quick            # small galleries, a minute
    python benchmarks/search_latency.py --sizes 1000000 --dims 128 --kinds flat ivf --nprobe 8 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from tbpr.data.tokenizer import Tokenizer
from tbpr.models import DualEncoder, ModelConfig
from tbpr.search.index import build_faiss, resolved_params
from tbpr.search.searcher import exact_search, search_one_thread

K = 10
IMAGES_PER_ID = 4
PERSON_SPREAD = 1.0  # persons around their appearance cluster: clusters overlap
COLOURS = ["black", "white", "red", "blue", "grey", "green", "yellow", "brown"]
GARMENTS = ["coat", "jacket", "t-shirt", "hoodie", "dress", "shirt"]


def captions(n: int) -> list[str]:
    """Varied pedestrian descriptions (their content does not change the text tower's cost much)."""
    return [
        f"a person in a {COLOURS[i % 8]} {GARMENTS[i % 6]} and {COLOURS[(i // 8) % 8]} trousers "
        f"carrying a {COLOURS[(i // 3) % 8]} bag, with short {COLOURS[(i // 5) % 8]} hair"
        for i in range(n)
    ]


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic(
    size: int, dim: int, num_queries: int, appearances: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(gallery [size, dim], queries [num_queries, dim]), L2-normalized float32, structured like person
    embeddings: ``appearances`` clusters (similar clothing; 0: none), persons around them, IMAGES_PER_ID
    images per person; each query a noisier view of a random person (a description is vaguer than a photo).
    """
    rng = np.random.default_rng(seed)

    def gauss(n: int) -> np.ndarray:
        return rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)

    num_ids = max(1, size // IMAGES_PER_ID)
    centres = gauss(appearances)[rng.integers(0, appearances, num_ids)] if appearances else 0.0
    persons = centres + PERSON_SPREAD * gauss(num_ids)
    gallery = np.empty((size, dim), dtype=np.float32)
    for start in range(0, size, 100_000):
        rows = np.arange(start, min(size, start + 100_000))
        gallery[rows] = normalize(persons[rows % num_ids] + 0.4 * gauss(len(rows)))
    queries = persons[rng.integers(0, num_ids, num_queries)] + 0.6 * gauss(num_queries)
    return gallery, normalize(queries).astype(np.float32)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


@torch.no_grad()
def time_queries(search, model: DualEncoder, tokens: torch.Tensor, queries: np.ndarray, warmup: int = 5):
    """Per query: (encode seconds, search seconds) and the top-K rows; the first ``warmup`` are untimed."""
    encode_s, search_s, rows = [], [], []
    for i in range(-warmup, len(queries)):
        t0 = time.perf_counter()
        model.encode_text(tokens[i % len(tokens)][None]).numpy()
        t1 = time.perf_counter()
        top = search(queries[i % len(queries)][None])
        t2 = time.perf_counter()
        if i >= 0:
            encode_s.append(t1 - t0)
            search_s.append(t2 - t1)
            rows.append(top[0])
    return encode_s, search_s, np.stack(rows)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-K that the approximate top-K contains."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def run_size(args, size: int, dim: int, model: DualEncoder, tokens: torch.Tensor) -> list[dict]:
    gallery, queries = synthetic(size, dim, args.queries, args.appearances)
    rows: list[dict] = []

    def record(name: str, build_s: float, search, truth: np.ndarray | None) -> np.ndarray:
        enc, sea, found = time_queries(search, model, tokens, queries)
        total = [e + s for e, s in zip(enc, sea)]
        rows.append(
            {
                "size": size,
                "dim": dim,
                "index": name,
                "build_s": build_s,
                "encode_p50": percentiles(enc)[0],
                "search": percentiles(sea),
                "total": percentiles(total),
                "recall": 1.0 if truth is None else recall(found, truth),
            }
        )
        print(format_row(rows[-1]), flush=True)
        return found

    t0 = time.perf_counter()
    flat = build_faiss(gallery, "flat")
    truth = record(
        "flat (exact)", time.perf_counter() - t0, lambda q, f=flat: search_one_thread(f, q, K)[1], None
    )
    del flat
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embeddings.npy"
        np.save(path, gallery)
        mapped = np.load(path, mmap_mode="r")
        record("exact, mmap blocks", 0.0, lambda q, m=mapped: exact_search(m, q, K)[1], truth)
        del mapped
    if "hnsw" in args.kinds and size <= args.hnsw_max_size:
        t0 = time.perf_counter()
        hnsw = build_faiss(gallery, "hnsw", {"ef_search": args.ef_search[0]})
        build_s = time.perf_counter() - t0
        for ef in args.ef_search:
            hnsw.hnsw.efSearch = ef
            record(f"hnsw ef={ef}", build_s, lambda q, h=hnsw: search_one_thread(h, q, K)[1], truth)
        del hnsw
    if "ivf" in args.kinds:
        t0 = time.perf_counter()
        ivf = build_faiss(gallery, "ivf", {"nprobe": args.nprobe[0]})
        build_s = time.perf_counter() - t0
        nlist = resolved_params("ivf", None, size)["nlist"]
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            record(
                f"ivf nlist={nlist} nprobe={nprobe}",
                build_s,
                lambda q, i=ivf: search_one_thread(i, q, K)[1],
                truth,
            )
        del ivf
    return rows


HEADER = (
    "| gallery | dim | index | build (s) | text encode p50 (ms) | search p50 / p99 (ms) "
    "| total p50 / p99 (ms) | recall@10 |\n|---:|---:|---|---:|---:|---:|---:|---:|"
)


def format_row(r: dict) -> str:
    return (
        f"| {r['size']:,} | {r['dim']} | {r['index']} | {r['build_s']:.1f} | {r['encode_p50']:.1f} "
        f"| {r['search'][0]:.1f} / {r['search'][1]:.1f} | {r['total'][0]:.1f} / {r['total'][1]:.1f} "
        f"| {r['recall']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument(
        "--kinds", nargs="*", default=["hnsw", "ivf"], choices=["hnsw", "ivf"], help="approximate indexes"
    )
    parser.add_argument(
        "--appearances",
        type=int,
        default=1000,
        help="appearance clusters of the synthetic persons (0: unstructured random vectors, hardest for ANN)",
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries per configuration")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 256], help="hnsw efSearch values")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 128], help="ivf nprobe values")
    parser.add_argument(
        "--hnsw-max-size",
        type=int,
        default=1_000_000,
        help="skip HNSW above this gallery size (slow to build)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="galleries of 2k and 20k, dim 128, 50 queries")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.dims, args.queries = [2_000, 20_000], [128], 50
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DualEncoder(ModelConfig(arch="tbpr-tiny", image_size=(128, 64))).eval()
    tokens = Tokenizer(77)(captions(64))
    print(f"torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}", flush=True)
    print(HEADER, flush=True)
    rows = [
        row for dim in args.dims for size in args.sizes for row in run_size(args, size, dim, model, tokens)
    ]
    print("\n" + HEADER)
    print("\n".join(format_row(r) for r in rows))


if __name__ == "__main__":
    main()
