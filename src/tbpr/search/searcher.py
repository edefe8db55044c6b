"""Query an index with text: encode the query with the index's own model, return the top-k images."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from tbpr.errors import ConfigError
from tbpr.evaluation.figures import render_retrieval_figure
from tbpr.search.index import configure_search, load_index_model, read_index_meta

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """One ranked gallery image: ``path`` is relative to the index's image folder."""

    rank: int
    id: str
    score: float
    path: str


class Searcher:
    """A loaded index and the model it was built with (or ``run``, checked to be that same model)."""

    def __init__(self, index_dir: Path, device: str = "cpu", run: Path | None = None):
        self.index_dir = Path(index_dir)
        self.meta = read_index_meta(self.index_dir)
        self.device = torch.device(device)
        self.loaded = load_index_model(self.meta, run, device)
        self._tokenizer = self.loaded.tokenizer()
        data = self.index_dir / self.meta["data"]
        items = json.loads((data / "items.json").read_text())
        self._ids: list[str] = items["id"]
        self._paths: list[str] = items["path"]
        self._row = {image_id: row for row, image_id in enumerate(self._ids)}
        self._images_dir = Path(self.meta["images_dir"])
        self._index = faiss.read_index(str(data / "faiss.index"))
        self._embeddings = np.load(data / "embeddings.npy", mmap_mode="r")  # the image tower's, per item
        configure_search(self._index, self.meta["kind"], self.meta["params"])
        log.info("loaded %s: %d images, %s index", self.index_dir, len(self), self.meta["kind"])

    def __len__(self) -> int:
        return len(self._ids)

    @torch.no_grad()
    def encode_query(self, query: str) -> np.ndarray:
        """The L2-normalized text embedding of ``query`` as float32 [1, D]."""
        tokens = self._tokenizer([query]).to(self.device)
        return self.loaded.model.encode_text(tokens).float().cpu().numpy()

    def search(self, query: str, k: int = 10) -> list[SearchResult]:
        """The ``k`` gallery images most similar to ``query`` (fewer if the gallery is smaller)."""
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer (got {k!r})")
        if not query or not query.strip():
            raise ConfigError("the query is empty: describe the person to search for")
        return self._ranked(self.encode_query(query), k)

    def similar(self, image_id: str, k: int = 10) -> list[SearchResult]:
        """The ``k`` gallery images most similar to gallery image ``image_id`` (itself left out).

        Image to image: the query is the image's own embedding from the image tower, stored in the
        index. KeyError if the index has no such id.
        """
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer (got {k!r})")
        query = np.asarray(self._embeddings[self._row[image_id]], dtype=np.float32)[None]
        hits = self._ranked(query, k + 1)
        others = [h for h in hits if h.id != image_id][:k]
        return [SearchResult(rank, h.id, h.score, h.path) for rank, h in enumerate(others, start=1)]

    def _ranked(self, query: np.ndarray, k: int) -> list[SearchResult]:
        scores, rows = search_one_thread(self._index, query, min(k, len(self)))
        return [
            SearchResult(rank, self._ids[row], float(score), self._paths[row])
            for rank, (score, row) in enumerate(zip(scores[0], rows[0]), start=1)
            if row >= 0
        ]

    def image_path(self, image_id: str) -> str:
        """A gallery image's path relative to the indexed folder; KeyError if the index has no such id."""
        return self._paths[self._row[image_id]]

    def image_file(self, image_id: str) -> Path:
        """The absolute path of a gallery image; KeyError if the index has no such id."""
        return self._images_dir / self.image_path(image_id)

    def info(self) -> dict:
        """What is being searched: the model, the index kind and parameters, the size and the folder."""
        model = self.meta["model"]
        return {
            "model": {
                "arch": model["arch"],
                "checkpoint": model["checkpoint_path"],
                "fingerprint": model["fingerprint"],
            },
            "kind": self.meta["kind"],
            "params": self.meta["params"],
            "size": len(self),
            "dim": self.meta["dim"],
            "images_dir": str(self._images_dir),
            "unreadable": self.meta["unreadable"],
            "updated": self.meta["updated"],
        }


def search_one_thread(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` on one OpenMP thread (the calling thread's setting only, restored after).

    A single query gains nothing from FAISS's threads: on 2 cores an exact search over 1M x 128 took
    22 ms on one thread and 71 ms on two (docs/benchmarks.md); concurrent queries still run in parallel.
    """
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(threads)


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int, block: int = 262_144):
    """Exact top-k inner products of ``queries`` [Q, D] over ``embeddings`` [N, D], read in blocks.

    Works on a memory-mapped array without loading it whole. Returns (scores, rows), each [Q, k'],
    k' = min(k, N), best first.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(embeddings))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(embeddings), block):
        scores = queries @ np.asarray(embeddings[start : start + block], dtype=np.float32).T
        kk = min(k, scores.shape[1])
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        best_rows = np.concatenate([best_rows, top + start], axis=1)
        if best_scores.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(best_rows, order, axis=1)


def format_results(results: list[SearchResult]) -> str:
    """An aligned text table: rank, score and path of each result."""
    width = max([len("rank")] + [len(str(r.rank)) for r in results])
    lines = [f"{'rank':>{width}}  {'score':>7}  path"]
    lines += [f"{r.rank:>{width}}  {r.score:>7.4f}  {r.path}" for r in results]
    return "\n".join(lines)


def write_contact_sheet(searcher: Searcher, query: str, results: list[SearchResult], out: Path) -> Path:
    """A PNG of the query text and its ranked images with rank and score (grey borders: no ground truth)."""
    return render_retrieval_figure(
        [query],
        [[searcher.image_file(r.id) for r in results]],
        None,
        out,
        top_k=len(results),
        ranked_scores=[[r.score for r in results]],
    )
