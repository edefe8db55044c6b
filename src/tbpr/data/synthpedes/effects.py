"""Whole-image conditions drawn over a rendered SynthPedes image: weather and picture style (the renderer's
side of SynTBPR's intra-class edits; posture, view and background are scene fields instead)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

WEATHERS = ("clear", "rainy", "snowy", "foggy")
PICTURE_STYLES = ("photo", "painting", "cartoon")


def weather(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """``img`` with rain streaks, snow flakes or fog (``clear``: unchanged)."""
    if kind == "clear":
        return img
    if kind == "foggy":
        return Image.blend(img, Image.new("RGB", img.size, (205, 207, 212)), 0.45)
    w, h = img.size
    out = ImageEnhance.Brightness(img).enhance(0.82 if kind == "rainy" else 1.05)
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    if kind == "rainy":
        for _ in range(w * h // 200):
            x, y = float(rng.uniform(-10, w)), float(rng.uniform(-20, h))
            d.line([x, y, x + 4, y + 14], fill=(215, 220, 230, 150), width=1)
    else:  # snowy
        for _ in range(w * h // 150):
            x, y, r = float(rng.uniform(0, w)), float(rng.uniform(0, h)), float(rng.uniform(0.6, 1.8))
            d.ellipse([x - r, y - r, x + r, y + r], fill=(250, 250, 252, 230))
    out.paste(layer, (0, 0), layer)
    return out


def picture_style(img: Image.Image, kind: str) -> Image.Image:
    """``img`` as a painting (flattened brush regions), a cartoon (few colours, strong edges) or unchanged."""
    if kind == "painting":
        return img.filter(ImageFilter.ModeFilter(5)).filter(ImageFilter.SMOOTH_MORE)
    if kind == "cartoon":
        return ImageOps.posterize(img.filter(ImageFilter.SMOOTH), 3).filter(ImageFilter.EDGE_ENHANCE_MORE)
    return img
