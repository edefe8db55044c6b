"""Training-time text augmentation: TBPS-CLIP's ops (paper Tables 3 and 14) and LLM-DA's BSS.

``data.text_augment`` (``TextAugConfig``)::

    ops: {llm_rewrite: 0.2, random_deletion: 0.05}  # op name -> probability
    stores: [rewrites.jsonl]  # caption stores; the trainer resolves relative paths against data.path
    store_select: accepted    # or "all": rewrites the faithfulness filter rejected too (no-TFF ablation)
    min_similarity: null      # also require a stored similarity >= this
    expand: false             # add every selected LLM rewrite as an extra training caption
    approximate:              # PDG's approximate text (docs/pdg.md); empty ops: off
      ops: [sdel, cdel, repl] # one drawn uniformly per altered caption
      sigma: 0.2              # each alters floor(sigma * L) of the caption's L words
      p: 0.5                  # probability per sample

Every call applies the configured ops in the order of ``ORDER``. First the store ops (``STORE_OPS``),
whose texts come from the caption stores: with probability p the caption is replaced by one of the
texts its stores hold for it under the op's method, drawn uniformly (for ``llm_rewrite`` this is
LLM-DA's Balanced Sampling Strategy, p = beta). Each store op draws one ``rng.random()`` per call,
whether or not the caption has a stored text; a caption without one keeps its text (pass
``caption_ids`` to have how many counted and logged once). When both store ops fire, the later one
(``llm_rewrite``) wins. Then each configured EDA operation of ``tbpr.text.operations`` with its alpha,
as the public TBPS-CLIP code does.

PDG's approximate text is not one of these steps: the dataset applies ``ApproximateText`` to the
augmented caption s (with a generator of its own, drawn from the same per-sample seed) and keeps both,
s' for the contrastive losses and s for the constraint loss ``approx_constraint`` (L_c).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from tbpr.data.caption_store import SELECTIONS, accepted_texts
from tbpr.data.schema import CaptionRecord, Manifest
from tbpr.errors import ConfigError, DataError
from tbpr.text import wordnet
from tbpr.text.operations import APPROXIMATE_OPERATIONS, OPERATIONS, USES_SYNONYMS

log = logging.getLogger(__name__)

BACK_TRANSLATION = "back_translation"
LLM_REWRITE = "llm_rewrite"
# store op -> what its texts are called in messages, and the command that makes them
STORE_OPS = {
    BACK_TRANSLATION: ("back translation", "tbpr augment backtranslate"),
    LLM_REWRITE: ("LLM rewrite", "tbpr augment rewrite"),
}
ORDER = (*STORE_OPS, *OPERATIONS)
_WHERE = "data.text_augment"


@dataclass
class ApproximateTextConfig:
    """PDG's approximate text: with probability ``p``, one of ``ops`` (drawn uniformly) with ``sigma``."""

    ops: list[str] = field(default_factory=list)
    sigma: float = 0.2
    p: float = 0.5

    def __post_init__(self) -> None:
        where = f"{_WHERE}.approximate"
        for name in self.ops:
            if name not in APPROXIMATE_OPERATIONS:
                raise ConfigError(
                    f"{where}.ops: unknown operation {name!r}; known: {list(APPROXIMATE_OPERATIONS)}"
                )
        if len(set(self.ops)) < len(self.ops):
            raise ConfigError(f"{where}.ops {self.ops}: name each operation once (one is drawn uniformly)")
        if not 0 < self.sigma < 1:
            raise ConfigError(f"{where}.sigma={self.sigma}: the share of words altered, within (0, 1)")
        if not 0 <= self.p <= 1:
            raise ConfigError(f"{where}.p={self.p}: a probability, within [0, 1]")


class ApproximateText:
    """``approximate(text, rng) -> str``: s' with probability p (one op drawn uniformly), else ``text``.

    Draws one ``rng.random()``, then (when it fires) the op's index and the op's own draws. Picklable;
    loads WordNet here when REPL is configured, so a missing WordNet fails before training starts.
    """

    def __init__(self, cfg: ApproximateTextConfig):
        self.ops = [APPROXIMATE_OPERATIONS[name] for name in cfg.ops]
        self.sigma, self.p = cfg.sigma, cfg.p
        if USES_SYNONYMS & set(cfg.ops):
            wordnet.reader()
        log.info("approximate text: %s, sigma %g, p %g", ", ".join(cfg.ops), cfg.sigma, cfg.p)

    def __call__(self, text: str, rng: random.Random) -> str:
        if not rng.random() < self.p:
            return text
        return self.ops[rng.randrange(len(self.ops))](text, self.sigma, rng)


