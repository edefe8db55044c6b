"""Training-time text augmentation (TBPS-CLIP, paper Tables 3 and 14).

``data.text_augment`` (``TextAugConfig``)::

    ops: {back_translation: 0.1, random_deletion: 0.05}  # op name -> alpha
    stores: [back_translations.jsonl]  # caption stores; the trainer resolves relative paths against data.path

Every call applies the configured ops in the order of ``ORDER``, as the public TBPS-CLIP code does:
back translation first (with probability alpha the caption is replaced by one of its accepted
back translations, drawn uniformly; ``rng.random()`` is drawn whether or not the caption has one), then
each configured EDA operation of ``tbpr.text.operations`` with its alpha. Captions without a back
translation keep their text; pass ``caption_ids`` to have how many counted and logged once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from tbpr.errors import ConfigError, DataError
from tbpr.text import wordnet
from tbpr.text.operations import OPERATIONS, USES_SYNONYMS

log = logging.getLogger(__name__)

BACK_TRANSLATION = "back_translation"
ORDER = (BACK_TRANSLATION, *OPERATIONS)
_WHERE = "data.text_augment"


@dataclass
class TextAugConfig:
    """``ops``: op name -> alpha in [0, 1]; ``stores``: caption store files for back_translation."""

    ops: dict[str, float] = field(default_factory=dict)
    stores: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, alpha in self.ops.items():
            if name not in ORDER:
                raise ConfigError(f"{_WHERE}.ops.{name}: unknown text augmentation; known: {list(ORDER)}")
            if not 0 <= alpha <= 1:
                raise ConfigError(f"{_WHERE}.ops.{name}: alpha must be within [0, 1], got {alpha}")
        if BACK_TRANSLATION in self.ops and not self.stores:
            raise ConfigError(
                f"{_WHERE}.ops.{BACK_TRANSLATION} needs {_WHERE}.stores: the caption store files holding "
                "the back translations (make one with `tbpr augment backtranslate`)"
            )
        if self.stores and BACK_TRANSLATION not in self.ops:
            log.warning(
                "%s.stores is set but %s.ops has no %s: the stores are unused",
                _WHERE,
                _WHERE,
                BACK_TRANSLATION,
            )


class TextAugmenter:
    """``augmenter(text, caption_id, rng) -> str``: the configured ops, drawing only from ``rng``.

    Picklable, so DataLoader workers can run it. Back translations are read from the stores here, and
    WordNet is loaded here when an op needs synonyms, so a missing file fails before training starts.
    """

    def __init__(self, cfg: TextAugConfig, caption_ids: Iterable[int] | None = None):
        self.back_translation = cfg.ops.get(BACK_TRANSLATION)
        self.steps = [(op, cfg.ops[name]) for name, op in OPERATIONS.items() if name in cfg.ops]
        self.texts: dict[int, list[str]] = {}
        if self.back_translation is not None:
            self.texts = _back_translations(cfg.stores)
            if caption_ids is not None:
                ids = set(caption_ids)
                missing = len(ids - self.texts.keys())
                if missing:
                    log.warning(
                        "%d of %d captions have no back translation in %s: they keep their original text",
                        missing,
                        len(ids),
                        cfg.stores,
                    )
        if USES_SYNONYMS & cfg.ops.keys():
            wordnet.reader()
        log.info("text augmentation: %s", ", ".join(f"{n} {cfg.ops[n]:g}" for n in ORDER if n in cfg.ops))

    def __call__(self, text: str, caption_id: int, rng: random.Random) -> str:
        if self.back_translation is not None and rng.random() < self.back_translation:
            choices = self.texts.get(caption_id)
            if choices:
                text = rng.choice(choices)
        for op, alpha in self.steps:
            text = op(text, alpha, rng)
        return text


def _back_translations(stores: list[str]) -> dict[int, list[str]]:
    from tbpr.generate.store import accepted_texts  # the generation package is only needed here

    texts = accepted_texts(stores, method=BACK_TRANSLATION)
    if not texts:
        raise DataError(
            f"{_WHERE}.stores {stores}: no accepted {BACK_TRANSLATION} record; "
            "fill them with `tbpr augment backtranslate` or fix the paths"
        )
    return texts
