"""Person filters: does a generated image hold one whole person? A filter is any callable
``image -> reason | None`` (``None``: keep), with a ``name`` recorded beside each image it judged.

SynTBPR keeps images where a pose detector finds exactly one person with face, arm and leg keypoints
visible. No pose detector weights exist here, so the default filter (``basic``) checks only what needs
none: the image is not empty, has a standing person's aspect ratio (portrait, height/width between
``min_aspect`` and ``max_aspect``), and is not a flat or nearly flat image (grey-level standard deviation at
least ``min_std``: blank, black or washed-out outputs fail). It does **not** check that there is a person,
or only one, or that the whole body is in view. For the SynthPedes renderer it always passes. Plug in a
detector by passing another callable to ``run_image_job``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tbpr.errors import ConfigError


@dataclass(frozen=True)
class BasicPersonFilter:
    """The default person filter (see the module docstring)."""

    min_aspect: float = 1.2
    max_aspect: float = 4.0
    min_std: float = 4.0
    name: str = "basic"

    def __call__(self, image) -> str | None:
        w, h = image.size
        if w == 0 or h == 0:
            return "filter: empty image"
        if not self.min_aspect <= h / w <= self.max_aspect:
            return (
                f"filter: aspect ratio {h / w:.2f} (height/width) outside {self.min_aspect}-{self.max_aspect}"
            )
        std = float(np.asarray(image.convert("L"), dtype=np.float32).std())
        if std < self.min_std:
            return f"filter: nearly uniform image (grey-level std {std:.1f} < {self.min_std})"
        return None


FILTERS = {"basic": BasicPersonFilter, "none": None}


def make_filter(name: str):
    """The person filter called ``name`` (``none``: keep every image, returns ``None``)."""
    if name not in FILTERS:
        raise ConfigError(f"person filter {name!r} is unknown; use one of {', '.join(FILTERS)}")
    factory = FILTERS[name]
    return factory() if factory else None
