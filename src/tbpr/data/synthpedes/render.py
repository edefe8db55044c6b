"""Rendering one SynthPedes image: background, person, occluder, lighting, blur (2x supersampled)."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from tbpr.data.synthpedes.figure import HEADS_TALL, FigurePainter, shade
from tbpr.data.synthpedes.scene import Scene
from tbpr.data.synthpedes.style import DEFAULT_STYLE, Style

WIDTH, HEIGHT = 128, 256  # output image size (CUHK-PEDES-like aspect ratio)
SUPERSAMPLE = 2


def _muted(hue: int, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue % 360) / 360, sat, val)
    return (round(r * 255), round(g * 255), round(b * 255))


def draw_background(scene: Scene, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A muted textured backdrop (street, brick wall, park, plain or shop front) with a ground plane."""
    w, h = size
    horizon = round(scene.horizon * h)
    upper = _muted(scene.bg_hue, float(rng.uniform(0.08, 0.3)), float(rng.uniform(0.45, 0.85)))
    ground = _muted(scene.bg_hue + 30, float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.35, 0.7)))
    if scene.background == "park":
        ground = _muted(int(rng.integers(80, 130)), 0.35, float(rng.uniform(0.35, 0.6)))
    img = Image.new("RGB", size, upper)
    d = ImageDraw.Draw(img)
    d.rectangle([0, horizon, w, h], fill=ground)
    line = shade(ground, 0.85)
    if scene.background in ("street", "shopfront", "plain"):
        y, step = horizon + 6, 6.0
        while y < h:  # paving joints, spaced wider towards the camera
            d.line([0, y, w, y], fill=line, width=2)
            y += step
            step *= 1.35
    if scene.background == "wall":
        brick = shade(upper, 0.8)
        for row, y in enumerate(range(0, horizon, 18)):
            d.line([0, y, w, y], fill=brick, width=2)
            for x in range(-36 + (row % 2) * 18, w, 36):
                d.line([x, y, x, y + 18], fill=brick, width=2)
    elif scene.background == "street":
        glass, frame = shade(upper, float(rng.uniform(0.5, 0.75))), shade(upper, 1.2)
        win_w, win_h, gap = int(rng.integers(34, 60)), int(rng.integers(40, 70)), int(rng.integers(20, 40))
        for y in range(int(rng.integers(5, 30)), horizon - win_h - 10, win_h + gap):  # rows of windows
            for x in range(int(rng.integers(-win_w, 0)), w, win_w + gap):
                d.rectangle([x, y, x + win_w, y + win_h], fill=glass, outline=frame, width=4)
                d.line([x + win_w // 2, y, x + win_w // 2, y + win_h], fill=frame, width=3)
    elif scene.background == "park":
        for _ in range(int(rng.integers(3, 7))):
            x, y, r = int(rng.integers(-30, w)), int(rng.integers(0, horizon)), int(rng.integers(25, 60))
            d.ellipse(
                [x - r, y - r, x + r, y + r],
                fill=_muted(int(rng.integers(90, 140)), 0.45, float(rng.uniform(0.3, 0.55))),
            )
    elif scene.background == "shopfront":
        panel = shade(upper, 0.7)
        for x in range(int(rng.integers(0, 40)), w, int(rng.integers(50, 90))):
            d.rectangle([x, 0, x + 10, horizon], fill=panel)
        d.rectangle([0, horizon - 30, w, horizon], fill=shade(upper, 1.15))
    blotches = rng.normal(0, 9, size=(h // 16, w // 16)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(blotches, "F").resize(size, Image.Resampling.BICUBIC))
    grain = 3 * rng.standard_normal(size=(h, w, 1), dtype=np.float32)
    arr = np.asarray(img, dtype=np.float32) + blotches[..., None] + grain
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _shade_person(layer: Image.Image, from_left: bool) -> Image.Image:
    """Light the figure from one side: a horizontal brightness ramp over its pixels."""
    box = layer.getbbox()
    if box is None:
        return layer
    arr = np.asarray(layer.crop(box), dtype=np.float32).copy()
    ramp = np.linspace(1.1, 0.86, arr.shape[1], dtype=np.float32)
    if not from_left:
        ramp = ramp[::-1]
    arr[..., :3] *= ramp[None, :, None]
    layer.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA"), box[:2])
    return layer


def _draw_occluder(
    img: Image.Image, scene: Scene, cx: float, top: float, unit: float, rng: np.random.Generator
) -> None:
    d = ImageDraw.Draw(img)
    w, h = img.size
    colour = _muted(int(rng.integers(360)), float(rng.uniform(0.05, 0.4)), float(rng.uniform(0.25, 0.6)))
    if scene.occluder == "low":  # bench / kerb / car bonnet: hides the feet, not the knees
        y = top + (6.1 + 0.7 * scene.occluder_pos) * unit
        d.rectangle([0, y, w, h], fill=colour)
        d.rectangle([0, y, w, y + 0.25 * unit], fill=shade(colour, 1.25))
        for k in range(1, 4):
            d.line([0, y + k * 0.5 * unit, w, y + k * 0.5 * unit], fill=shade(colour, 0.8), width=2)
    elif scene.occluder == "pole":
        side = 1 if scene.occluder_pos > 0.5 else -1
        x = cx + side * (0.6 + 0.6 * abs(scene.occluder_pos - 0.5) * 2) * unit
        half = (0.12 + 0.1 * scene.occluder_pos) * unit
        d.rectangle([x - half, 0, x + half, h], fill=colour)
        d.rectangle([x - half * 0.5, 0, x - half * 0.2, h], fill=shade(colour, 1.3))
    elif scene.occluder == "sign":
        side = -scene.bag_side
        inner = cx + side * 0.8 * unit
        y0 = top + (1.8 + scene.occluder_pos) * unit
        box = [inner, y0, w, y0 + 2.2 * unit] if side > 0 else [0, y0, inner, y0 + 2.2 * unit]
        d.rectangle(box, fill=colour, outline=shade(colour, 0.6), width=3)


def render_image(attrs: dict, looks: dict, scene: Scene, style: Style = DEFAULT_STYLE) -> Image.Image:
    """The final ``WIDTH`` x ``HEIGHT`` RGB image of one identity in one scene (deterministic), drawn in
    ``style``'s palette and proportions (its backgrounds are chosen with the scene: ``Style.adjust``)."""
    rng = np.random.default_rng(scene.noise_seed)
    size = (WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE)
    img = draw_background(scene, rng, size)
    unit = scene.height * size[1] / (HEADS_TALL + 0.2)
    top = scene.top * size[1]
    cx = size[0] / 2 + scene.x_offset * size[0]
    feet = top + 7.35 * unit
    pad = 12
    x0, y0 = round(cx - 1.3 * unit) - pad, round(feet - 0.25 * unit) - pad
    shadow = Image.new("L", (round(2.6 * unit) + 2 * pad, round(0.5 * unit) + 2 * pad), 0)
    ImageDraw.Draw(shadow).ellipse([pad, pad, shadow.width - pad, shadow.height - pad], fill=90)
    img.paste(
        (0, 0, 0), (x0, y0, x0 + shadow.width, y0 + shadow.height), shadow.filter(ImageFilter.GaussianBlur(6))
    )
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    mirrored = scene.view == "right"
    FigurePainter(layer, attrs, looks, scene, size[0] - cx if mirrored else cx, top, unit, style).paint()
    if mirrored:
        layer = ImageOps.mirror(layer)
    layer = _shade_person(layer, from_left=scene.noise_seed % 2 == 0)
    img.paste(layer, (0, 0), layer)
    _draw_occluder(img, scene, cx, top, unit, rng)
    img = img.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32)
    arr = ((arr - 128.0) * scene.contrast + 128.0) * scene.brightness * np.asarray(scene.tint, np.float32)
    arr += rng.normal(0, 2.5, size=arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    if scene.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(scene.blur))
    return img
