"""Prompt polishing for ``tbpr generate persons --polish``: an LLM (the chat or local text backends of
``tbpr.generate.llm``) rewrites each identity's template prompt as one fluent sentence.

A reply is cleaned and judged like a caption (``clean_caption``); a rejected reply or a failed request
keeps the template prompt, with the reason recorded (``polish``). The template prompt stays the item's
``source_text``, so reruns and shards recognise the identity; a rerun reuses the polished prompt the store
already holds for an identity, so all of one identity's images share one prompt.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from tbpr.data.caption_store import CaptionStore
from tbpr.generate.chat import Failure
from tbpr.generate.images.job import ImageWork
from tbpr.generate.jobs import request_seed
from tbpr.generate.llm import TextBackend
from tbpr.generate.text.templates import clean_caption

log = logging.getLogger(__name__)

INSTRUCTION = (
    "Rewrite this description of a person as one fluent sentence for an image generator. Keep every "
    "colour, garment, accessory and the camera angle; add nothing. Reply with the sentence only.\n\n"
    "Description: {prompt}"
)


def polish_work(
    work: list[ImageWork], backend: TextBackend, store_path: str | Path, seed: int, batch_size: int = 8
) -> list[ImageWork]:
    """``work`` with each identity's prompt polished (see the module docstring)."""
    store = CaptionStore(store_path)
    known: dict[int, dict[str, Any]] = {}
    for rec in store if store.path.is_file() else ():
        if isinstance(rec.extra.get("polish"), dict):
            known.setdefault(rec.caption_id, rec.extra["polish"])
    templates = {w.item_id: w.source_text for w in work}
    todo = [item for item in templates if item not in known]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        conversations = [
            [{"role": "user", "content": INSTRUCTION.format(prompt=templates[i])}] for i in batch
        ]
        replies = backend.generate(conversations, [request_seed(seed, i, 0, 1) for i in batch])
        for item, reply in zip(batch, replies):
            text, reason = (None, reply.reason) if isinstance(reply, Failure) else clean_caption(reply)
            if reason is not None:
                log.warning("prompt of identity %d kept unpolished: %s", item, reason)
            known[item] = {
                "model": backend.model,
                "prompt": templates[item] if reason else text,
                "reason": reason,
                "raw": None if isinstance(reply, Failure) else str(reply),
            }
    return [
        replace(
            w,
            request=replace(w.request, prompt=known[w.item_id]["prompt"]),
            extra={**w.extra, "polish": known[w.item_id]},
        )
        for w in work
    ]