@dataclass
class TextAugConfig:
    """``ops``: op name -> probability in [0, 1]; ``stores``: caption store files for the store ops;
    ``store_select``/``min_similarity``: which stored texts count; ``expand``: LLM rewrites as extra captions;
    ``approximate``: PDG's approximate text."""

    ops: dict[str, float] = field(default_factory=dict)
    stores: list[str] = field(default_factory=list)
    store_select: str = "accepted"
    min_similarity: float | None = None
    expand: bool = False
    approximate: ApproximateTextConfig = field(default_factory=ApproximateTextConfig)

    def __post_init__(self) -> None:
        for name, alpha in self.ops.items():
            if name not in ORDER:
                raise ConfigError(f"{_WHERE}.ops.{name}: unknown text augmentation; known: {list(ORDER)}")
            if not 0 <= alpha <= 1:
                raise ConfigError(f"{_WHERE}.ops.{name}: alpha must be within [0, 1], got {alpha}")
        if self.store_select not in SELECTIONS:
            raise ConfigError(
                f"{_WHERE}.store_select={self.store_select!r}: expected one of {list(SELECTIONS)}"
            )
        if self.min_similarity is not None and not -1 <= self.min_similarity <= 1:
            raise ConfigError(
                f"{_WHERE}.min_similarity={self.min_similarity}: a cosine similarity, within [-1, 1]"
            )
        users = [(f"ops.{name}", name) for name in self.store_ops()] + self.expand * [("expand", LLM_REWRITE)]
        if users and not self.stores:
            option, name = users[0]
            what, command = STORE_OPS[name]
            raise ConfigError(
                f"{_WHERE}.{option} needs {_WHERE}.stores: the caption store files holding "
                f"the {what}s (make one with `{command}`)"
            )
        if self.stores and not users:
            log.warning(
                "%s.stores is set but neither a store op (%s) nor expand uses them: the stores are unused",
                _WHERE,
                ", ".join(STORE_OPS),
            )

    def store_ops(self) -> list[str]:
        """The configured ops whose texts come from the stores, in application order."""
        return [name for name in STORE_OPS if name in self.ops]

    def stored_texts(self, method: str) -> dict[int, list[str]]:
        """Caption id -> the texts of ``method`` the stores hold under this selection (a DataError if none)."""
        texts = accepted_texts(self.stores, method, self.store_select, self.min_similarity)
        if not texts:
            kind = "accepted" if self.store_select == "accepted" else "usable"
            bound = f" with similarity >= {self.min_similarity:g}" if self.min_similarity is not None else ""
            raise DataError(
                f"{_WHERE}.stores {self.stores}: no {kind} {method} record{bound}; fill them with "
                f"`{STORE_OPS[method][1]}`, fix the paths or relax {_WHERE}.store_select/min_similarity"
            )
        return texts


class TextAugmenter:
    """``augmenter(text, caption_id, rng) -> str``: the configured ops, drawing only from ``rng``.

    Picklable, so DataLoader workers can run it. Stored texts are read from the stores here, and
    WordNet is loaded here when an op needs synonyms, so a missing file fails before training starts.
    """

    def __init__(self, cfg: TextAugConfig, caption_ids: Iterable[int] | None = None):
        ids = None if caption_ids is None else set(caption_ids)
        self.store_steps: list[tuple[float, dict[int, list[str]]]] = []
        for name in cfg.store_ops():
            texts = cfg.stored_texts(name)
            self.store_steps.append((cfg.ops[name], texts))
            missing = 0 if ids is None else len(ids - texts.keys())
            if missing:
                log.warning(
                    "%d of %d captions have no %s in %s: they keep their original text",
                    missing,
                    len(ids),
                    STORE_OPS[name][0],
                    cfg.stores,
                )
        self.steps = [(op, cfg.ops[name]) for name, op in OPERATIONS.items() if name in cfg.ops]
        if USES_SYNONYMS & cfg.ops.keys():
            wordnet.reader()
        log.info("text augmentation: %s", ", ".join(f"{n} {cfg.ops[n]:g}" for n in ORDER if n in cfg.ops))

    def __call__(self, text: str, caption_id: int, rng: random.Random) -> str:
        for p, texts in self.store_steps:
            if rng.random() < p:  # the paper's r <= beta, up to the probability-zero draw r == beta
                choices = texts.get(caption_id)
                if choices:
                    text = rng.choice(choices)
        for op, alpha in self.steps:
            text = op(text, alpha, rng)
        return text


def expand_manifest(manifest: Manifest, texts: dict[int, list[str]], start_id: int | None = None) -> Manifest:
    """``manifest`` plus one caption per text in ``texts`` (caption id -> texts) of its captions.

    The new captions describe the image of the caption they were made from, carry source
    ``"llm_rewrite"`` and take ids from ``start_id`` on (default: after the largest caption id), in
    caption order; the original captions come first, unchanged.
    """
    next_id = start_id if start_id is not None else max((c.id for c in manifest.captions), default=-1) + 1
    extra = []
    for caption in manifest.captions:
        for text in texts.get(caption.id, ()):
            extra.append(CaptionRecord(next_id, caption.image_id, text, source=LLM_REWRITE))
            next_id += 1
    return replace(manifest, captions=[*manifest.captions, *extra])


def expand_training_split(split: Manifest, cfg: TextAugConfig, start_id: int | None = None) -> Manifest:
    """``split`` with every selected LLM rewrite of its captions as an extra caption (``cfg.expand``)."""
    texts = cfg.stored_texts(LLM_REWRITE)
    expanded = expand_manifest(split, texts, start_id)
    covered = sum(c.id in texts for c in split.captions)
    log.info(
        "%s.expand: added %d LLM rewrites of %d of %d training captions (%d captions in all)",
        _WHERE,
        len(expanded.captions) - len(split.captions),
        covered,
        len(split.captions),
        len(expanded.captions),
    )
    return expanded
