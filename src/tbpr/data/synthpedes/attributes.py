"""The SynthPedes attribute vocabulary and the sampling of identities, including hard negatives.

An identity's attributes are a ``dict`` from attribute name to value (a string, or ``None`` for
``bag_colour`` when there is no bag). Rendering-only details that no caption mentions (skin tone,
hat and scarf colours) live in a separate ``looks`` dict copied unchanged to hard negatives, so a
hard negative differs from its source identity in exactly one attribute and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Garment palette: twelve colours chosen to stay distinguishable after lighting changes and JPEG.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (238, 238, 232),
    "grey": (132, 132, 136),
    "red": (205, 30, 35),
    "blue": (40, 105, 225),
    "green": (35, 150, 55),
    "yellow": (245, 215, 40),
    "orange": (250, 130, 20),
    "pink": (248, 150, 195),
    "purple": (125, 50, 170),
    "brown": (120, 72, 32),
    "navy": (22, 32, 95),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (22, 20, 20),
    "brown": (105, 62, 30),
    "blonde": (225, 190, 110),
    "grey": (165, 165, 165),
}
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (250, 218, 190),
    (235, 192, 160),
    (205, 155, 115),
    (160, 110, 75),
    (110, 75, 50),
)

VOCABULARY: dict[str, tuple[str | None, ...]] = {
    "gender": ("man", "woman"),
    "hair_style": ("short", "long", "ponytail", "bun"),
    "hair_colour": tuple(HAIR_COLOURS),
    "upper_type": ("t-shirt", "shirt", "jacket", "sweater", "hoodie"),
    "upper_colour": tuple(COLOURS),
    "upper_pattern": ("plain", "striped", "checked", "logo"),
    "sleeve": ("short", "long"),
    "lower_type": ("trousers", "jeans", "shorts", "skirt"),
    "lower_colour": tuple(COLOURS),
    "shoe_colour": tuple(COLOURS),
    "bag": ("none", "backpack", "handbag", "shoulder bag"),
    "bag_colour": (*COLOURS, None),
    "hat": ("no", "yes"),
    "glasses": ("no", "yes"),
    "scarf": ("no", "yes"),
}
ATTRIBUTES: tuple[str, ...] = tuple(VOCABULARY)
LONG_SLEEVE_ONLY = frozenset({"jacket", "sweater", "hoodie"})

# Which attribute a hard negative changes, weighted towards the ones visible in every view.
_HARD_NEGATIVE_WEIGHTS: dict[str, float] = {
    "upper_colour": 3,
    "lower_colour": 3,
    "shoe_colour": 1.5,
    "bag_colour": 1.5,
    "upper_type": 1.5,
    "lower_type": 1.5,
    "upper_pattern": 1.5,
    "hair_colour": 1,
    "hair_style": 1,
    "sleeve": 1,
    "bag": 1,
    "hat": 1,
    "glasses": 0.5,
    "scarf": 1,
    "gender": 0.5,
}


@dataclass
class Identity:
    """One person: id, split, attributes, rendering looks, and (for hard negatives) its source."""

    pid: int
    split: str
    attributes: dict[str, str | None]
    looks: dict[str, int]
    hard_negative_of: int | None = None
    differs_in: str | None = None


def is_valid(attrs: dict[str, str | None]) -> bool:
    """Whether a combination is one the sampler could produce."""
    if any(attrs[name] not in values for name, values in VOCABULARY.items()):
        return False
    if attrs["upper_type"] in LONG_SLEEVE_ONLY and attrs["sleeve"] != "long":
        return False
    if attrs["lower_type"] == "skirt" and attrs["gender"] != "woman":
        return False
    return (attrs["bag"] == "none") == (attrs["bag_colour"] is None)


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _uniform(rng: np.random.Generator, values: tuple[str, ...]) -> str:
    return values[int(rng.integers(len(values)))]


def sample_attributes(rng: np.random.Generator) -> dict[str, str | None]:
    """Draw one identity's attributes from the (realistic, mildly correlated) priors."""
    colours = tuple(COLOURS)
    woman = rng.random() < 0.5
    attrs: dict[str, str | None] = {"gender": "woman" if woman else "man"}
    attrs["hair_style"] = _pick(
        rng,
        {"short": 20, "long": 40, "ponytail": 25, "bun": 15}
        if woman
        else {"short": 80, "long": 10, "ponytail": 5, "bun": 5},
    )
    attrs["hair_colour"] = _pick(rng, {"black": 45, "brown": 30, "blonde": 15, "grey": 10})
    upper = _pick(rng, {"t-shirt": 30, "shirt": 20, "jacket": 20, "sweater": 15, "hoodie": 15})
    attrs["upper_type"] = upper
    attrs["upper_colour"] = _uniform(rng, colours)
    attrs["upper_pattern"] = _pick(rng, {"plain": 55, "striped": 15, "checked": 15, "logo": 15})
    short_share = {"t-shirt": 0.8, "shirt": 0.4}.get(upper, 0.0)
    attrs["sleeve"] = "short" if rng.random() < short_share else "long"
    lower = _pick(
        rng,
        {"trousers": 30, "jeans": 30, "shorts": 15, "skirt": 25}
        if woman
        else {"trousers": 45, "jeans": 35, "shorts": 20},
    )
    attrs["lower_type"] = lower
    denim = ("blue", "navy", "black", "grey")
    attrs["lower_colour"] = _uniform(rng, denim if lower == "jeans" and rng.random() < 0.6 else colours)
    attrs["shoe_colour"] = _uniform(
        rng, ("black", "white", "grey", "brown") if rng.random() < 0.6 else colours
    )
    attrs["bag"] = _pick(rng, {"none": 35, "backpack": 25, "handbag": 30 if woman else 5, "shoulder bag": 20})
    attrs["bag_colour"] = None if attrs["bag"] == "none" else _uniform(rng, colours)
    for name, share in (("hat", 0.15), ("glasses", 0.2), ("scarf", 0.12)):
        attrs[name] = "yes" if rng.random() < share else "no"
    return attrs


