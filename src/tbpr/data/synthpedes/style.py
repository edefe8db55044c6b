"""Renderer styles: how a set of SynthPedes images looks (palette, proportions, backgrounds), so a generated
"synthetic" training set can differ from the SynthPedes test set the way real and generated photos differ.

A style changes how colours are drawn, not which colour an attribute names: a "red" jacket stays red,
slightly shifted in hue, saturation and brightness. ``synthpedes`` is the dataset's own look (the
identity: images are byte-identical to ``tbpr synth``'s); see docs/image-generation.md for the others.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, replace

import numpy as np

from tbpr.data.synthpedes.scene import BACKGROUNDS, Scene
from tbpr.errors import ConfigError

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Style:
    """Colour shifts of garments, hair and accessories, body proportions and the backgrounds drawn."""

    name: str
    hue_shift: float = 0.0  # degrees added to every garment, hair and accessory colour
    saturation: float = 1.0  # factor on their HSV saturation
    value: float = 1.0  # factor on their HSV value (brightness)
    width: float = 1.0  # factor on the body's half widths (shoulders, waist, hips, depth)
    height: float = 1.0  # factor on the person's height in the frame (capped to fit)
    backgrounds: tuple[str, ...] = BACKGROUNDS  # backgrounds drawn for this style's scenes

    def recolour(self, colour: RGB) -> RGB:
        """``colour`` drawn in this style."""
        if (self.hue_shift, self.saturation, self.value) == (0.0, 1.0, 1.0):
            return colour
        h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
        r, g, b = colorsys.hsv_to_rgb(
            (h + self.hue_shift / 360) % 1, min(s * self.saturation, 1.0), min(v * self.value, 1.0)
        )
        return (round(r * 255), round(g * 255), round(b * 255))

    def adjust(self, scene: Scene, rng: np.random.Generator) -> Scene:
        """``scene`` in this style: person height scaled (still inside the frame), background redrawn from
        this style's set when it is not in it. The default style returns ``scene`` unchanged."""
        changes: dict = {}
        if self.height != 1.0:
            height = min(scene.height * self.height, 0.96)
            changes.update(height=height, top=min(scene.top, 0.98 - height))
        if scene.background not in self.backgrounds:
            changes["background"] = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        return replace(scene, **changes) if changes else scene

    def to_json(self) -> dict:
        return asdict(self)


STYLES: dict[str, Style] = {
    "synthpedes": Style("synthpedes"),
    # paler, warmer clothes on broader, taller figures in front of plain walls and parks: the look of the
    # generated training sets in the SynTBPR experiments (docs/image-generation.md)
    "synthetic": Style(
        "synthetic",
        hue_shift=10.0,
        saturation=0.7,
        value=1.08,
        width=1.12,
        height=1.08,
        backgrounds=("plain", "park", "wall"),
    ),
    # saturated colours on slimmer figures in streets and shop fronts
    "vivid": Style(
        "vivid", hue_shift=-8.0, saturation=1.3, value=0.95, width=0.92, backgrounds=("street", "shopfront")
    ),
}
DEFAULT_STYLE = STYLES["synthpedes"]


def get_style(name: str) -> Style:
    """The style called ``name``; ``ConfigError`` naming the known ones otherwise."""
    if name not in STYLES:
        raise ConfigError(f"renderer style {name!r} is unknown; use one of {', '.join(STYLES)}")
    return STYLES[name]
