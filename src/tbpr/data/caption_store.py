"""Generation stores: append-only JSONL files of generated captions and images, each line one record
with its provenance.

The same format holds back translations, LLM rewrites and MLLM captions (docs/text-augmentation.md) and
generated images (docs/image-generation.md: there ``text`` is the image file written, relative to the
store's folder, and the image provenance is in extra fields).
A record is keyed ``"<caption_id>:<n>"`` (``n`` numbers the outputs wanted per caption); every try of a
key is one record, so a key may have several: rejected outputs keep their text and reason, and a try
that produced no output (a failed request) has ``text: null`` and is retried when the job is rerun.

Records are appended in batches, each flushed and fsynced before the job moves on. A process killed
mid-write leaves at most one torn last line (no newline); it is dropped when the store is reopened, so
resuming never loses a finished record and never keeps half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tbpr.crashsafe import drop_torn_tail, exclusive_lock, kill_point
from tbpr.errors import DataError
from tbpr.redact import redact

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_key(caption_id: int, n: int = 0) -> str:
    return f"{caption_id}:{n}"


@dataclass(frozen=True)
class StoreRecord:
    """One try at generating text for a caption, with how it was made and whether it was kept.

    ``extra`` holds method-specific fields (e.g. a similarity score); they are stored at the top level
    of the JSON object beside the common ones.
    """

    key: str
    caption_id: int
    text: str | None
    source_text: str
    method: str
    backend: str
    model: str
    languages: list[str]
    settings: dict[str, Any]
    attempt: int
    accepted: bool
    reason: str | None = None
    created: str = field(default_factory=utc_now)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        obj["reason"] = self.reason and redact(self.reason)  # error text a server echoed: no credentials
        return {**obj, **self.extra}

    def to_line(self) -> bytes:
        """The record as one store line (UTF-8 JSON and a newline)."""
        return (json.dumps(self.to_json(), ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, obj: Any) -> StoreRecord:
        """The record of a decoded JSON line; ``ValueError`` says which field is missing or mistyped."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        for name, types in _FIELD_TYPES.items():
            if name not in obj:
                raise ValueError(f"missing field {name!r}")
            value = obj[name]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ValueError(f"field {name!r} has the wrong type ({type(value).__name__})")
        if obj["accepted"] and obj["text"] is None:
            raise ValueError("an accepted record has no text")
        common = {name: obj[name] for name in _FIELD_TYPES}
        extra = {name: value for name, value in obj.items() if name not in _FIELD_TYPES}
        return cls(**common, extra=extra)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "caption_id": (int,),
    "text": (str, type(None)),
    "source_text": (str,),
    "method": (str,),
    "backend": (str,),
    "model": (str,),
    "languages": (list,),
    "settings": (dict,),
    "attempt": (int,),
    "accepted": (bool,),
    "reason": (str, type(None)),
    "created": (str,),
}


@dataclass
class KeyProgress:
    """What the store holds for one key: tries recorded, outputs rejected, whether one was kept, and the
    caption text it was made from (of the latest try)."""

    tries: int = 0
    rejected: int = 0
    accepted: bool = False
    source_text: str = ""

    def finished(self, max_attempts: int = 1) -> bool:
        """True once an output was accepted or ``max_attempts`` outputs were rejected."""
        return self.accepted or self.rejected >= max_attempts

    def exhausted(self, max_attempts: int = 1) -> bool:
        """True when ``max_attempts`` outputs were rejected and none accepted: the key keeps none."""
        return not self.accepted and self.rejected >= max_attempts


def add_progress(progress: dict[str, KeyProgress], records: Iterable[StoreRecord]) -> dict[str, KeyProgress]:
    """``progress`` (key -> ``KeyProgress``) updated with ``records``, in order; returned for chaining."""
    for rec in records:
        state = progress.setdefault(rec.key, KeyProgress())
        state.tries += 1
        state.accepted = state.accepted or rec.accepted
        state.rejected += not rec.accepted and rec.text is not None
        state.source_text = rec.source_text
    return progress


