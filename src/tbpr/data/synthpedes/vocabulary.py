"""The words captions use for attribute values, per attribute and grammatical role.

``FORMS[attribute][role][value]`` lists synonyms; a caption picks one by index. Caption noise swaps a
value for another value *of the same attribute that has a form in the same role*, and keeps the
synonym index (modulo the number of synonyms), so the sentence stays grammatical where it can.
"""

from __future__ import annotations

COLOUR_WORDS: dict[str, list[str]] = {
    "black": ["black"],
    "white": ["white"],
    "grey": ["grey", "gray"],
    "red": ["red"],
    "blue": ["blue"],
    "green": ["green"],
    "yellow": ["yellow"],
    "orange": ["orange"],
    "pink": ["pink"],
    "purple": ["purple"],
    "brown": ["brown"],
    "navy": ["navy", "navy blue", "dark blue"],
}

FORMS: dict[str, dict[str, dict[str, list[str]]]] = {
    "gender": {
        "noun": {"man": ["man", "guy", "gentleman"], "woman": ["woman", "lady", "girl"]},
        "subj": {"man": ["he"], "woman": ["she"]},
        "subj_cap": {"man": ["He"], "woman": ["She"]},
        "poss": {"man": ["his"], "woman": ["her"]},
        "poss_cap": {"man": ["His"], "woman": ["Her"]},
    },
    "hair_style": {
        "adj": {"short": ["short"], "long": ["long"], "ponytail": ["tied-back"], "bun": ["tied-up"]},
        "pred": {
            "short": ["cut short", "short"],
            "long": ["worn long", "long"],
            "ponytail": ["in a ponytail", "tied in a ponytail"],
            "bun": ["in a bun", "tied up in a bun"],
        },
    },
    "hair_colour": {
        "adj": {
            "black": ["black", "dark"],
            "brown": ["brown"],
            "blonde": ["blonde", "blond"],
            "grey": ["grey", "gray", "silver"],
        }
    },
    "upper_type": {
        "noun": {
            "t-shirt": ["t-shirt", "tee"],
            "shirt": ["shirt", "button-up shirt"],
            "jacket": ["jacket", "coat"],
            "sweater": ["sweater", "jumper", "pullover"],
            "hoodie": ["hoodie", "hooded sweatshirt"],
        }
    },
    "upper_colour": {"adj": COLOUR_WORDS},
    "upper_pattern": {
        "adj": {
            "plain": ["plain", "solid"],
            "striped": ["striped"],
            "checked": ["checked", "plaid", "checkered"],
            "logo": ["logo", "graphic"],
        },
        "pp": {
            "plain": ["no pattern", "no print"],
            "striped": ["stripes", "horizontal stripes"],
            "checked": ["a checked pattern", "a plaid pattern"],
            "logo": ["a logo on the front", "a printed logo"],
        },
    },
    "sleeve": {
        "adj": {"short": ["short-sleeved", "short sleeve"], "long": ["long-sleeved", "long sleeve"]},
        "pp": {"short": ["short sleeves"], "long": ["long sleeves"]},
    },
    "lower_type": {
        "noun": {
            "trousers": ["trousers", "pants", "slacks"],
            "jeans": ["jeans", "denim jeans"],
            "shorts": ["shorts"],
            "skirt": ["skirt"],
        }
    },
    "lower_colour": {"adj": COLOUR_WORDS},
    "shoe_colour": {"adj": COLOUR_WORDS},
    "bag": {
        "noun": {
            "backpack": ["backpack", "rucksack"],
            "handbag": ["handbag", "purse"],
            "shoulder bag": ["shoulder bag", "messenger bag", "crossbody bag"],
        },
        "obj": {
            "none": ["no bag"],
            "backpack": ["a backpack", "a rucksack"],
            "handbag": ["a handbag", "a purse"],
            "shoulder bag": ["a shoulder bag", "a messenger bag"],
        },
    },
    "bag_colour": {"adj": COLOUR_WORDS},
    "hat": {"obj": {"yes": ["a hat", "a cap"], "no": ["no hat"]}},
    "glasses": {"obj": {"yes": ["glasses", "a pair of glasses", "spectacles"], "no": ["no glasses"]}},
    "scarf": {"obj": {"yes": ["a scarf"], "no": ["no scarf"]}},
}

PLURAL = {"lower_type": {"trousers", "jeans", "shorts"}}  # values taking plural agreement

VIEW_PHRASES: dict[str, list[str]] = {
    "front": ["facing the camera", "walking towards the camera", "coming towards the camera"],
    "back": ["walking away from the camera", "seen from behind", "facing away from the camera"],
    "left": ["walking to the left", "seen from the side", "walking past from right to left"],
    "right": ["walking to the right", "seen from the side", "walking past from left to right"],
}
SHOE_NOUNS = ["shoes", "sneakers", "shoes", "trainers"]
