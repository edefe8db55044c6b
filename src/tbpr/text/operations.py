"""EDA's word-level text operations (Wei and Zou 2019), with TBPS-CLIP's alpha semantics.

Each operation is ``op(text, alpha, rng) -> str`` and draws only from the ``random.Random`` it is given.
For a caption of L words (paper appendix B.1, EDA's ``eda.py``):

- synonym replacement replaces n = max(1, floor(alpha * L)) distinct non-stop words, each (every
  occurrence of it) by one of its synonyms drawn at random;
- random insertion inserts n times a random synonym of a random non-stop word before a random word;
- random swap swaps the words of two distinct random positions, n times;
- random deletion deletes each word with probability alpha, keeping one random word if none survives;
- ``eda`` draws one of these four uniformly per call and applies it with the same alpha: the paper's
  "EDA" row (Table 3) "randomly selects one from synonym replacement, random insertion, random swap
  and random deletion", a single alpha for all four (Table 14).

n is floored as EDA's ``int(alpha * num_words)``; alpha = 0 is a no-op (EDA would still apply one).

PDG's approximate text operations (``APPROXIMATE_OPERATIONS``, eqs. 9-10; docs/pdg.md) take sigma in
place of alpha and alter N_w = floor(sigma * L) words (none in a caption shorter than 1 / sigma words):
SDEL deletes N_w words at random positions, CDEL a span of N_w consecutive words, REPL replaces the
words at N_w random positions (among those with synonyms) by a WordNet synonym each.
Synonyms come from WordNet as in EDA's ``get_synonyms``: lemma names with ``_`` and ``-`` turned into
spaces, lowercased, letters only, the word itself excluded; stop words (EDA's list) get none.

Unlike EDA, which strips punctuation and lowercases, captions keep their form: punctuation marks are
separate tokens that operations never pick (so L counts words only), hyphenated and apostrophe words
("t-shirt", "woman's") are single words, and each token keeps the spacing before it. A replaced
capitalized word keeps its capital. Deletion drops a "," ";" ":" "." "!" "?" whose words it
followed are all deleted; a later mark replaces such an orphan ("a red jacket, black." minus
"black" gives "a red jacket.", not "a red jacket,.").
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from tbpr.text import wordnet

# EDA's stop-word list (eda_nlp/code/eda.py)
STOP_WORDS = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her
    hers herself it its itself they them their theirs themselves what which who whom this that these
    those am is are was were be been being have has had having do does did doing a an the and but if
    or because as until while of at by for with about against between into through during before after
    above below to from up down in out on off over under again further then once here there when where
    why how all any both each few more most other some such no nor not only own same so than too very
    s t can will just don should now
    """.split()  # noqa: SIM905 (a word list reads better as text)
)

Synonyms = Callable[[str], Sequence[str]]
Operation = Callable[[str, float, random.Random], str]

_TOKEN = re.compile(r"(?P<word>\w+(?:[-'’]\w+)*)|[^\w\s]")
_SEPARATORS = frozenset(",;:.!?")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz ")


class Token(NamedTuple):
    text: str
    space: bool  # whitespace precedes it in the caption
    word: bool  # False for a punctuation mark


def tokenize(text: str) -> list[Token]:
    """Words and single punctuation marks, each with whether whitespace came before it."""
    tokens, end = [], 0
    for m in _TOKEN.finditer(text):
        tokens.append(Token(m.group(), m.start() > end, m.lastgroup == "word"))
        end = m.end()
    return tokens


def detokenize(tokens: Sequence[Token]) -> str:
    """The caption text of ``tokens`` (whitespace normalized to single spaces)."""
    return "".join(" " * t.space + t.text for t in tokens).lstrip()


def words(text: str) -> list[str]:
    """The words of a caption, punctuation left out: L is ``len(words(text))``."""
    return [t.text for t in tokenize(text) if t.word]