class CaptionStore:
    """An append-only JSONL caption store at ``path`` (the file appears with the first append)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __iter__(self) -> Iterator[StoreRecord]:
        """Every complete record in file order (a torn last line is skipped with a warning)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.endswith(b"\n"):
                    log.warning("%s: ignoring a torn last line left by an interrupted write", self.path)
                    return
                if not line.strip():
                    continue
                try:
                    yield StoreRecord.from_json(json.loads(line))
                except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError too
                    reason = "JSON nested too deeply" if isinstance(err, RecursionError) else err
                    raise DataError(
                        f"caption store {self.path}, line {number}: not a valid record ({reason}); "
                        "fix or delete that line"
                    ) from None

    def progress(self) -> dict[str, KeyProgress]:
        """Per key: how many tries, how many rejected outputs, whether an output was accepted."""
        return add_progress({}, self)

    def done_keys(self, max_attempts: int = 1) -> set[str]:
        """Keys that need no more work: one output accepted, or ``max_attempts`` outputs rejected."""
        return {key for key, state in self.progress().items() if state.finished(max_attempts)}

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[CaptionStore]:
        """Hold the store for one job: no other process may fill it meanwhile; a torn tail is dropped."""
        busy = (
            f"caption store {self.path} is being written by another process; wait for it to "
            "finish or write to another store"
        )
        with exclusive_lock(self.path, busy):
            drop_torn_tail(self.path)
            yield self

    def append(self, records: Iterable[StoreRecord]) -> None:
        """Append ``records`` and fsync them: once this returns they survive a crash."""
        data = b"".join(r.to_line() for r in records)
        if not data:
            return
        created = not self.path.exists()
        with open(self.path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if created:  # make the new directory entry durable as well
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        kill_point("store.appended")


SELECTIONS = ("accepted", "all")
# rejection reasons of the faithfulness filter (tbpr.generate.text.faithfulness): the rewrites the "all" selection uses
FAITHFULNESS_REASONS = ("similarity", "attribute")


def selected(rec: StoreRecord, select: str = "accepted") -> bool:
    """Whether ``rec`` is usable text under ``select``.

    ``"accepted"``: the record was kept. ``"all"`` (training without the faithfulness filter): also a
    record rejected only by that filter (its reason starts with "similarity" or "attribute"); failed
    tries (no text) and outputs a basic check rejected (empty, not English, ...) are never usable.
    """
    if not rec.text:
        return False
    return rec.accepted or (select == "all" and (rec.reason or "").startswith(FAITHFULNESS_REASONS))


def accepted_texts(
    paths: Iterable[str | Path],
    method: str | None = None,
    select: str = "accepted",
    min_similarity: float | None = None,
) -> dict[int, list[str]]:
    """Caption id -> the selected texts of the stores at ``paths`` (optionally of one ``method`` only).

    Each key contributes its first record per store that is ``selected`` under ``select`` and, when
    ``min_similarity`` is set, whose ``similarity`` field is at least that (records without one are
    left out, and counted in a warning).
    """
    if select not in SELECTIONS:
        raise ValueError(f"select={select!r}: expected one of {SELECTIONS}")
    out: dict[int, list[str]] = {}
    for path in paths:
        store = CaptionStore(path)
        if not store.path.is_file():
            raise DataError(
                f"caption store {store.path} does not exist; create it first (e.g. with "
                "`tbpr augment backtranslate`) or fix the path in data.text_augment.stores"
            )
        seen: set[str] = set()
        unscored = 0
        for rec in store:
            if rec.key in seen or (method is not None and rec.method != method) or not selected(rec, select):
                continue
            if min_similarity is not None:
                similarity = rec.extra.get("similarity")
                if not isinstance(similarity, int | float) or isinstance(similarity, bool):
                    unscored += 1
                    continue
                if similarity < min_similarity:
                    continue
            seen.add(rec.key)
            out.setdefault(rec.caption_id, []).append(rec.text)
        if unscored:
            log.warning(
                "%s: %d %s record(s) have no similarity score and are left out by min_similarity=%g",
                store.path,
                unscored,
                method or "selected",
                min_similarity,
            )
    return out