def sample_looks(rng: np.random.Generator) -> dict[str, int]:
    """Rendering details no caption mentions: indices into SKIN_TONES and COLOURS."""
    return {
        "skin": int(rng.integers(len(SKIN_TONES))),
        "hat_colour": int(rng.integers(len(COLOURS))),
        "scarf_colour": int(rng.integers(len(COLOURS))),
        "build": int(rng.integers(3)),  # 0 slim, 1 average, 2 broad
    }


def mutate_one(attrs: dict[str, str | None], rng: np.random.Generator) -> tuple[dict[str, str | None], str]:
    """A valid copy of ``attrs`` with exactly one attribute changed; returns it and that attribute."""
    while True:
        name = _pick(rng, _HARD_NEGATIVE_WEIGHTS)
        current = attrs[name]
        if name == "bag_colour" and current is None:
            continue
        choices = [v for v in VOCABULARY[name] if v != current and not (name == "bag_colour" and v is None)]
        if name == "bag":
            choices = [v for v in choices if v != "none"]
            if current == "none":
                continue
        new = dict(attrs)
        new[name] = choices[int(rng.integers(len(choices)))]
        if is_valid(new):
            return new, name


def differing_attributes(a: dict[str, str | None], b: dict[str, str | None]) -> list[str]:
    """The attribute names on which two identities differ."""
    return [name for name in ATTRIBUTES if a[name] != b[name]]


def sample_split_identities(
    split: str, n: int, first_pid: int, rng: np.random.Generator, seen: set[tuple], hard_share: float = 0.2
) -> list[Identity]:
    """``n`` distinct identities for one split; about ``hard_share`` of them are hard negatives of
    another identity of the same split. ``seen`` (attribute tuples already used) is updated."""
    n_hard = round(hard_share * n) if n >= 2 else 0
    n_hard = min(n_hard, n - n_hard)  # each hard negative needs its own source
    people: list[Identity] = []
    while len(people) < n - n_hard:
        attrs = sample_attributes(rng)
        key = tuple(attrs[a] for a in ATTRIBUTES)
        if key in seen:
            continue
        seen.add(key)
        people.append(Identity(0, split, attrs, sample_looks(rng)))
    source_of: dict[int, int] = {}  # index of a hard negative in ``people`` -> index of its source
    for src_index in rng.choice(len(people), size=n_hard, replace=False):
        source = people[int(src_index)]
        while True:
            attrs, changed = mutate_one(source.attributes, rng)
            key = tuple(attrs[a] for a in ATTRIBUTES)
            if key not in seen:
                break
        seen.add(key)
        source_of[len(people)] = int(src_index)
        people.append(Identity(0, split, attrs, dict(source.looks), differs_in=changed))
    for offset, index in enumerate(rng.permutation(len(people))):
        people[int(index)].pid = first_pid + offset
    for index, src_index in source_of.items():
        people[index].hard_negative_of = people[src_index].pid
    return sorted(people, key=lambda person: person.pid)