def n_operations(alpha: float, length: int) -> int:
    """EDA's number of replacements/insertions/swaps: max(1, floor(alpha * L)); 0 when alpha or L is 0."""
    if alpha <= 0 or length == 0:
        return 0
    return max(1, int(alpha * length + 1e-9))  # the epsilon keeps 0.3 * 10 = 2.9999... at 3


def _normalize(name: str) -> str:
    name = name.replace("_", " ").replace("-", " ").lower()
    return " ".join("".join(c for c in name if c in _LETTERS).split())


@functools.lru_cache(maxsize=1 << 16)
def wordnet_synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of ``word`` (lowercase), EDA-filtered, in WordNet's order; none for stop words."""
    if word in STOP_WORDS:
        return ()
    found = dict.fromkeys(
        _normalize(lemma.name()) for synset in wordnet.reader().synsets(word) for lemma in synset.lemmas()
    )
    return tuple(s for s in found if s and s != _normalize(word))


def _candidates(tokens: Sequence[Token], synonyms: Synonyms) -> list[str]:
    """The caption's distinct lowercased non-stop words that have synonyms, in order of appearance."""
    distinct = dict.fromkeys(t.text.lower() for t in tokens if t.word)
    return [w for w in distinct if w not in STOP_WORDS and synonyms(w)]


def _word_positions(tokens: Sequence[Token]) -> list[int]:
    return [i for i, t in enumerate(tokens) if t.word]


