"""Training sets from MLLM captions: each captioned image is its own identity (MLLM4Text-ReID's assumption).

``build_from_captions`` writes a dataset folder in tbpr's ``jsonl`` format (docs/data-formats.md):
``annotations.jsonl`` with one training record per image holding all its accepted captions (of every
captioner and instruction in the store), and ``imgs`` linking to the images folder. Every caption is a
training sample of its own (the ``mllm4text`` recipe visits each one every epoch, as the public code does);
``data.sampler: per_image`` (``tbpr.data.samplers.PerImageBatchSampler``) draws one caption per image per
epoch instead. Images are ordered by their stable
caption id (a hash of the path), so ``limit_images`` keeps a fixed pseudo-random subset, and smaller
limits give subsets of larger ones (the data-size study).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tbpr.data.caption_store import CaptionStore
from tbpr.errors import ConfigError, DataError

log = logging.getLogger(__name__)

METHOD = "mllm_caption"  # tbpr.generate.text.caption.METHOD (not imported: training needs only the sampler)


@dataclass
class FromCaptionsSummary:
    images: int
    captions: int
    without_captions: int  # images in the store with no accepted caption
    missing: int  # captioned images no longer in the images folder

    def line(self, out: str) -> str:
        return (
            f"{out}: {self.images} images (identities), {self.captions} captions; left out: "
            f"{self.without_captions} images without an accepted caption, {self.missing} missing images"
        )


def captions_by_image(store_path: str | Path) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Caption id -> image path, and caption id -> its accepted caption texts (distinct, store order)."""
    store = CaptionStore(store_path)
    if not store.path.is_file():
        raise DataError(f"caption store {store.path} does not exist; fill it with `tbpr caption`")
    paths: dict[int, str] = {}
    texts: dict[int, list[str]] = {}
    for rec in store:
        if rec.method != METHOD:
            continue
        paths[rec.caption_id] = rec.source_text
        kept = texts.setdefault(rec.caption_id, [])
        if rec.accepted and rec.text and rec.text not in kept:
            kept.append(rec.text)
    return paths, texts


def build_from_captions(
    store_path: str | Path, images_dir: str | Path, out: str | Path, limit_images: int | None = None
) -> FromCaptionsSummary:
    """Write the dataset folder ``out`` (``annotations.jsonl`` and an ``imgs`` link to ``images_dir``)."""
    if limit_images is not None and limit_images < 1:
        raise ConfigError(f"--limit-images {limit_images}: expected a positive number")
    images_dir, out = Path(images_dir).resolve(), Path(out)
    if not images_dir.is_dir():
        raise DataError(f"images folder {images_dir} does not exist or is not a folder")
    paths, texts = captions_by_image(store_path)
    without = sum(not t for t in texts.values())
    present = [cid for cid in sorted(texts) if texts[cid] and (images_dir / paths[cid]).is_file()]
    missing = sum(bool(t) for t in texts.values()) - len(present)
    if missing:
        log.warning("%d captioned images are not in %s; left out", missing, images_dir)
    chosen = present[:limit_images]
    if not chosen:
        raise DataError(
            f"caption store {store_path} has no accepted {METHOD} caption of an image in {images_dir}"
        )
    rows = [
        {"file_path": paths[cid], "id": k, "split": "train", "captions": texts[cid], "caption_id": cid}
        for k, cid in enumerate(chosen)
    ]
    write_training_set(out, images_dir, rows)
    return FromCaptionsSummary(len(chosen), sum(len(texts[c]) for c in chosen), without, missing)


def write_training_set(out: Path, images_dir: Path, rows: list[dict]) -> None:
    """The dataset folder ``out``: ``annotations.jsonl`` (``rows``, written atomically) and ``imgs`` linking
    to ``images_dir``."""
    out.mkdir(parents=True, exist_ok=True)
    _link_images(out / "imgs", images_dir)
    tmp = out / "annotations.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, out / "annotations.jsonl")


def _link_images(link: Path, target: Path) -> None:
    if link.is_symlink() and link.resolve() == target:
        return
    if link.exists() or link.is_symlink():
        raise DataError(f"{link} exists and is not a link to {target}; choose another --out folder")
    link.symlink_to(target, target_is_directory=True)
