"""What every generation job (text and images) shares: shards, request seeds, the ask-again loop, the
same-captions check and the run summary."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

from tbpr.data.caption_store import CaptionStore, KeyProgress, StoreRecord, add_progress, record_key
from tbpr.data.schema import CaptionRecord
from tbpr.errors import ConfigError, DataError

log = logging.getLogger(__name__)
W = TypeVar("W")  # one unit of work of a job, e.g. (caption, n)
TRUNCATED = "truncated at max_tokens"  # the reason of a reply cut off at the token limit


class RecordedBackend(Protocol):
    """What a record says of the text or vision backend that made it."""

    backend: str  # recorded in the store: "openai", "transformers"

    @property
    def model(self) -> str: ...

    @property
    def settings(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` of ``count``: the captions whose id is ``index`` modulo ``count``.

    Membership depends on the caption id alone, so every machine computes the same slices whatever
    order or subset of the data it reads, and the slices of ``0/N`` .. ``N-1/N`` cover each caption once.
    """

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/N"`` with 0 <= i < N."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise ConfigError(f"--shard {text!r}: expected i/N with 0 <= i < N, e.g. 0/4 (the first of four)")
        return cls(int(match[1]), int(match[2]))

    def __contains__(self, caption_id: int) -> bool:
        return caption_id % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def label(self) -> str | None:
        """A record's ``shard`` field: ``"i/N"``, or None when the job is not sharded."""
        return str(self) if self.count > 1 else None


@dataclass
class JobSummary:
    """Counts of one generation run. ``skipped``: outputs the store already had; ``exhausted``: outputs
    that got no accepted text after the allowed attempts (they keep none; the store says why)."""

    wanted: int
    skipped: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    exhausted: int = 0

    def count(self, records: Sequence[StoreRecord]) -> None:
        for rec in records:
            self.accepted += rec.accepted
            self.rejected += not rec.accepted and rec.text is not None
            self.failed += rec.text is None

    def line(self, store: str) -> str:
        none = f", {self.exhausted} got none after every attempt" if self.exhausted else ""
        return (
            f"{store}: {self.wanted} wanted, {self.skipped} already done, {self.accepted} accepted, "
            f"{self.rejected} rejected, {self.failed} failed requests{none} (rerun to retry failed requests)"
        )


def ask_in_rounds(
    store: CaptionStore,
    progress: dict[str, KeyProgress],
    work: Sequence[W],
    key: Callable[[W], str],
    make_records: Callable[[list[W]], list[StoreRecord]],
    summary: JobSummary,
    max_attempts: int,
    batch_size: int,
    desc: str,
    usable: Callable[[list[W]], list[W]] | None = None,
) -> None:
    """The loop of every generation job.

    The ``work`` the store has not finished is taken in batches of ``batch_size`` (``summary.skipped``
    counts the rest). Each batch is asked in rounds, ``make_records`` on its unfinished work, until every
    key has an accepted output or ``max_attempts`` rejected ones. Each round's records are appended
    (fsynced) before the next round, then counted in ``summary`` and ``progress``. ``usable`` may drop
    work from a batch before it is asked.
    """

    def unfinished(work: W) -> bool:
        state = progress.get(key(work))
        return state is None or not state.finished(max_attempts)

    pending = [w for w in work if unfinished(w)]
    summary.skipped = len(work) - len(pending)
    if summary.skipped:
        log.info("%s: %d of %d outputs already done", store.path, summary.skipped, len(work))
    with tqdm(total=len(pending), desc=desc, unit="caption", disable=None) as bar:
        for start in range(0, len(pending), batch_size):
            batch = list(pending[start : start + batch_size])
            asked = usable(batch) if usable else batch
            for _ in range(max_attempts):
                todo = [w for w in asked if unfinished(w)]
                if not todo:
                    break
                records = make_records(todo)
                store.append(records)
                summary.count(records)
                add_progress(progress, records)
            summary.exhausted += sum(
                progress[key(w)].exhausted(max_attempts) for w in asked if key(w) in progress
            )
            bar.update(len(batch))


def request_seed(seed: int, caption_id: int, n: int, attempt: int) -> int:
    """The seed of one request: fixed by the job seed and the request's key and attempt."""
    digest = hashlib.sha256(f"{seed}:{caption_id}:{n}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def next_tries(
    progress: dict[str, KeyProgress], seed: int, keys: Sequence[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """(attempts, request seeds) of the next try at each ``(caption_id, n)`` of ``keys``."""
    attempts = [progress.get(record_key(c, n), KeyProgress()).tries + 1 for c, n in keys]
    return attempts, [request_seed(seed, c, n, a) for (c, n), a in zip(keys, attempts)]


def reply_record(
    backend: RecordedBackend,
    method: str,
    caption_id: int,
    n: int,
    seed: int,
    reply: object,
    **fields: Any,
) -> StoreRecord:
    """The record of one English ``reply`` of ``backend`` to the request ``(caption_id, n)`` seeded ``seed``;
    ``fields`` are the rest of the ``StoreRecord`` (text, source_text, attempt, accepted, reason, extra)."""
    return StoreRecord(
        key=record_key(caption_id, n),
        caption_id=caption_id,
        method=method,
        backend=backend.backend,
        model=backend.model,
        languages=["en"],
        settings=request_settings(backend.settings, seed, reply),
        **fields,
    )


def request_settings(backend_settings: dict[str, Any], seed: int, reply: object) -> dict[str, Any]:
    """A record's ``settings``: the backend's, the request's seed and, when the backend seeds whole
    generation batches, the batch's seed (``Reply.seed``)."""
    batch_seed = getattr(reply, "seed", None)
    return {**backend_settings, "seed": seed, **({} if batch_seed is None else {"batch_seed": batch_seed})}


def check_same_captions(
    store: CaptionStore,
    progress: dict[str, KeyProgress],
    captions: Sequence[CaptionRecord],
    per_caption: int = 1,
) -> None:
    """Refuse to continue a store that was made from other captions under the same ids."""
    for caption in captions:
        for n in range(per_caption):
            state = progress.get(record_key(caption.id, n))
            if state is not None and state.source_text != caption.text:
                raise DataError(
                    f"caption store {store.path} holds caption {caption.id} as {state.source_text!r}, but "
                    f"the dataset has {caption.text!r}: the store was made from another dataset (or "
                    "version); write to a new store"
                )
