"""Translators (MarianMT models, OpenAI-compatible chat servers) and the resumable back-translation job.

``back_translate`` writes one caption store record per training caption: the caption translated to a
pivot language and back (English -> French -> English by default), with the translator's provenance.
Captions the store already holds are skipped, so an interrupted job continues where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from tbpr.data.caption_store import CaptionStore, KeyProgress, StoreRecord, record_key
from tbpr.data.schema import CaptionRecord, Manifest
from tbpr.errors import ConfigError
from tbpr.generate.chat import ChatClient, Failure
from tbpr.generate.jobs import JobSummary, ask_in_rounds, check_same_captions

log = logging.getLogger(__name__)

LANGUAGE_NAMES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
}


class Translator(Protocol):
    """Translates texts between languages given as ISO 639-1 codes ("en", "fr", ...)."""

    backend: str  # recorded in the store: "marian", "openai", ...

    @property
    def model(self) -> str: ...  # the model(s) used, recorded in the store

    @property
    def settings(self) -> dict[str, Any]: ...  # settings that shape the output, recorded in the store

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str | Failure]:
        """One translation per text, in order; ``Failure`` where a text got none."""
        ...


def marian_hub_name(src: str, tgt: str) -> str:
    """The Helsinki-NLP OPUS-MT model of a direction, e.g. ``Helsinki-NLP/opus-mt-en-fr``."""
    return f"Helsinki-NLP/opus-mt-{src}-{tgt}"


class MarianTranslator:
    """MarianMT models (transformers), one per direction, each a hub name or a local folder.

    ``models`` maps ``(src, tgt)`` to the model of that direction; they load on first use.
    ``num_beams=4`` is what OPUS-MT models use by default.
    """

    backend = "marian"

    def __init__(
        self,
        models: dict[tuple[str, str], str],
        device: str = "cpu",
        batch_size: int = 32,
        num_beams: int = 4,
        max_new_tokens: int = 256,
    ) -> None:
        self.models = dict(models)
        self.device = device
        self.batch_size = batch_size
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens
        self._loaded: dict[tuple[str, str], tuple[Any, Any]] = {}

    @property
    def model(self) -> str:
        return " + ".join(self.models.values())

    @property
    def settings(self) -> dict[str, Any]:
        return {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens}

    def _load(self, src: str, tgt: str) -> tuple[Any, Any]:
        if (src, tgt) not in self._loaded:
            from transformers import MarianMTModel, MarianTokenizer

            name = self.models.get((src, tgt))
            if name is None:
                raise ConfigError(f"no Marian model is given for translating {src} -> {tgt}")
            try:
                tokenizer = MarianTokenizer.from_pretrained(name)
                model = MarianMTModel.from_pretrained(name).to(self.device).eval()
            except OSError as err:
                raise ConfigError(
                    f"cannot load the Marian model {name!r} ({src} -> {tgt}): {err}; give a local model "
                    "folder or a hub name that is downloadable (or already in the Hugging Face cache)"
                ) from None
            self._loaded[src, tgt] = tokenizer, model
        return self._loaded[src, tgt]

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str | Failure]:
        import torch

        tokenizer, model = self._load(src, tgt)
        out: list[str | Failure] = []
        for start in range(0, len(texts), self.batch_size):
            inputs = tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=model.config.max_position_embeddings,
            ).to(self.device)
            with torch.inference_mode():
                generated = model.generate(
                    **inputs, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens
                )
            out.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
        return out


TRANSLATION_PROMPT = (
    "You are a translator. Translate the user's text from {src} to {tgt}. "
    "Reply with the translation only, without notes or quotes."
)


class ChatTranslator:
    """Prompted translation through an OpenAI-compatible chat server (one request per text)."""

    backend = "openai"

    def __init__(self, client: ChatClient, prompt: str = TRANSLATION_PROMPT) -> None:
        self.client = client
        self.prompt = prompt

    @property
    def model(self) -> str:
        return self.client.served_model

    @property
    def settings(self) -> dict[str, Any]:
        return {**self.client.settings.request_fields(), "prompt": self.prompt}

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str | Failure]:
        system = self.prompt.format(src=LANGUAGE_NAMES.get(src, src), tgt=LANGUAGE_NAMES.get(tgt, tgt))
        replies = self.client.complete_many(
            [[{"role": "system", "content": system}, {"role": "user", "content": text}] for text in texts]
        )
        return [reply if isinstance(reply, Failure) else reply.strip() for reply in replies]


def _outcome(
    fwd: str | Failure, back: str | Failure | None, src: str, pivot: str
) -> tuple[str | None, bool, str | None]:
    """``(text, accepted, reason)`` of one caption's round trip."""
    if isinstance(fwd, Failure):
        return None, False, f"{src}->{pivot}: {fwd.reason}"
    if not fwd.strip():
        return "", False, f"empty {src}->{pivot} translation"
    if isinstance(back, Failure):
        return None, False, f"{pivot}->{src}: {back.reason}"
    if not back.strip():
        return "", False, f"empty {pivot}->{src} translation"
    return back, True, None


def back_translate(
    manifest: Manifest,
    store_path: str | Path,
    translator: Translator,
    pivot: str = "fr",
    source: str = "en",
    batch_size: int = 32,
    limit: int | None = None,
) -> JobSummary:
    """Back-translate the captions of ``manifest`` (the training split) into the store at ``store_path``.

    ``limit`` keeps the first captions by id. Each batch's records are fsynced before the next batch;
    captions already done are skipped, and captions whose request failed are retried on a rerun.
    Empty translations are recorded as rejected.
    """
    captions = sorted(manifest.captions, key=lambda c: c.id)[:limit]
    summary = JobSummary(len(captions))
    store = CaptionStore(store_path)
    with store.exclusive():
        progress = store.progress()
        check_same_captions(store, progress, captions)
        ask_in_rounds(
            store,
            progress,
            captions,
            lambda c: record_key(c.id),
            lambda todo: _translate_batch(todo, translator, source, pivot, progress),
            summary,
            max_attempts=1,
            batch_size=batch_size,
            desc="back translation",
        )
    log.info(summary.line(str(store.path)))
    return summary


def _translate_batch(
    batch: list[CaptionRecord],
    translator: Translator,
    source: str,
    pivot: str,
    progress: dict[str, KeyProgress],
) -> list[StoreRecord]:
    forward = translator.translate([c.text for c in batch], source, pivot)
    ok = [i for i, text in enumerate(forward) if isinstance(text, str) and text.strip()]
    backward: list[str | Failure | None] = [None] * len(batch)
    if ok:
        for i, text in zip(ok, translator.translate([forward[i] for i in ok], pivot, source), strict=True):
            backward[i] = text
    records = []
    for caption, fwd, back in zip(batch, forward, backward, strict=True):
        key = record_key(caption.id)
        text, accepted, reason = _outcome(fwd, back, source, pivot)
        previous = progress.get(key)
        records.append(
            StoreRecord(
                key=key,
                caption_id=caption.id,
                text=text,
                source_text=caption.text,
                method="back_translation",
                backend=translator.backend,
                model=translator.model,
                languages=[source, pivot, source],
                settings=translator.settings,
                attempt=(previous.tries if previous else 0) + 1,
                accepted=accepted,
                reason=reason,
                extra={"pivot_text": fwd if isinstance(fwd, str) else None},
            )
        )
    return records
