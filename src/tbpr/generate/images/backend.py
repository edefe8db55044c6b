"""What an image generator offers tbpr's image jobs, and the registry that opens one by name.

An ``ImageGenerator`` makes images from text (``generate``: a batch of ``ImageRequest``) and edits images
(``edit``: a batch of ``EditRequest``). Each request carries its own seed, so a result depends on the
request alone, not on the batch it came in. A result is a ``Generated`` image, or a ``Failed`` with a
reason (the job records it and asks again on the next round or rerun); one request's failure must not
fail the batch. ``provenance()`` says which model made the images, recorded with every image.

Backends: ``synthpedes`` (tbpr's procedural renderer, ``tbpr.generate.images.renderer``) and ``diffusers`` (Stable
Diffusion-family models, ``tbpr.generate.images.diffusion.backend``). A backend module
registers itself in ``BACKENDS`` by its import path; ``make_backend`` imports only the one asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tbpr.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ImageRequest:
    """One text-to-image request.

    ``person``: a structured description (``{"attributes": ..., "view": ..., "background": ...}``, see
    docs/image-generation.md) for backends that draw from structure rather than text; text backends
    ignore it. ``width`` and ``height`` are the wanted size in pixels.
    """

    prompt: str
    seed: int
    negative_prompt: str = ""
    width: int = 128
    height: int = 256
    steps: int = 50
    guidance: float = 7.5
    person: dict[str, Any] | None = None


@dataclass(frozen=True)
class EditRequest:
    """One edit of the image at ``source``: the same person under a changed condition.

    ``edit`` names the change structurally (``{"kind": "background", "value": "forest"}``); an
    instruction-editing model reads ``instruction``, prompt-to-prompt reads ``source_prompt`` and
    ``target_prompt``, and ``inversion`` holds the inversion settings (e.g. null-text steps). ``person``
    is the structured description the source was made from, when known (the renderer needs it).
    """

    source: Path
    edit: dict[str, Any]
    seed: int
    instruction: str | None = None
    source_prompt: str | None = None
    target_prompt: str | None = None
    steps: int = 50
    guidance: float = 7.5
    inversion: dict[str, Any] = field(default_factory=dict)
    person: dict[str, Any] | None = None


@dataclass(frozen=True)
class Generated:
    """An image a backend made; ``info``: backend-specific facts recorded with it (e.g. inversion loss)."""

    image: Image.Image
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """A request that gave no image, and why (e.g. "out of memory", "cannot read the source image")."""

    reason: str


Result = Generated | Failed


class ImageGenerator(Protocol):
    """A text-to-image and image-editing backend (see the module docstring)."""

    name: str  # the backend's registry name, recorded as the store record's ``backend``
    model: str  # the model's name (hub name, folder or renderer style), recorded as ``model``

    def provenance(self) -> dict[str, Any]:
        """``{"model_hash": ..., "settings": {...}}``: what identifies the weights and how they run."""
        ...

    def generate(self, requests: list[ImageRequest]) -> list[Result]: ...

    def edit(self, requests: list[EditRequest]) -> list[Result]: ...

    def close(self) -> None:
        """Release processes or device memory the backend holds (the job calls it once at the end)."""
        ...


# name -> "module:factory"; the factory is called as factory(model, **options) and raises ConfigError
# (one line, before any work) when the model cannot be found
BACKENDS: dict[str, str] = {
    "synthpedes": "tbpr.generate.images.renderer:RendererBackend",
    "diffusers": "tbpr.generate.images.diffusion.backend:DiffusersBackend",
}


def make_backend(name: str, model: str | None = None, **options: Any) -> ImageGenerator:
    """The backend ``name`` opened on ``model`` (``None``: the backend's default)."""
    if name not in BACKENDS:
        raise ConfigError(f"image backend {name!r} is unknown; use one of {', '.join(BACKENDS)}")
    module, _, factory = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), factory)(model, **options)
