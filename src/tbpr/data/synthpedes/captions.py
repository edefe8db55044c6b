"""Captions from attributes: a small grammar with many sentence patterns, synonyms, orders and
omissions, plus optional attribute-word noise. Every attribute word is tracked with its span.

A caption is first built as a list of tokens: literal strings, :class:`Slot` (an attribute value in a
grammatical role), :class:`Art` (``a``/``an`` chosen from the next word) and :class:`Agree` (text that
depends on the number of a slot's value, e.g. ``is``/``are``). Noise replaces slot values; rendering
then resolves articles and agreement, so spans are exact and noisy captions stay mostly grammatical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from tbpr.data.synthpedes.vocabulary import FORMS, PLURAL, SHOE_NOUNS, VIEW_PHRASES

MIN_WORDS, MAX_WORDS = 15, 40


@dataclass(frozen=True)
class Slot:
    attribute: str
    value: str
    role: str
    form: int = 0

    def text(self) -> str:
        forms = FORMS[self.attribute][self.role][self.value]
        return forms[self.form % len(forms)]


@dataclass(frozen=True)
class Art:
    capital: bool = False


@dataclass(frozen=True)
class Agree:
    attribute: str
    singular: str
    plural: str


Token = str | Slot | Art | Agree


@dataclass(frozen=True)
class Mention:
    """One attribute word (or words) in a caption."""

    attribute: str
    value: str  # the value the words express (after noise)
    role: str
    words: str
    start: int
    end: int
    original: str | None = None  # set when noise replaced the true value ``original`` by ``value``

    def to_json(self) -> dict:
        return {
            "attribute": self.attribute,
            "value": self.value,
            "words": self.words,
            "role": self.role,
            "span": [self.start, self.end],
            "noise": None if self.original is None else {"original": self.original, "new": self.value},
        }


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens, as in CUHK-PEDES ``processed_tokens`` (punctuation dropped)."""
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())


