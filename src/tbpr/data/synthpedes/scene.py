"""Per-image variation (view, pose, framing, background, occlusion, lighting, blur) and what it hides."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

VIEWS = ("front", "back", "left", "right")  # left/right: side view, walking towards that image side
BACKGROUNDS = ("street", "wall", "park", "plain", "shopfront")
OCCLUDERS = ("none", "low", "pole", "sign")  # low: a bench/kerb/car bonnet hiding the feet


@dataclass(frozen=True)
class Scene:
    """Every random choice of one image; rendering is a pure function of (identity, scene)."""

    view: str
    height: float  # person height as a share of the image height
    x_offset: float  # horizontal centre offset as a share of the image width
    top: float  # top of the head as a share of the image height
    arm_swing: float  # -1..1
    stride: float  # 0..1
    bag_side: int  # -1 or +1: image side of a handbag / shoulder bag (front view)
    background: str
    horizon: float
    bg_hue: int
    occluder: str
    occluder_pos: float
    brightness: float
    contrast: float
    tint: tuple[float, float, float]
    blur: float  # Gaussian blur radius in output pixels
    noise_seed: int

    def to_json(self) -> dict:
        return asdict(self)


def sample_views(rng: np.random.Generator, n: int) -> list[str]:
    """Views of one identity's ``n`` images: front, back and a side come first (shuffled)."""
    side = VIEWS[2 + int(rng.integers(2))]
    base = [VIEWS[0], VIEWS[1], side]
    base = [base[int(i)] for i in rng.permutation(3)]
    extra = [VIEWS[int(i)] for i in rng.choice(4, size=max(0, n - 3), p=[0.35, 0.3, 0.175, 0.175])]
    return (base + extra)[:n]


def sample_scene(rng: np.random.Generator, view: str) -> Scene:
    """Draw the per-image variation for a given view."""
    height = float(rng.uniform(0.74, 0.9))
    occluder = OCCLUDERS[int(rng.choice(4, p=[0.7, 0.14, 0.1, 0.06]))]
    return Scene(
        view=view,
        height=height,
        x_offset=float(rng.uniform(-0.1, 0.1)),
        top=float(rng.uniform(0.02, 0.98 - height)),
        arm_swing=float(rng.uniform(-1, 1)),
        stride=float(rng.uniform(0.2, 1.0)),
        bag_side=int(rng.choice((-1, 1))),
        background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        horizon=float(rng.uniform(0.45, 0.75)),
        bg_hue=int(rng.integers(360)),
        occluder=occluder,
        occluder_pos=float(rng.uniform(0, 1)),
        brightness=float(rng.uniform(0.72, 1.18)),
        contrast=float(rng.uniform(0.8, 1.1)),
        tint=tuple(float(t) for t in rng.uniform(0.93, 1.07, size=3)),
        blur=float(rng.choice([0.0, 0.0, rng.uniform(0.3, 1.2)])),
        noise_seed=int(rng.integers(2**31)),
    )


def visible_attributes(attrs: dict[str, str | None], scene: Scene) -> list[str]:
    """The attributes an annotator could describe from this image (captions mention only these)."""
    hidden: set[str] = set()
    if scene.view == "back":
        hidden.add("glasses")
        if attrs["upper_pattern"] == "logo":
            hidden.add("upper_pattern")  # the logo is printed on the front
    if scene.view in ("left", "right") and attrs["upper_pattern"] == "logo":
        hidden.add("upper_pattern")
    if scene.occluder == "low":
        hidden.add("shoe_colour")
    if attrs["bag"] == "none":
        hidden.add("bag_colour")
    return [name for name in attrs if name not in hidden]
