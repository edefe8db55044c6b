"""Image records in a generation store (``tbpr.data.caption_store``) and the image files beside it.

An image job's store ``DIR/NAME.jsonl`` keeps its images under ``DIR/NAME_images/<method>/``. A record's
``text`` is the image file, relative to ``DIR`` (so shard stores merged in ``DIR`` still find theirs); a
failed try has ``text: null`` and a ``reason``. The image provenance is in extra fields (``IMAGE_FIELDS``):
``model_hash``, ``prompt``, ``negative_prompt``, ``source_image``, ``source_caption``, ``edit``,
``instruction``, ``source_prompt``, ``seed``, ``steps``, ``guidance``, ``width``, ``height``,
``inversion``, ``person`` (the structured description asked for), ``result`` (what the backend reports
about the image, e.g. the renderer's resolved scene) and ``filter`` (the person filter's name).

Files are written atomically before their record is appended, under a name fixed by the key and the
attempt, so a job killed between the two rewrites the same file on its rerun: no loss, no duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tbpr.atomic import atomic_write
from tbpr.crashsafe import kill_point
from tbpr.data.caption_store import CaptionStore, StoreRecord
from tbpr.errors import DataError
from tbpr.generate.images.backend import EditRequest, ImageRequest

log = logging.getLogger(__name__)

IMAGE_FIELDS = (
    "model_hash",
    "prompt",
    "negative_prompt",
    "source_image",
    "source_caption",
    "edit",
    "instruction",
    "source_prompt",
    "seed",
    "steps",
    "guidance",
    "width",
    "height",
    "inversion",
    "person",
    "result",
    "filter",
)


def images_dir(store_path: str | Path) -> Path:
    """The folder of the images of the store at ``store_path``: ``NAME_images`` beside ``NAME.jsonl``."""
    path = Path(store_path)
    return path.with_name(f"{path.stem}_images")


def image_file(store_path: str | Path, method: str, caption_id: int, n: int, attempt: int) -> str:
    """The image file of one try, relative to the store's folder."""
    return f"{images_dir(store_path).name}/{method}/{caption_id}_{n}_a{attempt}.png"


def write_image(store_path: str | Path, relative: str, image) -> None:
    """Save ``image`` as PNG at ``relative`` (to the store's folder), atomically."""
    atomic_write(Path(store_path).parent / relative, lambda fh: image.save(fh, format="PNG"))
    kill_point("images.file-written")


def drop_stale_temp_files(store_path: str | Path) -> int:
    """Remove temp files a killed image write left in the store's images folder; returns how many."""
    stale = list(images_dir(store_path).glob("*/.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("%s: removed %d temp files of interrupted image writes", images_dir(store_path), len(stale))
    return len(stale)


def request_fields(request: ImageRequest | EditRequest) -> dict[str, Any]:
    """The ``IMAGE_FIELDS`` a request fixes (the others are ``None`` until the job fills them)."""
    fields = dict.fromkeys(IMAGE_FIELDS)
    common = {
        "seed": request.seed,
        "steps": request.steps,
        "guidance": request.guidance,
        "person": request.person,
    }
    if isinstance(request, ImageRequest):
        return {
            **fields,
            **common,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": request.width,
            "height": request.height,
        }
    return {
        **fields,
        **common,
        "prompt": request.target_prompt or request.instruction,
        "source_prompt": request.source_prompt,
        "instruction": request.instruction,
        "source_image": str(request.source),
        "edit": request.edit,
        "inversion": request.inversion,
    }


def accepted_images(store_path: str | Path, method: str | None = None) -> Iterator[tuple[StoreRecord, Path]]:
    """Each accepted image record of the store (of ``method`` only, if given), first per key, with its file."""
    store = CaptionStore(store_path)
    if not store.path.is_file():
        raise DataError(f"generation store {store.path} does not exist; check the path")
    seen: set[str] = set()
    for rec in store:
        if not rec.accepted or rec.key in seen or (method is not None and rec.method != method):
            continue
        seen.add(rec.key)
        yield rec, store.path.parent / rec.text