class _Grammar:
    """Builds one caption's tokens for the attributes visible in one image."""

    def __init__(self, attrs: dict, visible: list[str], view: str, rng: np.random.Generator, boost: float):
        self.a, self.view, self.rng = attrs, view, rng
        self.boost = boost  # > 0 mentions more attributes, < 0 fewer (used to hit the length range)
        self.visible = set(visible)

    # -- helpers ----------------------------------------------------------------------------------
    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < min(1.0, max(0.0, p + self.boost)))

    def choice(self, options: list):
        return options[int(self.rng.integers(len(options)))]

    def slot(self, attribute: str, role: str, form: int | None = None) -> Slot:
        n = len(FORMS[attribute][role][self.a[attribute]])
        return Slot(attribute, self.a[attribute], role, int(self.rng.integers(n)) if form is None else form)

    def pron(self, role: str) -> Slot:
        return self.slot("gender", role)

    def mention(self, attribute: str, p: float) -> bool:
        return attribute in self.visible and self.chance(p)

    # -- noun phrases -----------------------------------------------------------------------------
    def upper_np(self) -> list[Token]:
        a = self.a
        colour = self.mention("upper_colour", 0.93)
        pattern = self.mention("upper_pattern", 0.2 if a["upper_pattern"] == "plain" else 0.75)
        sleeve = self.mention("sleeve", 0.45)
        colour_in, sleeve_adj, pattern_adj = self.chance(0.15), self.chance(0.5), self.chance(0.6)
        pre: list[Token] = [self.slot("sleeve", "adj")] if sleeve and sleeve_adj else []
        if colour and not colour_in:
            pre.insert(int(self.rng.integers(len(pre) + 1)), self.slot("upper_colour", "adj"))
        if pattern and pattern_adj:
            pre.append(self.slot("upper_pattern", "adj"))
        typed = not colour or self.chance(0.9)
        noun = self.slot("upper_type", "noun") if typed else self.choice(["top", "upper garment"])
        tokens: list[Token] = [Art(), *pre, noun]
        if colour and colour_in:
            tokens += ["in", self.slot("upper_colour", "adj")]
        post = [self.slot("upper_pattern", "pp")] if pattern and not pattern_adj else []
        if sleeve and not sleeve_adj:
            post.append(self.slot("sleeve", "pp"))
        for i, part in enumerate(post):
            tokens += ["and" if i else "with", part]
        return tokens

    def lower_parts(self) -> tuple[Slot | None, Slot]:
        colour = self.slot("lower_colour", "adj") if self.mention("lower_colour", 0.92) else None
        return colour, self.slot("lower_type", "noun")

    def lower_np(self) -> list[Token]:
        colour, noun = self.lower_parts()
        det = Agree("lower_type", "a", self.choice(["", "", "a pair of"]))
        if colour is None:
            return [det, noun]
        if self.chance(0.12):
            return [det, noun, "in", colour]
        return [det, colour, noun]

    def shoes_np(self) -> list[Token]:
        return [self.choice(["", "a pair of"]), self.slot("shoe_colour", "adj"), self.choice(SHOE_NOUNS)]

    def bag_np(self) -> list[Token]:
        if self.mention("bag_colour", 0.85):
            if self.chance(0.15):
                return [Art(), self.slot("bag", "noun"), "in", self.slot("bag_colour", "adj")]
            return [Art(), self.slot("bag_colour", "adj"), self.slot("bag", "noun")]
        return [self.slot("bag", "obj")]

    def hair_with(self) -> list[Token]:
        style, colour = self.mention("hair_style", 0.7), self.mention("hair_colour", 0.8)
        if style and colour and self.chance(0.5):
            return [self.slot("hair_colour", "adj"), "hair", self.slot("hair_style", "pred", form=0)]
        tokens: list[Token] = [self.slot("hair_style", "adj")] if style else []
        return tokens + ([self.slot("hair_colour", "adj")] if colour or not style else []) + ["hair"]

    # -- sentences --------------------------------------------------------------------------------
    def hair_sentence(self) -> list[Token]:
        if self.chance(0.5):
            return [self.pron("subj_cap"), self.choice(["has", "has got"]), *self.hair_with(), "."]
        style, colour = self.mention("hair_style", 0.75), self.mention("hair_colour", 0.75)
        if not style and not colour:
            colour = True
        tokens: list[Token] = [self.pron("poss_cap"), "hair is"]
        if colour:
            tokens.append(self.slot("hair_colour", "adj"))
        if style:
            tokens += (["and"] if colour else []) + [self.slot("hair_style", "pred")]
        return [*tokens, "."]

    def shoes_sentence(self) -> list[Token]:
        return self.choice(
            [
                lambda: [self.pron("subj_cap"), "is wearing", *self.shoes_np(), "."],
                lambda: [
                    self.pron("poss_cap"),
                    self.choice(["shoes are", "sneakers are"]),
                    self.slot("shoe_colour", "adj"),
                    ".",
                ],
                lambda: [self.pron("subj_cap"), "has", *self.shoes_np(), "on", "."],
            ]
        )()

    def bag_sentence(self) -> list[Token]:
        verb = self.choice(
            ["is carrying", "carries", "has", "is holding" if self.a["bag"] == "handbag" else "has"]
        )
        where: list[Token] = []
        if self.a["bag"] == "backpack" and self.chance(0.4):
            where = ["on", self.pron("poss"), "back"]
        elif self.a["bag"] == "shoulder bag" and self.chance(0.4):
            where = ["over", self.pron("poss"), "shoulder"]
        return [self.pron("subj_cap"), verb, *self.bag_np(), *where, "."]

    def accessories(self) -> list[list[Token]]:
        found = []
        for name in ("hat", "glasses", "scarf"):
            if self.mention(name, 0.75 if self.a[name] == "yes" else 0.04):
                found.append([self.slot(name, "obj")])
        return found

    def accessory_sentence(self, items: list[list[Token]]) -> list[Token]:
        tokens: list[Token] = [
            self.pron("subj_cap"),
            self.choice(["is wearing", "wears", "also wears", "has on"]),
        ]
        return [*tokens, *self.join(items), "."]

    @staticmethod
    def join(items: list[list[Token]]) -> list[Token]:
        out: list[Token] = []
        for i, item in enumerate(items):
            if i:
                out.append("and" if i == len(items) - 1 else ",")
            out += item
        return out

    def view_phrase(self) -> str:
        return self.choice(VIEW_PHRASES[self.view])

    def caption(self) -> list[Token]:
        a = self.a
        upper = self.upper_np() if self.chance(0.96) else []
        lower = self.lower_np() if not upper or self.chance(0.95) else []
        noun = self.pron("noun")
        hair_used = self.mention("hair_colour", 0.45) or self.mention("hair_style", 0.2)
        shoes = self.mention("shoe_colour", 0.5)
        bag = self.mention("bag", 0.75 if a["bag"] != "none" else 0.06)
        accessories = self.accessories()
        view = self.chance(0.35)
        clothes = self.join([part for part in (upper, lower) if part])
        if shoes and self.chance(0.4):
            clothes = self.join([part for part in (upper, lower, self.shoes_np()) if part])
            shoes = False
        pattern = int(self.rng.integers(10))
        if pattern == 0:
            head = [Art(True), noun, *([self.view_phrase()] if view else []), "wearing", *clothes]
            view = False
        elif pattern == 1:
            head = ["The", noun, self.choice(["is wearing", "wears", "is dressed in"]), *clothes]
        elif pattern == 2:
            head = ["This", noun, self.choice(["has on", "is wearing", "is in"]), *clothes]
        elif pattern == 3 and hair_used:
            head = [
                Art(True),
                noun,
                "with",
                *self.hair_with(),
                self.choice(["is wearing", "wears", "dressed in"]),
                *clothes,
            ]
            hair_used = False
        elif pattern == 4:
            verb = {"front": "is walking towards the camera", "back": "is walking away"}.get(
                self.view, "is walking"
            )
            head = [Art(True), noun, "in", *clothes, self.choice([verb, "is standing on the street"])]
        elif pattern == 5:
            head = ["The person is", Art(), noun, ".", self.pron("subj_cap"), "is wearing", *clothes]
        elif pattern == 6 and upper and lower:
            head = [Art(True), noun, "wearing", *upper, "."]
            colour, lower_noun = self.lower_parts()
            if colour is not None and self.chance(0.6):
                head += [self.pron("poss_cap"), lower_noun, Agree("lower_type", "is", "are"), colour]
            else:
                head += [self.pron("subj_cap"), "has on", *lower]
        elif pattern == 7 and bag:
            head = [Art(True), noun, "carrying", *self.bag_np(), "is wearing", *clothes]
            bag = False
        elif pattern == 8:
            look = ", the" if self.chance(0.5) else ", this"
            head = ["Wearing", *clothes, look, noun, "is", self.view_phrase() if view else "standing still"]
            view = False
        else:
            head = [
                Art(True),
                noun,
                self.choice(["dressed in", "who is wearing", "in"]),
                *self.join(
                    [part for part in (lower, upper) if part]
                    if self.chance(0.3)
                    else [p for p in (upper, lower) if p]
                ),
            ]
        if bag and self.chance(0.3):
            head += [",", self.choice(["carrying", "with"]), *self.bag_np()]
            bag = False
        sentences: list[list[Token]] = [[*head, "."]]
        if hair_used:
            sentences.append(self.hair_sentence())
        if shoes:
            sentences.append(self.shoes_sentence())
        if bag:
            sentences.append(self.bag_sentence())
        if accessories:
            sentences.append(self.accessory_sentence(accessories))
        if view:
            sentences.append([self.pron("subj_cap"), "is", self.view_phrase(), "."])
        tail = sentences[1:]
        order = self.rng.permutation(len(tail))
        return sentences[0] + [t for i in order for t in tail[int(i)]]


