"""LLM-DA's rewriting job: every training caption rewritten by an LLM, each rewrite judged by the Text
Faithfulness Filter, the unfaithful ones asked again, all of it recorded in a caption store.

For each caption the job wants ``per_caption`` rewrites (store keys ``"<id>:0"`` .. ``"<id>:<n-1>"``). A
batch of keys is sent to the backend; each reply is judged; rejected keys are asked again (with a new
seed) until they have an accepted rewrite or ``max_attempts`` rejected ones — then they keep none, and
the store says why. Every try is appended (fsynced) before the next, so an interrupted job continues
where it stopped. Failed requests (the server gave nothing usable) are recorded with their reason
(``text: null``) and do not count toward ``max_attempts``: they are asked again in the job's next round
and on a rerun. A reply cut off at the token limit is rejected ("truncated at max_tokens").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tbpr.data.caption_store import CaptionStore, KeyProgress, StoreRecord, record_key
from tbpr.data.schema import CaptionRecord, Manifest
from tbpr.errors import ConfigError
from tbpr.generate.chat import Failure
from tbpr.generate.jobs import (
    TRUNCATED,
    JobSummary,
    Shard,
    ask_in_rounds,
    check_same_captions,
    next_tries,
    reply_record,
)
from tbpr.generate.llm import TextBackend
from tbpr.generate.text.prompts import PromptTemplate

log = logging.getLogger(__name__)

METHOD = "llm_rewrite"


class Verdict(Protocol):
    text: str
    accepted: bool
    reason: str | None
    similarity: float | None
    attributes: dict | None


class Judge(Protocol):
    """Cleans and judges rewrites (``tbpr.generate.text.faithfulness.FaithfulnessFilter``)."""

    @property
    def settings(self) -> dict[str, Any]: ...

    def judge(self, originals: list[str], raw_rewrites: list[str]) -> list[Verdict]: ...


@dataclass
class _Job:
    backend: TextBackend
    prompt: PromptTemplate
    judge: Judge
    shard: Shard
    seed: int
    keep_truncated: bool

    def records(
        self, work: list[tuple[CaptionRecord, int]], progress: dict[str, KeyProgress]
    ) -> list[StoreRecord]:
        """One try for each ``(caption, n)`` of ``work``."""
        attempts, seeds = next_tries(progress, self.seed, [(c.id, n) for c, n in work])
        replies = self.backend.generate([self.prompt.messages(c.text) for c, _ in work], seeds)
        answered = [i for i, reply in enumerate(replies) if not isinstance(reply, Failure)]
        verdicts = dict(
            zip(
                answered,
                self.judge.judge([work[i][0].text for i in answered], [replies[i] for i in answered]),
                strict=True,
            )
        )
        common = {
            "prompt_hash": self.prompt.hash(),
            "filter": self.judge.settings,
            "shard": self.shard.label,
        }
        out = []
        for i, ((caption, n), reply) in enumerate(zip(work, replies)):
            verdict = verdicts.get(i)
            extra = {**common, "similarity": None, "attributes": None}
            accepted, reason = False, getattr(reply, "reason", None)
            if verdict is not None:
                extra.update(similarity=verdict.similarity, attributes=verdict.attributes)
                if verdict.text != reply:
                    extra["raw_text"] = str(reply)
                accepted, reason = verdict.accepted, verdict.reason
                if accepted and getattr(reply, "truncated", False) and not self.keep_truncated:
                    accepted, reason = False, f"{TRUNCATED} (raise --max-tokens)"
            out.append(
                reply_record(
                    self.backend,
                    METHOD,
                    caption.id,
                    n,
                    seeds[i],
                    reply,
                    text=verdict.text if verdict else None,
                    source_text=caption.text,
                    attempt=attempts[i],
                    accepted=accepted,
                    reason=reason,
                    extra=extra,
                )
            )
        return out


def rewrite_captions(
    manifest: Manifest,
    store_path: str | Path,
    backend: TextBackend,
    prompt: PromptTemplate,
    judge: Judge,
    per_caption: int = 1,
    max_attempts: int = 3,
    shard: Shard | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    seed: int = 0,
    keep_truncated: bool = False,
) -> JobSummary:
    """Rewrite the captions of ``manifest`` (the training split) into the store at ``store_path``.

    ``limit`` keeps the first captions by id (before sharding); ``shard`` keeps the captions of one slice.
    ``keep_truncated`` lets the filter judge replies cut off at the token limit instead of rejecting them.
    """
    if per_caption < 1 or max_attempts < 1 or batch_size < 1:
        raise ConfigError(
            f"per_caption={per_caption}, max_attempts={max_attempts}, batch_size={batch_size}: each must be >= 1"
        )
    shard = shard or Shard()
    captions = [c for c in sorted(manifest.captions, key=lambda c: c.id)[:limit] if c.id in shard]
    work = [(caption, n) for caption in captions for n in range(per_caption)]
    summary = JobSummary(len(work))
    log.info("rewriting with %s (%s)", backend.model, backend.backend)  # a chat server is checked here, first
    store = CaptionStore(store_path)
    job = _Job(backend, prompt, judge, shard, seed, keep_truncated)
    with store.exclusive():
        progress = store.progress()
        check_same_captions(store, progress, captions, per_caption)
        ask_in_rounds(
            store,
            progress,
            work,
            lambda w: record_key(w[0].id, w[1]),
            lambda todo: job.records(todo, progress),
            summary,
            max_attempts,
            batch_size,
            "rewriting",
        )
    log.info(summary.line(str(store.path)))
    return summary
