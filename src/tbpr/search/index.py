"""A searchable index of an image folder: build it, update it, resume an interrupted build.

Layout of an index folder (see docs/search.md)::

    INDEX/index.json          what was indexed with which model; written last, so it marks a complete index
    INDEX/gen-0001/           the data of the current generation (index.json names it)
        embeddings.npy        float32 [N, D], L2-normalized, row i = image i of items.json
        items.json            columns id, path (relative to the folder), sha256, size, mtime_ns, ino
        unreadable.json       files that were skipped: path, reason, size, mtime_ns
        faiss.index           the FAISS index over the embeddings (flat, hnsw or ivf)
    INDEX/parts/              encoded chunks of a build or update in progress (removed when it completes)
    INDEX/.lock               held (flock) by the one build or update writing the folder

Images are encoded in chunks; each finished chunk is written to ``parts/`` (embeddings, then its item
list, both atomically), so re-running an interrupted build or update encodes only what is missing.
An update writes a new generation folder, switches ``index.json`` to it and then removes the old one:
a reader sees the old or the new index, never a mixture. A writer killed at any step of that switch is
recovered by the next build or update of the folder (``_recover``): what ``index.json`` does not name
is removed, and parts the current generation already holds are dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tbpr.atomic import atomic_write, write_json
from tbpr.crashsafe import exclusive_lock, kill_point
from tbpr.data.datasets import ImageDataset
from tbpr.data.readers import summarize
from tbpr.errors import ConfigError, DataError
from tbpr.evaluation.run_eval import LoadedRun, load_run, resolve_checkpoint
from tbpr.search.folder import FileStat, file_sha256, gallery_manifest, image_id, inspect_file, scan_folder

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
PARTS_DIR = "parts"
LOCK_FILE = ".lock"
FORMAT = "tbpr-index"
VERSION = 1
KINDS = ("flat", "hnsw", "ivf")
# Construction and query parameters of the approximate kinds (ivf nlist None: 4 * sqrt(N)).
DEFAULT_PARAMS = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 80, "ef_search": 64},
    "ivf": {"nlist": None, "nprobe": 16},
}
_PART = re.compile(r"part-(\d{6})\.json")
_ADD_BATCH = 65536  # rows added to a FAISS index at a time (progress bar granularity)


# ---------------------------------------------------------------------------------------------- FAISS


def build_faiss(embeddings: np.ndarray, kind: str = "flat", params: dict | None = None) -> faiss.Index:
    """An inner-product FAISS index over L2-normalized ``embeddings`` [N, D] (cosine similarity).

    ``flat`` is exact (IndexFlatIP); ``hnsw`` (IndexHNSWFlat) and ``ivf`` (IndexIVFFlat, trained on a
    sample of at most 64 rows per list) are approximate. Query-time parameters are set too.
    """
    params = resolved_params(kind, params, len(embeddings))
    n, dim = embeddings.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
    else:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, size=min(n, 64 * params["nlist"]), replace=False)
        index.train(np.ascontiguousarray(embeddings[np.sort(sample)], dtype=np.float32))
    for start in tqdm(range(0, n, _ADD_BATCH), desc=f"faiss {kind}", unit="block", disable=None, leave=False):
        index.add(np.ascontiguousarray(embeddings[start : start + _ADD_BATCH], dtype=np.float32))
    configure_search(index, kind, params)
    return index


def resolved_params(kind: str, params: dict | None, size: int) -> dict:
    """The defaults of ``kind`` updated with ``params``; ivf's nlist defaults to 4 * sqrt(size)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    unknown = set(params or {}) - set(DEFAULT_PARAMS[kind])
    if unknown:
        raise ConfigError(
            f"index kind {kind} has no parameter(s) {sorted(unknown)}; it takes {list(DEFAULT_PARAMS[kind])}"
        )
    merged = {**DEFAULT_PARAMS[kind], **{k: v for k, v in (params or {}).items() if v is not None}}
    if kind == "ivf":
        # faiss wants about 39 training points per list: small galleries get fewer lists
        nlist = merged["nlist"] or round(4 * math.sqrt(size))
        merged["nlist"] = max(1, min(nlist, size // 39))
    for key, value in merged.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"index parameter {key}={value!r} must be a positive integer")
    return merged


def configure_search(index: faiss.Index, kind: str, params: dict) -> None:
    """Apply the query-time parameters (hnsw efSearch, ivf nprobe) to a built or loaded index."""
    if kind == "hnsw":
        index.hnsw.efSearch = params["ef_search"]
    elif kind == "ivf":
        index.nprobe = min(params["nprobe"], index.nlist)


# ---------------------------------------------------------------------------------------------- model


def checkpoint_fingerprint(path: Path) -> str:
    """'sha256:<hex>' of a checkpoint file: what identifies the model an index was built with."""
    return "sha256:" + file_sha256(path)


def _model_record(loaded: LoadedRun, run: Path, checkpoint: str, fingerprint: str) -> dict:
    cfg = loaded.config
    return {
        "run": str(Path(run).resolve()),
        "checkpoint": checkpoint,
        "checkpoint_path": str(loaded.checkpoint.resolve()),
        "fingerprint": fingerprint,
        "arch": cfg.model.arch,
        "image_size": list(cfg.model.image_size),
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "context_length": cfg.model.context_length,
    }


def load_index_model(meta: dict, run: Path | None = None, device: str = "cpu") -> LoadedRun:
    """The model an index was built with (``run``: check that this run's checkpoint is that model).

    Raises ConfigError if the checkpoint is gone or its fingerprint differs from the index's.
    """
    recorded = meta["model"]
    if run is None:
        path = Path(recorded["checkpoint_path"])
        if not path.is_file():
            raise ConfigError(
                f"the checkpoint this index was built with, {path}, no longer exists; pass the run that "
                "holds it (--run) or rebuild the index with `tbpr index build`"
            )
    else:
        name = recorded["checkpoint"] if recorded["checkpoint"] in ("best", "last") else "best"
        path = resolve_checkpoint(Path(run), name)
    fingerprint = checkpoint_fingerprint(path)
    if fingerprint != recorded["fingerprint"]:
        raise ConfigError(
            f"model mismatch: the index was built with {recorded['checkpoint_path']} ({recorded['arch']}, "
            f"{recorded['fingerprint'][:19]}...) but {path} is a different model ({fingerprint[:19]}...); "
            "embeddings of different models are not comparable: query with the model the index was built "
            "with, or build a new index with `tbpr index build --run ...`"
        )
    return load_run(path, device=device)


# ---------------------------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class Encoded:
    """The outcome for one file: its hash, and either where its embedding is or why it was skipped."""

    sha256: str
    problem: str | None
    source: str  # a part name, or 'index' for the current generation's embeddings
    row: int  # row in the source's embeddings (-1 when skipped)


def _key(stat: FileStat) -> tuple[str, int, int]:
    return stat.path, stat.size, stat.mtime_ns


def _load_parts(parts_dir: Path, origin: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Finished parts of an interrupted run with the same origin: (key -> Encoded, part -> embeddings).

    Parts of another model or folder are deleted; so are leftovers of unfinished writes.
    """
    done: dict[tuple, Encoded] = {}
    arrays: dict[str, np.ndarray] = {}
    for leftover in parts_dir.glob(".*.tmp"):
        leftover.unlink()
    for meta_file in sorted(parts_dir.glob("part-*.json")):
        part = json.loads(meta_file.read_text())
        name = meta_file.stem
        if part["origin"] != origin:
            log.info("discarding %s: it was encoded with another model or image folder", meta_file)
            meta_file.unlink()
            (parts_dir / f"{name}.npy").unlink(missing_ok=True)
            continue
        arrays[name] = np.load(parts_dir / f"{name}.npy", mmap_mode="r")
        for f in part["files"]:
            done[(f["path"], f["size"], f["mtime_ns"])] = Encoded(f["sha256"], f["problem"], name, f["row"])
    return done, arrays


@torch.no_grad()
def _encode_images(
    loaded: LoadedRun, images_dir: Path, paths: list[str], batch_size: int, num_workers: int, device, bar
) -> np.ndarray:
    """L2-normalized float32 image embeddings [len(paths), D] with the run's own preprocessing."""
    dataset = ImageDataset(gallery_manifest(images_dir, paths), loaded.image_transform())
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    loaded.model.eval()
    feats = []
    for batch in loader:
        feats.append(loaded.model.encode_image(batch["image"].to(device)).float().cpu().numpy())
        bar.update(len(batch["image"]))
    return np.concatenate(feats)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class _Encoding:
    """What ``_encode_pending`` knows: the outcome per file key and the part embeddings they point to."""

    done: dict[tuple, Encoded]
    arrays: dict[str, np.ndarray]
    encoded: int  # images encoded by this call (not counting parts of an earlier interrupted run)


def _encode_pending(
    loaded: LoadedRun,
    images_dir: Path,
    files: list[FileStat],
    parts_dir: Path,
    origin: dict,
    chunk_size: int,
    batch_size: int,
    num_workers: int,
    device,
) -> _Encoding:
    """Hash, check and encode ``files`` in chunks, each saved to ``parts_dir`` when finished.

    Files found in the parts of an interrupted run with the same ``origin`` are not encoded again.
    """
    parts_dir.mkdir(parents=True, exist_ok=True)
    done, arrays = _load_parts(parts_dir, origin)
    todo = [f for f in files if _key(f) not in done]
    if len(todo) < len(files):
        log.info(
            "resuming: %d of %d files were encoded before the interruption",
            len(files) - len(todo),
            len(files),
        )
    numbers = [int(m.group(1)) for p in parts_dir.iterdir() if (m := _PART.fullmatch(p.name))]
    next_part = max(numbers, default=-1) + 1
    encoded = 0
    bar = tqdm(total=len(todo), desc="encoding images", unit="img", disable=None)
    with bar, ThreadPoolExecutor() as pool:
        for chunk in _chunks(todo, chunk_size):
            checks = list(pool.map(inspect_file, [images_dir / f.path for f in chunk]))
            readable = [f.path for f, (_, problem) in zip(chunk, checks) if problem is None]
            bar.update(len(chunk) - len(readable))
            name = f"part-{next_part:06d}"
            emb = (
                _encode_images(loaded, images_dir, readable, batch_size, num_workers, device, bar)
                if readable
                else None
            )
            rows = iter(range(len(readable)))
            records = [
                {**vars(f), "sha256": sha, "problem": problem, "row": -1 if problem else next(rows)}
                for f, (sha, problem) in zip(chunk, checks)
            ]
            if emb is not None:
                atomic_write(parts_dir / f"{name}.npy", lambda fh, emb=emb: np.save(fh, emb))
                arrays[name] = emb
            payload = json.dumps({"origin": origin, "files": records}).encode()
            atomic_write(parts_dir / f"{name}.json", lambda fh, payload=payload: fh.write(payload))
            for r in records:
                done[(r["path"], r["size"], r["mtime_ns"])] = Encoded(
                    r["sha256"], r["problem"], name, r["row"]
                )
            encoded += len(readable)
            next_part += 1
    return _Encoding(done, arrays, encoded)


# ---------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Row:
    stat: FileStat
    enc: Encoded


def _write_generation(
    index_dir: Path,
    meta: dict,
    rows: list[_Row],
    unreadable: list[_Row],
    arrays: dict[str, np.ndarray],
) -> None:
    """Write a new generation folder from ``rows`` (sorted by path), then ``index.json`` pointing to it.

    The previous generation and the parts folder are removed once the new index.json is in place.
    """
    if not rows:
        raise DataError(f"no readable images under {meta['images_dir']}; nothing to index")
    generation = meta.get("generation", 0) + 1
    data_name = f"gen-{generation:04d}"
    tmp_dir = Path(tempfile.mkdtemp(dir=index_dir, prefix=f".{data_name}.", suffix=".tmp"))
    try:
        dim = next(iter(arrays[r.enc.source] for r in rows)).shape[1]
        emb = np.lib.format.open_memmap(
            tmp_dir / "embeddings.npy", mode="w+", dtype=np.float32, shape=(len(rows), dim)
        )
        by_source: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for i, r in enumerate(rows):
            dst, src = by_source[r.enc.source]
            dst.append(i)
            src.append(r.enc.row)
        for source, (dst, src) in by_source.items():
            emb[dst] = arrays[source][src]
        emb.flush()
        items = {
            "id": [image_id(r.stat.path) for r in rows],
            "path": [r.stat.path for r in rows],
            "sha256": [r.enc.sha256 for r in rows],
            "size": [r.stat.size for r in rows],
            "mtime_ns": [r.stat.mtime_ns for r in rows],
            "ino": [r.stat.ino for r in rows],
        }
        (tmp_dir / "items.json").write_text(json.dumps(items))
        skipped = [{**vars(r.stat), "reason": r.enc.problem} for r in unreadable]
        (tmp_dir / "unreadable.json").write_text(json.dumps(skipped, indent=1))
        log.info("building the %s FAISS index over %d embeddings", meta["kind"], len(rows))
        faiss.write_index(build_faiss(emb, meta["kind"], meta["params"]), str(tmp_dir / "faiss.index"))
        del emb
        kill_point("index.generation-written")
        os.replace(tmp_dir, index_dir / data_name)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    kill_point("index.generation-renamed")
    previous = meta.get("data")
    meta.update(
        generation=generation,
        data=data_name,
        size=len(rows),
        dim=int(dim),
        unreadable=len(unreadable),
        updated=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_json(index_dir / INDEX_FILE, meta, indent=2)  # the switch: readers now load the new generation
    kill_point("index.switched")
    if previous:
        shutil.rmtree(index_dir / previous, ignore_errors=True)
    kill_point("index.previous-removed")
    shutil.rmtree(index_dir / PARTS_DIR, ignore_errors=True)


@contextlib.contextmanager
def _writing(index_dir: Path) -> Iterator[None]:
    """Be the one writer of ``index_dir`` (refuse a second one) and recover what a killed writer left."""
    busy = (
        f"{index_dir} is being written by another `tbpr index build` or `tbpr index update`; wait for it "
        "to finish and run this command again"
    )
    with exclusive_lock(index_dir / LOCK_FILE, busy):
        _recover(index_dir)
        yield


def _recover(index_dir: Path) -> None:
    """Undo or finish a switch a killed writer left half done (call with the writer lock held).

    Removes unfinished generation folders, generation folders ``index.json`` does not name (renamed into
    place but never switched to, or the previous one of a switch) and parts whose every file the current
    generation holds unchanged (left by a switch that completed).
    """
    for stale in index_dir.glob(".gen-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    meta = read_index_meta(index_dir) if (index_dir / INDEX_FILE).exists() else None
    current = meta["data"] if meta else None
    for folder in index_dir.glob("gen-*"):
        if folder.name != current:
            log.info(
                "removing %s: an interrupted build or update left it, index.json does not name it", folder
            )
            shutil.rmtree(folder, ignore_errors=True)
    parts_dir = index_dir / PARTS_DIR
    if current is None or not parts_dir.is_dir():
        return
    data = index_dir / current
    items = json.loads((data / "items.json").read_text())
    held = set(zip(items["path"], items["size"], items["mtime_ns"]))
    held |= _keys(json.loads((data / "unreadable.json").read_text()))
    for meta_file in parts_dir.glob("part-*.json"):
        if _keys(json.loads(meta_file.read_text())["files"]) <= held:
            meta_file.unlink()
            (parts_dir / f"{meta_file.stem}.npy").unlink(missing_ok=True)
    if not any(parts_dir.glob("part-*.json")):
        shutil.rmtree(parts_dir, ignore_errors=True)


def _keys(records: list[dict]) -> set[tuple[str, int, int]]:
    return {(r["path"], r["size"], r["mtime_ns"]) for r in records}


def _log_unreadable(unreadable: list[_Row], images_dir: Path, listed_in: Path) -> None:
    if unreadable:
        examples = [f"{r.stat.path} ({r.enc.problem})" for r in unreadable]
        log.warning(
            "skipped %s (listed in %s)",
            summarize(f"unreadable files under {images_dir}", examples),
            listed_in,
        )


# ---------------------------------------------------------------------------------------------- public


def read_index_meta(index_dir: Path) -> dict:
    """The ``index.json`` of a complete index; ConfigError naming the problem otherwise."""
    index_dir = Path(index_dir)
    path = index_dir / INDEX_FILE
    if not path.is_file():
        if (index_dir / PARTS_DIR).is_dir():
            raise ConfigError(
                f"{index_dir} holds an unfinished index (an interrupted build?): run the same "
                "`tbpr index build` again to resume it"
            )
        raise ConfigError(
            f"{index_dir} is not a tbpr index (no {INDEX_FILE}); create one with `tbpr index build`"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ConfigError(
            f"{path} is not a tbpr index of version {VERSION}; rebuild it with `tbpr index build`"
        )
    return meta


def build_index(
    run: Path,
    images_dir: Path,
    out_dir: Path,
    *,
    checkpoint: str = "best",
    kind: str = "flat",
    batch_size: int = 256,
    num_workers: int = 2,
    device: str = "cpu",
    chunk_size: int = 4096,
    params: dict | None = None,
) -> Path:
    """Encode every image under ``images_dir`` with a run's model and write an index to ``out_dir``.

    ``kind`` is flat (exact), hnsw or ivf (approximate; ``params`` as in DEFAULT_PARAMS). Unreadable
    files are skipped and listed. Re-running an interrupted build resumes it; re-running a finished one
    does nothing. Another build or update of ``out_dir`` at the same time is refused. Returns ``out_dir``.
    """
    images_dir, out_dir = Path(images_dir).resolve(), Path(out_dir)
    resolved_params(kind, params, 1)  # reject a bad kind or parameter before any work
    if chunk_size < 1 or batch_size < 1:
        raise ConfigError(f"chunk size and batch size must be positive (got {chunk_size}, {batch_size})")
    files = scan_folder(images_dir)
    if not files:
        raise DataError(f"no images (.jpg, .jpeg, .png, .webp) under {images_dir}")
    checkpoint_file = resolve_checkpoint(Path(run), checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _writing(out_dir):
        if (out_dir / INDEX_FILE).exists():
            _check_finished_build(out_dir, checkpoint_file, images_dir, kind, params or {})
            return out_dir
        loaded = load_run(run, checkpoint, device)
        fingerprint = checkpoint_fingerprint(loaded.checkpoint)
        origin = {"images_dir": str(images_dir), "fingerprint": fingerprint}
        enc = _encode_pending(
            loaded,
            images_dir,
            files,
            out_dir / PARTS_DIR,
            origin,
            chunk_size,
            batch_size,
            num_workers,
            device,
        )
        outcomes = [_Row(f, enc.done[_key(f)]) for f in files]
        rows = [r for r in outcomes if r.enc.problem is None]
        unreadable = [r for r in outcomes if r.enc.problem is not None]
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "images_dir": str(images_dir),
            "kind": kind,
            "params": resolved_params(kind, params, len(rows) or 1),
            # re-resolved by updates (an automatic ivf nlist follows the size)
            "requested_params": params or {},
            "model": _model_record(loaded, run, checkpoint, fingerprint),
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _write_generation(out_dir, meta, rows, unreadable, enc.arrays)
        _log_unreadable(unreadable, images_dir, out_dir / meta["data"] / "unreadable.json")
        log.info("indexed %d images of %s into %s", len(rows), images_dir, out_dir)
    return out_dir


def _check_finished_build(out_dir: Path, checkpoint: Path, images_dir: Path, kind: str, params: dict) -> None:
    """Nothing to do if ``out_dir`` holds the index this build asks for; ConfigError if another index."""
    meta = read_index_meta(out_dir)
    asked = (str(images_dir), checkpoint_fingerprint(checkpoint), kind, params)
    held = (meta["images_dir"], meta["model"]["fingerprint"], meta["kind"], meta["requested_params"])
    if asked != held:
        raise ConfigError(
            f"{out_dir} already holds another index (of {meta['images_dir']}, {meta['kind']}, built with "
            f"{meta['model']['checkpoint_path']}): update it with `tbpr index update {out_dir}`, or choose "
            "another --out"
        )
    log.info(
        "%s already holds this index, complete; `tbpr index update %s` picks up changed images",
        out_dir,
        out_dir,
    )


@dataclass
class UpdateReport:
    """What ``update_index`` did: file counts by change, images encoded, and the new gallery size."""

    added: int
    changed: int
    removed: int
    unchanged: int  # readable files kept as they were (files still unreadable count under ``unreadable``)
    encoded: int
    unreadable: int
    size: int

    def __str__(self) -> str:
        return (
            f"{self.added} added, {self.changed} changed, {self.removed} removed, {self.unchanged} unchanged; "
            f"{self.encoded} images encoded; {self.size} images indexed ({self.unreadable} unreadable skipped)"
        )


def update_index(
    index_dir: Path,
    *,
    batch_size: int = 256,
    num_workers: int = 2,
    device: str = "cpu",
    chunk_size: int = 4096,
) -> UpdateReport:
    """Bring an index up to date with its image folder, re-encoding only new and changed files.

    A file is unchanged if its size and mtime are (fast check) or its sha256 is; deleted files are
    dropped. The FAISS index is rebuilt. An interrupted update resumes like a build; another build or
    update of the folder at the same time is refused.
    """
    index_dir = Path(index_dir)
    read_index_meta(index_dir)  # a clear error for a folder that is no index, before taking its lock
    with _writing(index_dir):
        return _update(index_dir, batch_size, num_workers, device, chunk_size)


def _update(index_dir: Path, batch_size: int, num_workers: int, device: str, chunk_size: int) -> UpdateReport:
    meta = read_index_meta(index_dir)
    images_dir = Path(meta["images_dir"])
    files = scan_folder(images_dir)
    data = index_dir / meta["data"]
    items = json.loads((data / "items.json").read_text())
    old = {
        p: (FileStat(p, size, mtime), Encoded(sha, None, "index", row))
        for row, (p, sha, size, mtime) in enumerate(
            zip(items["path"], items["sha256"], items["size"], items["mtime_ns"])
        )
    }
    for bad in json.loads((data / "unreadable.json").read_text()):
        stat = FileStat(bad["path"], bad["size"], bad["mtime_ns"])
        old[bad["path"]] = (stat, Encoded("", bad["reason"], "index", -1))

    kept: dict[str, _Row] = {}
    pending: list[FileStat] = []
    added = changed = 0
    for f in files:
        before = old.get(f.path)
        if before is None:
            added += 1
            pending.append(f)
        elif _key(before[0]) == _key(f):
            kept[f.path] = _Row(f, before[1])
        elif before[1].problem is None and file_sha256(images_dir / f.path) == before[1].sha256:
            # touched but the same content: keep the embedding, record the new stat
            kept[f.path] = _Row(f, before[1])
        else:
            changed += 1
            pending.append(f)
    removed = len(set(old) - {f.path for f in files})
    unchanged = sum(r.enc.problem is None for r in kept.values())
    report_args = {"added": added, "changed": changed, "removed": removed, "unchanged": unchanged}
    if not pending and not removed and all(_key(old[p][0]) == _key(r.stat) for p, r in kept.items()):
        log.info("%s is up to date with %s", index_dir, images_dir)
        return UpdateReport(**report_args, encoded=0, unreadable=meta["unreadable"], size=meta["size"])

    loaded = load_index_model(meta, device=device)
    origin = {"images_dir": str(images_dir), "fingerprint": meta["model"]["fingerprint"]}
    enc = _encode_pending(
        loaded,
        images_dir,
        pending,
        index_dir / PARTS_DIR,
        origin,
        chunk_size,
        batch_size,
        num_workers,
        device,
    )
    outcomes = [kept[f.path] if f.path in kept else _Row(f, enc.done[_key(f)]) for f in files]
    rows = [r for r in outcomes if r.enc.problem is None]
    unreadable = [r for r in outcomes if r.enc.problem is not None]
    arrays = {**enc.arrays, "index": np.load(data / "embeddings.npy", mmap_mode="r")}
    meta["params"] = resolved_params(meta["kind"], meta["requested_params"], len(rows) or 1)
    _write_generation(index_dir, meta, rows, unreadable, arrays)
    _log_unreadable(unreadable, images_dir, index_dir / meta["data"] / "unreadable.json")
    report = UpdateReport(**report_args, encoded=enc.encoded, unreadable=len(unreadable), size=len(rows))
    log.info("updated %s: %s", index_dir, report)
    return report
