"""Query an index with text: encode the query with the index's own model, return the top-k images."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from tbpr.data.image_files import read_unchanged
from tbpr.errors import ConfigError, TbprError
from tbpr.evaluation.figures import render_retrieval_figure
from tbpr.evaluation.run_eval import LoadedRun
from tbpr.search.index import INDEX_FILE, configure_search, load_index_model, read_index_meta

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """One ranked gallery image: ``path`` is relative to the index's image folder."""

    rank: int
    id: str
    score: float
    path: str


@dataclass(frozen=True)
class _Generation:
    """One generation of the index and its model, swapped as a whole when ``tbpr index update`` writes one."""

    stamp: tuple[int, int] | None  # index.json's inode and mtime when it was read
    meta: dict
    loaded: LoadedRun
    tokenizer: Callable
    ids: list[str]
    paths: list[str]
    row: dict[str, int]
    stats: list[tuple]  # each file's (size, mtime_ns, inode) when indexed; inode None in older indexes
    index: faiss.Index
    embeddings: np.ndarray  # the image tower's embedding of each item (memory-mapped), for find similar


def _stamp(index_dir: Path) -> tuple[int, int] | None:
    """What changes whenever index.json is replaced: its inode and mtime (None if it is missing)."""
    try:
        st = (index_dir / INDEX_FILE).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


class Searcher:
    """A loaded index and the model it was built with (or ``run``, checked to be that same model).

    ``refresh()`` switches to a newer generation of the index; every query uses one generation throughout.
    """

    def __init__(self, index_dir: Path, device: str = "cpu", run: Path | None = None):
        self.index_dir = Path(index_dir)
        self.device = torch.device(device)
        self._run = run
        self._reloading = threading.Lock()
        self._gen = self._load(None)
        log.info("loaded %s: %d images, %s index", self.index_dir, len(self), self._gen.meta["kind"])

    def _load(self, previous: _Generation | None) -> _Generation:
        """The generation index.json names now; ``previous``'s model is reused if it is the same."""
        tries = 0
        while True:
            stamp = _stamp(self.index_dir)
            meta = read_index_meta(self.index_dir)
            same_model = previous and previous.meta["model"]["fingerprint"] == meta["model"]["fingerprint"]
            loaded = previous.loaded if same_model else load_index_model(meta, self._run, self.device)
            data = self.index_dir / meta["data"]
            try:
                items = json.loads((data / "items.json").read_text())
                index = faiss.read_index(str(data / "faiss.index"))
                embeddings = np.load(data / "embeddings.npy", mmap_mode="r")  # the image tower's, per item
            except (OSError, RuntimeError):  # faiss: RuntimeError; a newer update may have removed it
                tries += 1
                if tries == 3 or _stamp(self.index_dir) == stamp:
                    raise
                continue
            configure_search(index, meta["kind"], meta["params"])
            ids = items["id"]
            row = {image_id: i for i, image_id in enumerate(ids)}
            stats = list(zip(items["size"], items["mtime_ns"], items.get("ino") or [None] * len(ids)))
            return _Generation(
                stamp, meta, loaded, loaded.tokenizer(), ids, items["path"], row, stats, index, embeddings
            )

    def refresh(self) -> bool:
        """Load the generation ``tbpr index update`` wrote since the last check; True if it did.

        Costs one stat of index.json when nothing changed. Queries already running finish on the
        generation they started with; one that cannot be loaded is logged and the current one kept.
        """
        stamp = _stamp(self.index_dir)
        if stamp == self._gen.stamp or not self._reloading.acquire(blocking=False):
            return False  # unchanged, or another thread is loading it
        try:
            current = self._gen
            if stamp == current.stamp:  # loaded by another thread meanwhile
                return False
            try:
                new = self._load(current)
            except (TbprError, OSError, RuntimeError) as err:
                log.warning(
                    "%s changed but cannot be loaded (%s); still searching the previous one",
                    self.index_dir,
                    err,
                )
                self._gen = dataclasses.replace(current, stamp=stamp)  # not retried until it changes again
                return False
            self._gen = new
            log.info("switched %s to %s: %d images", self.index_dir, new.meta["data"], len(new.ids))
            return True
        finally:
            self._reloading.release()

    def __len__(self) -> int:
        return len(self._gen.ids)

    @torch.no_grad()
    def encode_query(self, query: str) -> np.ndarray:
        """The L2-normalized text embedding of ``query`` as float32 [1, D]."""
        return self._encode(self._gen, query)

    def _encode(self, gen: _Generation, query: str) -> np.ndarray:
        tokens = gen.tokenizer([query]).to(self.device)
        return gen.loaded.model.encode_text(tokens).float().cpu().numpy()

    @torch.no_grad()
    def search(self, query: str, k: int = 10) -> list[SearchResult]:
        """The ``k`` gallery images most similar to ``query`` (fewer if the gallery is smaller)."""
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer (got {k!r})")
        if not query or not query.strip():
            raise ConfigError("the query is empty: describe the person to search for")
        gen = self._gen
        return self._ranked(gen, self._encode(gen, query), k)

    def similar(self, image_id: str, k: int = 10) -> list[SearchResult]:
        """The ``k`` gallery images most similar to gallery image ``image_id`` (itself left out).

        Image to image: the query is the image's own embedding from the image tower, stored in the
        index. KeyError if the index has no such id.
        """
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer (got {k!r})")
        gen = self._gen
        query = np.asarray(gen.embeddings[gen.row[image_id]], dtype=np.float32)[None]
        hits = self._ranked(gen, query, k + 1)
        others = [h for h in hits if h.id != image_id][:k]
        return [SearchResult(rank, h.id, h.score, h.path) for rank, h in enumerate(others, start=1)]

    @staticmethod
    def _ranked(gen: _Generation, query: np.ndarray, k: int) -> list[SearchResult]:
        scores, rows = search_one_thread(gen.index, query, min(k, len(gen.ids)))
        return [
            SearchResult(rank, gen.ids[row], float(score), gen.paths[row])
            for rank, (score, row) in enumerate(zip(scores[0], rows[0]), start=1)
            if row >= 0
        ]

    def image_path(self, image_id: str) -> str:
        """A gallery image's path relative to the indexed folder; KeyError if the index has no such id."""
        gen = self._gen
        return gen.paths[gen.row[image_id]]

    def image_file(self, image_id: str) -> Path:
        """The absolute path of a gallery image; KeyError if the index has no such id."""
        gen = self._gen
        return Path(gen.meta["images_dir"]) / gen.paths[gen.row[image_id]]

    def read_image(self, image_id: str) -> bytes:
        """The bytes of a gallery image if its file is still the one indexed (same size, mtime and inode,
        inside the image folder); KeyError for an unknown id, DataError when the file changed or is gone."""
        gen = self._gen
        row = gen.row[image_id]
        return read_unchanged(Path(gen.meta["images_dir"]), gen.paths[row], *gen.stats[row])

    def info(self) -> dict:
        """What is being searched: the model, the index kind and parameters, the size and the folder."""
        gen = self._gen
        meta, model = gen.meta, gen.meta["model"]
        return {
            "model": {
                "arch": model["arch"],
                "checkpoint": model["checkpoint_path"],
                "fingerprint": model["fingerprint"],
            },
            "kind": meta["kind"],
            "params": meta["params"],
            "size": len(gen.ids),
            "dim": meta["dim"],
            "images_dir": meta["images_dir"],
            "unreadable": meta["unreadable"],
            "updated": meta["updated"],
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
