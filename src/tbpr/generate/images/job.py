"""The image job: wanted images asked of an ``ImageGenerator`` in resumable, shardable rounds
(``tbpr.generate.jobs.ask_in_rounds``), each image checked, written and recorded with its provenance.

A job is a list of ``ImageWork``: one wanted image each, keyed ``"<item_id>:<n>"``. ``item_id`` is a
stable id of what the image shows (an identity, or a source image and its edit): shards are taken by it,
and it is the store record's ``caption_id``. Each try gets its own seed (``request_seed``: job seed, key,
attempt). A try is ``failed`` (no image: the backend failed, or the source image cannot be read; asked
again next round and on a rerun), ``rejected`` (the person filter refused the image: it is kept on disk
and recorded, and the key is asked again with a new seed, up to ``max_attempts``) or ``accepted``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tbpr.data.caption_store import CaptionStore, KeyProgress, StoreRecord, record_key
from tbpr.errors import ConfigError, DataError
from tbpr.generate.images.backend import EditRequest, Failed, ImageGenerator, ImageRequest, Result
from tbpr.generate.images.store import drop_stale_temp_files, image_file, request_fields, write_image
from tbpr.generate.jobs import JobSummary, Shard, ask_in_rounds, next_tries, request_settings

log = logging.getLogger(__name__)

PersonCheck = Callable[
    [Any], "str | None"
]  # image -> why it is refused, or None (tbpr.generate.images.filters)


@dataclass(frozen=True)
class ImageWork:
    """One wanted image. ``source_text``: what the item is made from (its prompt, or its source image and
    edit), the same for all of an item's images; a store holding the item with other text is refused.
    ``extra``: method-specific provenance recorded with the image (it overrides the request's fields)."""

    item_id: int
    n: int
    source_text: str
    request: ImageRequest | EditRequest
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return record_key(self.item_id, self.n)


@dataclass
class _ImageJob:
    store_path: Path
    backend: ImageGenerator
    method: str
    seed: int
    shard: Shard
    check: PersonCheck | None
    check_name: str | None
    provenance: dict[str, Any]
    progress: dict[str, KeyProgress]

    def records(self, todo: list[ImageWork]) -> list[StoreRecord]:
        """One try at each image of ``todo``: asked, checked, written, then returned as records."""
        attempts, seeds = next_tries(self.progress, self.seed, [(w.item_id, w.n) for w in todo])
        requests = [replace(w.request, seed=s) for w, s in zip(todo, seeds)]
        results = self._ask(requests)
        return [self._record(w, r, a, res) for w, r, a, res in zip(todo, requests, attempts, results)]

    def _ask(self, requests: list[ImageRequest | EditRequest]) -> list[Result]:
        """The backend's results, in order; unreadable sources and a failing call become ``Failed``."""
        results: list[Result | None] = [None] * len(requests)
        for kind, call in ((ImageRequest, self.backend.generate), (EditRequest, self.backend.edit)):
            index = [i for i, r in enumerate(requests) if isinstance(r, kind)]
            if kind is EditRequest:
                for i in index:
                    results[i] = unreadable_source(requests[i].source)
                index = [i for i in index if results[i] is None]
            if not index:
                continue
            try:
                answers = call([requests[i] for i in index])
            except Exception as err:  # noqa: BLE001 - out of memory, a pipeline error: recorded, asked again
                log.warning(
                    "%s %s call failed for %d images: %s", self.backend.name, kind.__name__, len(index), err
                )
                answers = [Failed(f"backend error: {type(err).__name__}: {err}")] * len(index)
            for i, answer in zip(index, answers):
                results[i] = answer
        return results

    def _record(self, work: ImageWork, request, attempt: int, result: Result) -> StoreRecord:
        fields = {
            **request_fields(request),
            "model_hash": self.provenance.get("model_hash"),
            "filter": self.check_name,
        }
        text, reason = None, None
        if isinstance(result, Failed):
            reason = result.reason
        else:
            reason = self.check(result.image) if self.check else None
            text = image_file(self.store_path, self.method, work.item_id, work.n, attempt)
            write_image(self.store_path, text, result.image)
            fields.update(width=result.image.width, height=result.image.height, result=result.info)
        return StoreRecord(
            key=work.key,
            caption_id=work.item_id,
            text=text,
            source_text=work.source_text,
            method=self.method,
            backend=self.backend.name,
            model=self.backend.model,
            languages=[],
            settings=request_settings(self.provenance.get("settings", {}), request.seed, None),
            attempt=attempt,
            accepted=text is not None and reason is None,
            reason=reason,
            extra={**fields, **work.extra, "shard": self.shard.label},
        )


def unreadable_source(path: Path) -> Failed | None:
    """``Failed`` with the reason when the image at ``path`` is missing or cannot be decoded."""
    from PIL import Image

    if not Path(path).is_file():
        return Failed(f"source image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # noqa: BLE001 - any decoding problem makes the file unusable
        return Failed(f"source image {path} cannot be read ({type(err).__name__}: {err})")
    return None


def run_image_job(
    store_path: str | Path,
    backend: ImageGenerator,
    work: Sequence[ImageWork],
    method: str,
    shard: Shard | None = None,
    max_attempts: int = 3,
    batch_size: int = 8,
    seed: int = 0,
    check: PersonCheck | None = None,
) -> JobSummary:
    """Make the images of ``work`` in ``shard`` into the store at ``store_path`` (see the module docstring);
    rerun with the same arguments to continue. ``check`` is the person filter (``None``: keep every image).
    The backend is closed when the job ends."""
    if max_attempts < 1 or batch_size < 1:
        raise ConfigError(f"max_attempts={max_attempts}, batch_size={batch_size}: both must be >= 1")
    shard = shard or Shard()
    mine = [w for w in work if w.item_id in shard]
    summary = JobSummary(len(mine))
    store = CaptionStore(store_path)
    with store.exclusive(), contextlib.closing(backend):
        drop_stale_temp_files(store.path)
        progress = store.progress()
        _check_same_sources(store, progress, mine)
        job = _ImageJob(
            store.path,
            backend,
            method,
            seed,
            shard,
            check,
            getattr(check, "name", None) if check else None,
            backend.provenance(),
            progress,
        )
        ask_in_rounds(
            store, progress, mine, lambda w: w.key, job.records, summary, max_attempts, batch_size, method
        )
    log.info(summary.line(str(store.path)))
    return summary


def _check_same_sources(
    store: CaptionStore, progress: dict[str, KeyProgress], work: Sequence[ImageWork]
) -> None:
    """Refuse a store that holds one of these keys made from something else."""
    for w in work:
        state = progress.get(w.key)
        if state is not None and state.source_text != w.source_text:
            raise DataError(
                f"generation store {store.path}, key {w.key}: holds an image of {state.source_text!r}, but this "
                f"job asks for {w.source_text!r}: the store was made by another job (other seed, vocabulary or "
                "sources); write to a new store"
            )
