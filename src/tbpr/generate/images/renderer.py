"""The SynthPedes renderer as an image backend: structured person descriptions drawn procedurally.

No weights, runs anywhere, and every image's ground truth (attributes, scene) is known: it measures what
a perfect generator would give. The ``model`` is a renderer style (``tbpr.data.synthpedes.style``).

A request's ``person`` (``ImageRequest.person``) holds ``attributes`` (SynthPedes attributes, required)
and optionally ``looks``, ``scene`` (a full scene, as recorded), ``view``, ``background``, ``posture``,
``weather`` and ``picture_style``. What it leaves open is drawn from the request's seed. Every result's
``info`` holds the resolved ``looks``, ``scene``, ``weather`` and ``picture_style``: recorded with the
image, they let an edit redraw the same person with one thing changed (``EDIT_KINDS``), or with some of
its attributes changed (kind ``attributes``, value ``{"upper_colour": "red"}``: PDG's colour swap).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from tbpr.data.synthpedes.attributes import ATTRIBUTES, is_valid, sample_looks
from tbpr.data.synthpedes.effects import PICTURE_STYLES, WEATHERS, picture_style, weather
from tbpr.data.synthpedes.generation import GENERATOR_VERSION
from tbpr.data.synthpedes.render import render_image
from tbpr.data.synthpedes.scene import BACKGROUNDS, VIEWS, Scene, sample_scene
from tbpr.data.synthpedes.style import Style, get_style
from tbpr.errors import ConfigError
from tbpr.generate.images.backend import EditRequest, Failed, Generated, ImageRequest, Result

POSTURES: dict[str, dict[str, float]] = {  # scene fields of each posture
    "standing": {"arm_swing": 0.0, "stride": 0.0},
    "walking": {"arm_swing": 0.5, "stride": 0.6},
    "running": {"arm_swing": 1.0, "stride": 1.0},
}
EDIT_KINDS: dict[str, tuple[str, ...]] = {  # what an edit may change, and to which values
    "background": BACKGROUNDS,
    "view": VIEWS,
    "posture": tuple(POSTURES),
    "weather": WEATHERS,
    "picture_style": PICTURE_STYLES,
}


def draw_person(person: dict[str, Any], seed: int, style: Style) -> tuple[Image.Image, dict[str, Any]]:
    """The image of ``person`` (see the module docstring) and its resolved description; ``ValueError``
    says what in ``person`` cannot be drawn."""
    attrs = person.get("attributes")
    if not isinstance(attrs, dict) or not set(ATTRIBUTES) <= set(attrs) or not is_valid(attrs):
        raise ValueError(f"person attributes {attrs!r} are not a valid SynthPedes combination")
    rng = np.random.default_rng([seed, 7])
    looks = person.get("looks") or sample_looks(rng)
    if person.get("scene"):
        try:
            scene = Scene(**{**person["scene"], "tint": tuple(person["scene"]["tint"])})
        except (TypeError, KeyError) as err:
            raise ValueError(
                f"recorded scene {person['scene']!r} is not a SynthPedes scene ({err})"
            ) from None
    else:
        view = person.get("view") or VIEWS[int(rng.integers(len(VIEWS)))]
        scene = style.adjust(sample_scene(rng, _check("view", view)), rng)
    if person.get("view"):
        scene = replace(scene, view=_check("view", person["view"]))
    if person.get("background"):
        scene = replace(scene, background=_check("background", person["background"]))
    if person.get("posture"):
        scene = replace(scene, **POSTURES[_check("posture", person["posture"])])
    conditions = {
        "weather": _check("weather", person.get("weather") or "clear"),
        "picture_style": _check("picture_style", person.get("picture_style") or "photo"),
    }
    image = render_image(attrs, looks, scene, style)
    image = weather(image, conditions["weather"], np.random.default_rng([scene.noise_seed, 11]))
    image = picture_style(image, conditions["picture_style"])
    return image, {"looks": looks, "scene": scene.to_json(), **conditions}


def _check(kind: str, value: str) -> str:
    if value not in EDIT_KINDS[kind]:
        raise ValueError(
            f"{kind} {value!r} cannot be drawn; the renderer knows {', '.join(EDIT_KINDS[kind])}"
        )
    return value


def _render(job: tuple[dict[str, Any], int, Style, tuple[int, int]]) -> Result:
    person, seed, style, size = job
    try:
        image, info = draw_person(person, seed, style)
    except ValueError as err:
        return Failed(str(err))
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return Generated(image, info)


class RendererBackend:
    """``ImageGenerator`` over ``tbpr.data.synthpedes.render``; ``model`` is a renderer style name.

    ``workers`` > 1 renders a batch in that many processes (same images: each depends on its request).
    """

    name = "synthpedes"

    def __init__(self, model: str | None = None, workers: int = 1) -> None:
        self.style = get_style(model or "synthpedes")
        self.model = self.style.name
        if workers < 1:
            raise ConfigError(f"workers={workers}: give 1 or more render processes")
        self.workers = workers
        self._pool = None

    def provenance(self) -> dict[str, Any]:
        settings = {"style": self.style.to_json(), "generator_version": GENERATOR_VERSION}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        return {"model_hash": digest, "settings": settings}

    def generate(self, requests: list[ImageRequest]) -> list[Result]:
        return self._map(
            [
                Failed("the synthpedes renderer draws structured person descriptions; this request has none")
                if r.person is None
                else (r.person, r.seed, self.style, (r.width, r.height))
                for r in requests
            ]
        )

    def edit(self, requests: list[EditRequest]) -> list[Result]:
        """Redraw each source person (its recorded description) with the ``edit`` applied."""
        jobs: list = []
        for r in requests:
            kind, value = r.edit.get("kind"), r.edit.get("value")
            if kind not in EDIT_KINDS and not (kind == "attributes" and isinstance(value, dict)):
                kinds = ", ".join((*EDIT_KINDS, "attributes (a mapping)"))
                jobs.append(Failed(f"edit kind {kind!r}: the renderer edits {kinds}"))
            elif not r.person or "scene" not in r.person:
                jobs.append(Failed("the renderer edits only images it drew (no recorded person description)"))
            else:
                with Image.open(r.source) as source:
                    size = source.size
                if kind == "attributes":
                    person = {**r.person, "attributes": {**(r.person.get("attributes") or {}), **value}}
                else:
                    person = {**r.person, kind: value}
                jobs.append((person, r.seed, self.style, size))
        return self._map(jobs)

    def close(self) -> None:
        """Stop the render processes (started with the first batch of two or more images)."""
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def _map(self, jobs: list) -> list[Result]:
        """``_render`` of every job of ``jobs``; a ``Failed`` in it stays as it is."""
        todo = [j for j in jobs if not isinstance(j, Failed)]
        if self.workers == 1 or len(todo) < 2:
            done = [_render(job) for job in todo]
        else:
            if self._pool is None:
                self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
            done = self._pool.map(_render, todo)
        done.reverse()
        return [j if isinstance(j, Failed) else done.pop() for j in jobs]