def _draw_noise(tokens: list[Token], p: float, rng: np.random.Generator) -> list[Token]:
    """Replace each slot's value by another value of the same attribute (and role) with probability p.

    Two numbers are drawn per slot whatever ``p`` is, so a caption's noise at a larger ``p`` keeps
    every replacement made at a smaller one (same seed)."""
    out: list[Token] = []
    for tok in tokens:
        if isinstance(tok, Slot):
            u, pick = rng.random(), int(rng.integers(1 << 30))
            if u < p:
                others = [v for v in FORMS[tok.attribute][tok.role] if v != tok.value]
                new = replace(tok, value=others[pick % len(others)])
                out.append(_NoisySlot(new, tok.value))
                continue
        out.append(tok)
    return out


@dataclass(frozen=True)
class _NoisySlot:
    slot: Slot
    original: str


def render(tokens: list[Token]) -> tuple[str, list[Mention]]:
    """The caption text and its attribute mentions (character spans) from tokens."""
    values = {}
    for tok in tokens:
        slot = tok.slot if isinstance(tok, _NoisySlot) else tok
        if isinstance(slot, Slot):
            values[slot.attribute] = slot.value
    words: list[str | Art | Slot | _NoisySlot] = []
    for tok in tokens:
        if isinstance(tok, Agree):
            plural = values.get(tok.attribute) in PLURAL[tok.attribute]
            text = tok.plural if plural else tok.singular
            words.append(Art() if text == "a" else text)
        else:
            words.append(tok)
    texts = [
        w.slot.text() if isinstance(w, _NoisySlot) else w.text() if isinstance(w, Slot) else w for w in words
    ]
    for i, w in enumerate(words):
        if isinstance(w, Art):
            following = next((t for t in texts[i + 1 :] if isinstance(t, str) and t.strip(" ,.")), "x")
            art = "an" if following[0].lower() in "aeiou" else "a"
            texts[i] = art.capitalize() if w.capital else art
    out, mentions = "", []
    for w, text in zip(words, texts):
        if not text:
            continue
        if out and text[0] not in ",.":
            out += " "
        start = len(out)
        out += text
        if isinstance(w, Slot | _NoisySlot):
            slot, original = (w.slot, w.original) if isinstance(w, _NoisySlot) else (w, None)
            mentions.append(Mention(slot.attribute, slot.value, slot.role, text, start, len(out), original))
    return out, mentions


def make_caption(
    attrs: dict,
    visible: list[str],
    view: str,
    rng: np.random.Generator,
    noise: float,
    noise_rng: np.random.Generator,
) -> tuple[str, list[Mention]]:
    """One caption of ``MIN_WORDS``..``MAX_WORDS`` words and its mentions (noised with probability ``noise``)."""
    boost = 0.0
    for _ in range(200):
        tokens = _Grammar(attrs, visible, view, rng, boost).caption()
        text, mentions = render(_draw_noise(tokens, noise, noise_rng))
        n = len(text.split())
        if MIN_WORDS <= n <= MAX_WORDS:
            return text, mentions
        boost += 0.1 if n < MIN_WORDS else -0.1
        boost = max(-0.5, min(0.5, boost))
    raise RuntimeError(f"no caption of {MIN_WORDS}-{MAX_WORDS} words for {attrs}")
