"""MLLM captioning (MLLM4Text-ReID): every image of a folder described by a vision-language model, with
the static instruction or the dynamic one (a random description template inserted, TDE), each reply
cleaned and judged, rejected ones asked again, all of it recorded in a caption store.

Ids and keys (stable when images are added or removed): an image's ``caption_id`` is the first 6 bytes
of the SHA-256 of its path relative to the images folder (POSIX form); its record's ``source_text`` is
that path. The key is ``"<caption_id>:<n>"`` with ``n = 1000 * slot + j``: ``slot`` (0..999999) comes
from a hash of the captioner (model name) and the instruction kind, ``j`` (0..999) numbers the captions
wanted per image. So runs with other models or instructions into the same store get their own keys, and
a rerun of the same one continues where it stopped. Records carry ``image``, ``instruction``,
``template_id``, ``template``, ``templates_hash``, ``captioner`` and ``slot`` as extra fields.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tbpr.data.caption_store import CaptionStore, KeyProgress, record_key
from tbpr.data.image_files import list_image_files
from tbpr.errors import ConfigError, DataError
from tbpr.generate.chat import Failure
from tbpr.generate.jobs import TRUNCATED, JobSummary, Shard, ask_in_rounds, next_tries, reply_record
from tbpr.generate.text.templates import (
    INSTRUCTIONS,
    clean_caption,
    instruction,
    pick_template,
    templates_hash,
)
from tbpr.generate.text.vision import ImageBackend

log = logging.getLogger(__name__)

METHOD = "mllm_caption"
MAX_PER_IMAGE = 1000


def image_id(relative: str) -> int:
    """The stable caption id of an image: from the SHA-256 of its relative POSIX path (48 bits)."""
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:6], "big")


def slot(captioner: str, kind: str) -> int:
    """The key block (0..999999) of one captioner and instruction kind."""
    return int.from_bytes(hashlib.sha256(f"{captioner}\n{kind}".encode()).digest()[:4], "big") % 1_000_000


def scan_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of the images under ``root`` (recursive; jpg, jpeg, png, webp), sorted."""
    return [f.path for f in list_image_files(root, "images folder")]


def unreadable(root: Path, relatives: Sequence[str], workers: int = 8) -> dict[str, str]:
    """Relative path -> why Pillow cannot decode it, for the images of ``relatives`` that fail."""

    def check(relative: str) -> str | None:
        from PIL import Image

        try:
            with Image.open(root / relative) as image:
                image.load()
        except Exception as err:  # noqa: BLE001 - any decoding problem makes the file unusable
            return f"{type(err).__name__}: {err}"
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = pool.map(check, relatives)
    return {rel: problem for rel, problem in zip(relatives, problems) if problem}


@dataclass
class CaptionSummary(JobSummary):
    """``JobSummary`` plus the images that could not be read (relative path -> reason)."""

    unreadable: dict[str, str] = field(default_factory=dict)

    def line(self, store: str) -> str:
        bad = f"; {len(self.unreadable)} unreadable images skipped" if self.unreadable else ""
        return super().line(store) + bad


@dataclass
class _Job:
    root: Path
    backend: ImageBackend
    kind: str
    templates: Sequence[str]
    shard: Shard
    seed: int
    keep_truncated: bool

    def records(self, work: list[tuple[str, int]], progress: dict[str, KeyProgress], base: int) -> list:
        """One try for each ``(image, j)`` of ``work``."""
        keys = [(image_id(rel), base + j) for rel, j in work]
        attempts, seeds = next_tries(progress, self.seed, keys)
        template_ids = [pick_template(self.templates, s) if self.kind == "dynamic" else None for s in seeds]
        texts = [instruction(self.kind, None if t is None else self.templates[t]) for t in template_ids]
        replies = self.backend.generate(
            [(self.root / rel, text) for (rel, _), text in zip(work, texts)], seeds
        )
        out = []
        for i, ((rel, _), (cid, n), reply) in enumerate(zip(work, keys, replies)):
            text, reason = (None, reply.reason) if isinstance(reply, Failure) else clean_caption(reply)
            if reason is None and getattr(reply, "truncated", False) and not self.keep_truncated:
                reason = f"{TRUNCATED} (raise --max-tokens)"
            tid = template_ids[i]
            extra = {
                "image": rel,
                "instruction": self.kind,
                "template_id": tid,
                "template": None if tid is None else self.templates[tid],
                "templates_hash": templates_hash(self.templates) if self.kind == "dynamic" else None,
                "captioner": self.backend.model,
                "slot": base // MAX_PER_IMAGE,
                "shard": self.shard.label,
            }
            if text is not None and text != reply:
                extra["raw_text"] = str(reply)
            out.append(
                reply_record(
                    self.backend,
                    METHOD,
                    cid,
                    n,
                    seeds[i],
                    reply,
                    text=text,
                    source_text=rel,
                    attempt=attempts[i],
                    accepted=text is not None and reason is None,
                    reason=reason,
                    extra=extra,
                )
            )
        return out


