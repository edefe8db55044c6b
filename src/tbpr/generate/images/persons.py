"""SynTBPR's inter-class generation (``tbpr generate persons``): prompts built from attribute vocabularies,
each prompt a new identity, ``k`` images per prompt.

The vocabularies and templates are a YAML file (``person_vocabulary.yaml`` documents the format). Each
identity draws one value per slot, in the file's slot order, among the values whose ``requires`` hold for
the attributes drawn so far (the gender constraints), then a template, all from a generator seeded by
(job seed, identity index): the same seed gives the same identities on every machine and shard.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tbpr.errors import ConfigError
from tbpr.generate.images.backend import ImageRequest
from tbpr.generate.images.job import ImageWork

METHOD = "synthetic_person"
DEFAULT_VOCABULARY = Path(__file__).with_name("person_vocabulary.yaml")
SCENE_KEYS = (
    "view",
    "background",
    "posture",
    "weather",
    "picture_style",
)  # render keys that are not attributes
_DEFAULTS = {"bag": "none", "bag_colour": None, "hat": "no", "glasses": "no", "scarf": "no"}
_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\b([Aa])(?= [aeiou])")  # "a elderly" -> "an elderly"


@dataclass(frozen=True)
class PersonIdentity:
    """One sampled identity: the text of each slot, the prompt, and what the renderer draws for it."""

    index: int
    slots: dict[str, str]
    prompt: str
    template: int
    attributes: dict[str, str | None]  # SynthPedes attributes
    scene: dict[str, str]  # scene keys the vocabulary fixed (e.g. the view of the camera angle)

    @property
    def item_id(self) -> int:
        """The identity's stable store id: from its index and prompt (48 bits)."""
        digest = hashlib.sha256(f"person:{self.index}:{self.prompt}".encode()).digest()
        return int.from_bytes(digest[:6], "big")

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "slots": self.slots,
            "template": self.template,
            "attributes": self.attributes,
            "scene": self.scene,
        }


def load_vocabulary(path: str | Path | None = None) -> dict[str, Any]:
    """The vocabulary file at ``path`` (default: the shipped one), checked; ``ConfigError`` names the problem."""
    path = Path(path) if path else DEFAULT_VOCABULARY
    try:
        vocab = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"person vocabulary {path}: cannot be read ({err})") from None
    if not isinstance(vocab, dict) or not vocab.get("templates") or not vocab.get("slots"):
        raise ConfigError(f"person vocabulary {path}: needs 'templates' and 'slots' lists")
    for slot in vocab["slots"]:
        values = vocab.get(slot)
        if slot != "lower_adjective" and (not isinstance(values, list) or not values):
            raise ConfigError(f"person vocabulary {path}: slot {slot!r} has no list of values")
        for value in values or []:
            if not isinstance(value, dict) or not isinstance(value.get("text"), str):
                raise ConfigError(
                    f"person vocabulary {path}: slot {slot!r}: each value needs a 'text' ({value!r})"
                )
    for i, template in enumerate(vocab["templates"]):
        unknown = set(_SLOT.findall(template)) - set(vocab["slots"])
        if unknown:
            raise ConfigError(f"person vocabulary {path}: template {i} names unknown slots {sorted(unknown)}")
    return vocab


def _allowed(value: dict[str, Any], drawn: dict[str, Any]) -> bool:
    return all(drawn.get(name) in allowed for name, allowed in (value.get("requires") or {}).items())


def sample_identity(vocab: dict[str, Any], seed: int, index: int) -> PersonIdentity:
    """Identity ``index`` of the job seeded ``seed`` (see the module docstring)."""
    rng = np.random.default_rng([seed, index])
    drawn: dict[str, Any] = {}
    slots: dict[str, str] = {}
    lower: dict[str, Any] = {}
    for slot in vocab["slots"]:
        if slot == "lower_adjective":
            adjectives = lower.get("adjectives") or [""]
            slots[slot] = str(adjectives[int(rng.integers(len(adjectives)))])
            continue
        choices = [v for v in vocab[slot] if _allowed(v, drawn)]
        if not choices:
            raise ConfigError(
                f"person vocabulary: no value of slot {slot!r} fits {drawn} (check its 'requires')"
            )
        value = choices[int(rng.integers(len(choices)))]
        colours = value.get("colours") or vocab.get("colours") or [""]
        colour = str(colours[int(rng.integers(len(colours)))])
        slots[slot] = value["text"].replace("{colour}", colour)
        drawn.update(
            {
                k: (v.replace("{colour}", colour) if isinstance(v, str) else v)
                for k, v in (value.get("render") or {}).items()
            }
        )
        if slot == "lower":
            lower = value
    template = int(rng.integers(len(vocab["templates"])))
    prompt = _ARTICLE.sub(r"\1n", " ".join(vocab["templates"][template].format(**slots).split()))
    attributes = {**_DEFAULTS, **{k: v for k, v in drawn.items() if k not in SCENE_KEYS}}
    scene = {k: v for k, v in drawn.items() if k in SCENE_KEYS}
    return PersonIdentity(index, slots, prompt, template, attributes, scene)


def person_work(
    vocab: dict[str, Any],
    count: int,
    per_prompt: int,
    seed: int,
    negative_prompt: str = "",
    size: tuple[int, int] = (128, 256),
    steps: int = 50,
    guidance: float = 8.5,
) -> list[ImageWork]:
    """``per_prompt`` wanted images of each of ``count`` identities (SynTBPR: guidance 8.5, 5 per prompt)."""
    if count < 1 or per_prompt < 1:
        raise ConfigError(f"--count {count}, --per-prompt {per_prompt}: both must be >= 1")
    work = []
    for index in range(count):
        person = sample_identity(vocab, seed, index)
        for n in range(per_prompt):
            request = ImageRequest(
                person.prompt,
                seed=0,  # the job sets each try's seed
                negative_prompt=negative_prompt,
                width=size[0],
                height=size[1],
                steps=steps,
                guidance=guidance,
                person={"attributes": person.attributes, **person.scene},
            )
            work.append(ImageWork(person.item_id, n, person.prompt, request, {"identity": person.to_json()}))
    return work
