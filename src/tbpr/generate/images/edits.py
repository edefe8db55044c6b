"""SynTBPR's intra-class editing (``tbpr generate edit``): every accepted image of a generation store
redrawn as the same identity under a new background, weather, picture style, posture or view.

Each (source image, kind, value) is one item; its edit, instruction and prompts are recorded, with the
source image, its prompt (``source_caption``) and the identity (``identity_id``: the source's item id, so
a dataset built from both stores keeps the edit with its identity). Values the source already has are
skipped. The renderer redraws the recorded person; an instruction-editing model reads ``instruction``,
prompt-to-prompt reads ``source_prompt`` and ``target_prompt``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tbpr.errors import ConfigError
from tbpr.generate.images.backend import EditRequest
from tbpr.generate.images.job import ImageWork
from tbpr.generate.images.store import accepted_images

METHOD = "person_edit"
PHRASES = {  # how each edit kind reads in an instruction and a target prompt
    "background": ("put the person in front of a {value} background", "in front of a {value} background"),
    "weather": ("make the weather {value}", "in {value} weather"),
    "picture_style": ("turn the picture into a {value}", "as a {value}"),
    "posture": ("make the person {value}", "{value}"),
    "view": ("show the person from the {value}", "seen from the {value}"),
}


def edit_work(
    source_store: str | Path,
    edits: dict[str, list[str]],
    steps: int = 50,
    guidance: float = 7.5,
    inversion: dict[str, Any] | None = None,
) -> list[ImageWork]:
    """One wanted edit per accepted source image and (kind, value) of ``edits``."""
    unknown = set(edits) - set(PHRASES)
    if unknown:
        raise ConfigError(f"edit kinds {sorted(unknown)} are unknown; use {', '.join(PHRASES)}")
    work = []
    for rec, path in accepted_images(source_store):
        result = rec.extra.get("result") or {}
        person = {"attributes": (rec.extra.get("person") or {}).get("attributes"), **result}
        prompt = rec.extra.get("prompt") or ""
        identity = rec.extra.get("identity_id", rec.caption_id)
        for kind, values in edits.items():
            for value in values:
                if result.get(kind) == value or (result.get("scene") or {}).get(kind) == value:
                    continue
                instruction, phrase = (p.format(value=value) for p in PHRASES[kind])
                source_text = f"{rec.text} -> {kind}={value}"
                request = EditRequest(
                    path,
                    {"kind": kind, "value": value},
                    seed=0,  # the job sets each try's seed
                    instruction=instruction,
                    source_prompt=prompt,
                    target_prompt=f"{prompt}, {phrase}" if prompt else phrase,
                    steps=steps,
                    guidance=guidance,
                    inversion=inversion or {},
                    person=person,
                )
                extra = {
                    "source_image": rec.text,
                    "source_caption": prompt,
                    "source_key": rec.key,
                    "identity_id": identity,
                    "identity": rec.extra.get("identity"),
                }
                item = int.from_bytes(hashlib.sha256(source_text.encode()).digest()[:6], "big")
                work.append(ImageWork(item, 0, source_text, request, extra))
    return work