def caption_images(
    images_dir: str | Path,
    store_path: str | Path,
    backend: ImageBackend,
    kind: str = "static",
    templates: Sequence[str] = (),
    per_image: int = 1,
    max_attempts: int = 3,
    shard: Shard | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    seed: int = 0,
    keep_truncated: bool = False,
) -> CaptionSummary:
    """Caption the images under ``images_dir`` into the store at ``store_path``.

    ``limit`` keeps the first images by path (before sharding); ``shard`` keeps the images whose caption
    id is in that slice. Unreadable images are logged, listed in the summary and skipped.
    """
    if kind not in INSTRUCTIONS:
        raise ConfigError(f"instruction {kind!r}: expected one of {INSTRUCTIONS}")
    if kind == "dynamic" and not templates:
        raise ConfigError("the dynamic instruction needs description templates")
    if not 1 <= per_image <= MAX_PER_IMAGE or max_attempts < 1 or batch_size < 1:
        raise ConfigError(
            f"per_image={per_image}, max_attempts={max_attempts}, batch_size={batch_size}: need "
            f"1 <= per_image <= {MAX_PER_IMAGE} and the others >= 1"
        )
    root, shard = Path(images_dir), shard or Shard()
    images = [rel for rel in scan_images(root)[:limit] if image_id(rel) in shard]
    log.info("captioning with %s (%s)", backend.model, backend.backend)  # a chat server is checked here
    base = slot(backend.model, kind) * MAX_PER_IMAGE
    _check_ids(images)
    work = [(rel, j) for rel in images for j in range(per_image)]
    summary = CaptionSummary(len(work))
    store = CaptionStore(store_path)
    job = _Job(root, backend, kind, templates, shard, seed, keep_truncated)
    with store.exclusive():
        progress = store.progress()
        _check_store(store, progress, images)
        ask_in_rounds(
            store,
            progress,
            work,
            lambda w: record_key(image_id(w[0]), base + w[1]),
            lambda todo: job.records(todo, progress, base),
            summary,
            max_attempts,
            batch_size,
            "captioning",
            usable=lambda batch: _readable(root, batch, summary),
        )
    log.info(summary.line(str(store.path)))
    return summary


def _readable(root: Path, batch: list[tuple[str, int]], summary: CaptionSummary) -> list[tuple[str, int]]:
    """The work of ``batch`` whose image decodes; the others are logged and listed in ``summary``."""
    bad = unreadable(root, sorted({rel for rel, _ in batch}))
    for rel, problem in bad.items():
        log.warning("%s: cannot read the image (%s); skipped", root / rel, problem)
    summary.unreadable.update(bad)
    kept = [w for w in batch if w[0] not in bad]
    summary.wanted -= len(batch) - len(kept)
    return kept


def _check_store(store: CaptionStore, progress: dict[str, KeyProgress], images: Sequence[str]) -> None:
    """Refuse a store that holds one of these caption ids for another image path."""
    paths = {image_id(rel): rel for rel in images}
    for key, state in progress.items():
        rel = paths.get(int(key.split(":")[0]))
        if rel is not None and state.source_text != rel:
            raise DataError(
                f"caption store {store.path}, key {key}: holds image {state.source_text!r} under the id of "
                f"{rel!r}; the store was made from another images folder: write to a new store"
            )


def _check_ids(images: Sequence[str]) -> None:
    seen: dict[int, str] = {}
    for rel in images:
        other = seen.setdefault(image_id(rel), rel)
        if other != rel:
            raise DataError(f"images {other!r} and {rel!r} hash to the same caption id; rename one of them")