def _match_case(new: str, old: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def synonym_replacement(
    text: str, alpha: float, rng: random.Random, synonyms: Synonyms = wordnet_synonyms
) -> str:
    """Replace n distinct words (all their occurrences) by a random synonym each."""
    tokens = tokenize(text)
    candidates = _candidates(tokens, synonyms)
    n = n_operations(alpha, len(_word_positions(tokens)))
    chosen = rng.sample(candidates, min(n, len(candidates)))
    replace = {w: rng.choice(synonyms(w)) for w in chosen}
    return detokenize(
        [
            t._replace(text=_match_case(replace[t.text.lower()], t.text))
            if t.word and t.text.lower() in replace
            else t
            for t in tokens
        ]
    )


def random_insertion(
    text: str, alpha: float, rng: random.Random, synonyms: Synonyms = wordnet_synonyms
) -> str:
    """Insert, n times, a random synonym of a random non-stop word before a random word."""
    tokens = tokenize(text)
    candidates = _candidates(tokens, synonyms)
    if not candidates:
        return text
    for _ in range(n_operations(alpha, len(_word_positions(tokens)))):
        synonym = rng.choice(synonyms(rng.choice(candidates)))
        i = rng.choice(_word_positions(tokens))
        tokens[i : i + 1] = [Token(synonym, tokens[i].space, True), tokens[i]._replace(space=True)]
    return detokenize(tokens)


def random_swap(text: str, alpha: float, rng: random.Random) -> str:
    """Swap the words at two distinct random positions, n times (punctuation stays in place)."""
    tokens = tokenize(text)
    positions = _word_positions(tokens)
    if len(positions) < 2:
        return text
    for _ in range(n_operations(alpha, len(positions))):
        i, j = rng.sample(positions, 2)
        tokens[i], tokens[j] = (
            tokens[i]._replace(text=tokens[j].text),
            tokens[j]._replace(text=tokens[i].text),
        )
    return detokenize(tokens)


def _delete(tokens: Sequence[Token], drop: set[int]) -> list[Token]:
    """``tokens`` without those at the indices in ``drop``, orphaned separators tidied (module docstring)."""
    kept: list[Token] = []
    deleted = False  # a token was deleted since the last kept word
    for i, t in enumerate(tokens):
        if i in drop:
            deleted = True
        elif t.word:
            kept.append(t)
            deleted = False
        elif deleted and t.text in _SEPARATORS and (not kept or not kept[-1].word):
            if kept and kept[-1].text in _SEPARATORS:  # "red, [black]." -> "red."
                kept[-1] = kept[-1]._replace(text=t.text)
        else:
            kept.append(t)
    return kept


def random_deletion(text: str, alpha: float, rng: random.Random) -> str:
    """Delete each word with probability alpha; never return a caption without words."""
    tokens = tokenize(text)
    positions = _word_positions(tokens)
    if not positions:
        return text
    kept = _delete(tokens, {i for i in positions if rng.random() < alpha})
    if not any(t.word for t in kept):
        return tokens[rng.choice(positions)].text
    return detokenize(kept)


def eda(text: str, alpha: float, rng: random.Random, synonyms: Synonyms = wordnet_synonyms) -> str:
    """One of synonym replacement, random insertion, random swap, random deletion, drawn uniformly."""
    choice = rng.randrange(4)
    if choice == 0:
        return synonym_replacement(text, alpha, rng, synonyms)
    if choice == 1:
        return random_insertion(text, alpha, rng, synonyms)
    if choice == 2:
        return random_swap(text, alpha, rng)
    return random_deletion(text, alpha, rng)


OPERATIONS: dict[str, Operation] = {
    "synonym_replacement": synonym_replacement,
    "random_insertion": random_insertion,
    "random_swap": random_swap,
    "random_deletion": random_deletion,
    "eda": eda,
}


# PDG's approximate text operations (eqs. 9-10); each alters N_w = floor(sigma * L) of the L words.


def n_altered(sigma: float, length: int) -> int:
    """PDG's eq. 10: N_w = floor(sigma * L), which is 0 for captions of fewer than 1 / sigma words."""
    return int(sigma * length + 1e-9)  # the epsilon keeps 0.2 * 15 = 2.9999... at 3


def single_deletion(text: str, sigma: float, rng: random.Random) -> str:
    """SDEL: delete the words at N_w distinct random positions."""
    tokens = tokenize(text)
    positions = _word_positions(tokens)
    n = n_altered(sigma, len(positions))
    if not n:
        return text
    return detokenize(_delete(tokens, set(rng.sample(positions, n))))


def continuous_deletion(text: str, sigma: float, rng: random.Random) -> str:
    """CDEL: delete N_w consecutive words, the span's first word drawn uniformly among the L - N_w + 1.

    Punctuation between two deleted words goes with them ("a red jacket, black trousers" minus
    "jacket, black" gives "a red trousers"); at the span's edges the separator rule applies.
    """
    tokens = tokenize(text)
    positions = _word_positions(tokens)
    n = n_altered(sigma, len(positions))
    if not n:
        return text
    start = rng.randrange(len(positions) - n + 1)
    return detokenize(_delete(tokens, set(range(positions[start], positions[start + n - 1] + 1))))


def synonym_substitution(
    text: str, sigma: float, rng: random.Random, synonyms: Synonyms = wordnet_synonyms
) -> str:
    """REPL: replace the words at N_w distinct random positions by a random synonym each.

    The positions are drawn among the words that have a synonym (non-stop words WordNet knows), all of
    them when there are fewer than N_w; other occurrences of a replaced word stay.
    """
    tokens = tokenize(text)
    positions = _word_positions(tokens)
    candidates = [
        i for i in positions if tokens[i].text.lower() not in STOP_WORDS and synonyms(tokens[i].text.lower())
    ]
    chosen = rng.sample(candidates, min(n_altered(sigma, len(positions)), len(candidates)))
    if not chosen:
        return text
    for i in chosen:
        synonym = rng.choice(synonyms(tokens[i].text.lower()))
        tokens[i] = tokens[i]._replace(text=_match_case(synonym, tokens[i].text))
    return detokenize(tokens)


APPROXIMATE_OPERATIONS: dict[str, Operation] = {
    "sdel": single_deletion,
    "cdel": continuous_deletion,
    "repl": synonym_substitution,
}
# the operations that look up synonyms (and so need WordNet)
USES_SYNONYMS = frozenset({"synonym_replacement", "random_insertion", "eda", "repl"})
