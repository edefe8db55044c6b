"""The person a SynthPedes training image shows, with one garment colour swapped: what the renderer draws
for a PDG pair of a SynthPedes dataset.

A SynthPedes folder records, per image, the identity's attributes, the scene and, per caption, which words
name which attribute (``attributes.json``, docs/synthpedes.md); the rendering looks (skin tone, build, hat
and scarf colours) are not recorded but follow from the generator's size and seed, so they are drawn again
(``plan_identities``). An edit of a caption's colour becomes a change of the attribute whose words it
covers (``upper_colour``, ``lower_colour`` or ``shoe_colour``) to the palette colour the new colour names
in SynthPedes's own captions (``COLOUR_WORDS``: "navy blue" and "dark blue" are navy, "gray" is grey);
only those names are drawn as new colours (``RENDERABLE_NAMES``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tbpr.data.synthpedes.generation import GENERATOR_VERSION, SIZES, plan_identities
from tbpr.data.synthpedes.vocabulary import COLOUR_WORDS
from tbpr.errors import DataError
from tbpr.generate.images.pdg.colour_swap import ColourEdit

EDITABLE = ("upper_colour", "lower_colour", "shoe_colour")
RENDERABLE_NAMES = {word: colour for colour, words in COLOUR_WORDS.items() for word in words}  # -> palette


class SynthPedesTruth:
    """The ground truth of the SynthPedes dataset folder ``path``."""

    def __init__(self, path: str | Path):
        file = Path(path) / "attributes.json"
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            params, self.images = data["params"], data["images"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(
                f"{file}: no SynthPedes ground truth ({type(err).__name__}: {err}); the synthpedes backend "
                "re-renders SynthPedes datasets only (made by `tbpr synth`)"
            ) from None
        if params.get("generator_version") != GENERATOR_VERSION or params.get("size") not in SIZES:
            raise DataError(
                f"{file}: made by SynthPedes generator version {params.get('generator_version')} (size "
                f"{params.get('size')!r}); this tbpr renders version {GENERATOR_VERSION}: regenerate the dataset"
            )
        self.looks = {p.pid: p.looks for p in plan_identities(params["size"], params["seed"])}

    def person(self, image: str) -> dict[str, Any] | None:
        """The renderer's description of ``image`` (``attributes``, ``looks``, ``scene``); None if unknown."""
        entry = self.images.get(image)
        if entry is None:
            return None
        return {"attributes": entry["attributes"], "looks": self.looks[entry["id"]], "scene": entry["scene"]}

    def colour_change(self, image: str, caption: str, edit: ColourEdit) -> dict[str, str] | str:
        """``{attribute: palette colour}``: ``edit`` of ``caption`` of ``image`` as an attribute change, or
        why it is none."""
        entry = self.images.get(image)
        if entry is None:
            return f"{image} is not in the SynthPedes ground truth"
        mentions = next((c["mentions"] for c in entry["captions"] if c["text"] == caption), None)
        if mentions is None:
            return f"the caption is not one of {image}'s in the SynthPedes ground truth"
        attribute = next(
            (
                m["attribute"]
                for m in mentions
                if m["attribute"] in EDITABLE and m["span"][0] < edit.end and edit.start < m["span"][1]
            ),
            None,
        )
        if attribute is None:
            return f"the edited colour {edit.old!r} names none of {', '.join(EDITABLE)} in the ground truth"
        if edit.new not in RENDERABLE_NAMES:
            return f"the renderer's palette has no colour named {edit.new!r}"
        return {attribute: RENDERABLE_NAMES[edit.new]}
