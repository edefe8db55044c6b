"""``diffusers``: the image-job backend (``tbpr.generate.images.backend``) over this package's samplers.

``generate``: batched text-to-image, requests grouped by size, steps, guidance and negative prompt, one
seeded generator per image. ``edit``: InstructPix2Pix on the request's ``instruction`` when the backend
has an ``edit_model`` and the request an instruction; otherwise null-text inversion of the source image
with ``source_prompt`` and a prompt-to-prompt edit to ``target_prompt`` (a word swap of the same token
count, or a refinement that adds words after the source prompt's). A request that cannot be served (a
size the UNet cannot take, an unreadable source, prompts prompt-to-prompt cannot align, out of memory) is
a ``Failed`` with the reason; a failing batch is retried one request at a time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import diffusers
import torch
from PIL import Image

from tbpr.errors import ConfigError
from tbpr.generate.images.backend import EditRequest, Failed, Generated, ImageRequest, Result
from tbpr.generate.images.diffusion.instruct import instruct_edit
from tbpr.generate.images.diffusion.inversion import NullTextSettings, null_text_inversion
from tbpr.generate.images.diffusion.loading import load_pipeline, weights_hash
from tbpr.generate.images.diffusion.p2p import prompt_to_prompt, token_alignment
from tbpr.generate.images.diffusion.sampling import latent_shape, text_to_image

log = logging.getLogger(__name__)

P2P_KEYS = ("cross_share", "self_share")  # EditRequest.inversion keys besides NullTextSettings' fields
P2P = "null-text inversion + prompt-to-prompt"


class DiffusersBackend:
    """``ImageGenerator`` on a Stable Diffusion-family ``model`` (hub name or pipeline folder)."""

    name = "diffusers"

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        edit_model: str | None = None,
        image_guidance: float = 1.5,
    ) -> None:
        if model is None:
            raise ConfigError("the diffusers backend needs --model: a hub name or a local pipeline folder")
        self.model = str(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.edit_model = None if edit_model is None else str(edit_model)
        self.image_guidance = image_guidance
        self.pipe = load_pipeline(self.model, "text2image", self.device)
        self.instruct = load_pipeline(self.edit_model, "instruct", self.device) if self.edit_model else None
        self._hash: str | None = None

    def provenance(self) -> dict[str, Any]:
        if self._hash is None:
            self._hash = weights_hash(self.pipe, *([self.instruct] if self.instruct else []))
        settings = {
            "device": self.device,
            "dtype": str(self.pipe.unet.dtype).removeprefix("torch."),
            "scheduler": "DDIM, eta 0",
            "edit_model": self.edit_model,
            "edit": f"instructpix2pix, {P2P} without an instruction" if self.instruct else P2P,
            "image_guidance": self.image_guidance if self.instruct else None,
            "diffusers": diffusers.__version__,
        }
        return {"model_hash": self._hash, "settings": settings}

    def generate(self, requests: list[ImageRequest]) -> list[Result]:
        def run(group: list[ImageRequest]) -> list[Result]:
            r = group[0]
            out = text_to_image(
                self.pipe,
                [q.prompt for q in group],
                [q.seed for q in group],
                r.steps,
                r.guidance,
                r.negative_prompt,
                r.height,
                r.width,
            )
            return [Generated(im, {}) for im in out.images]

        def key(r: ImageRequest):
            return (r.width, r.height, r.steps, r.guidance, r.negative_prompt)

        return _grouped(requests, key, run, lambda r: self._size_problem(r.height, r.width))

    def edit(self, requests: list[EditRequest]) -> list[Result]:
        """Instructed requests (``_instructed``) in InstructPix2Pix batches of one steps and guidance; the
        others one at a time by null-text inversion + prompt-to-prompt."""
        return _grouped(
            requests,
            lambda r: (r.steps, r.guidance) if self._instructed(r) else id(r),
            lambda group: (self._instruct if self._instructed(group[0]) else self._p2p)(group),
            lambda r: None if self._instructed(r) else self._p2p_problem(r),
        )

    def close(self) -> None:
        self.pipe = self.instruct = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _size_problem(self, height: int, width: int) -> str | None:
        try:
            latent_shape(self.pipe, height, width)
        except ValueError as err:
            return str(err)
        return None

    def _instructed(self, r: EditRequest) -> bool:
        """Whether ``r`` goes to the edit model: there is one and ``r`` has an instruction."""
        return self.instruct is not None and bool(r.instruction)

    def _instruct(self, group: list[EditRequest]) -> list[Result]:
        images = [_read(r.source) for r in group]
        out = instruct_edit(
            self.instruct,
            images,
            [r.instruction for r in group],
            [r.seed for r in group],
            group[0].steps,
            group[0].guidance,
            self.image_guidance,
        )
        return [
            Generated(im, {"method": "instructpix2pix", "image_guidance": self.image_guidance})
            for im in out.images
        ]

    def _p2p_problem(self, r: EditRequest) -> str | None:
        if not r.source_prompt or not r.target_prompt:
            return "prompt-to-prompt needs the source image's prompt and a target prompt"
        try:
            token_alignment(self.pipe, r.source_prompt, r.target_prompt)
        except ConfigError as err:
            hint = " (or give the backend an --edit-model for instruction editing)" if r.instruction else ""
            return f"{err}{hint}"
        unknown = set(r.inversion) - set(P2P_KEYS) - set(NullTextSettings.__dataclass_fields__)
        if unknown:
            return f"inversion settings {sorted(unknown)} unknown; use {sorted([*P2P_KEYS, *NullTextSettings.__dataclass_fields__])}"
        return None

    def _p2p(self, group: list[EditRequest]) -> list[Result]:
        (r,) = group
        image = _read(r.source)
        problem = self._size_problem(image.height, image.width)
        if problem:
            return [Failed(f"source image {r.source}: {problem}")]
        settings = NullTextSettings(**{k: v for k, v in r.inversion.items() if k not in P2P_KEYS})
        shares = {k: r.inversion[k] for k in P2P_KEYS if k in r.inversion}
        inv = null_text_inversion(self.pipe, image, r.source_prompt, r.steps, r.guidance, settings)
        out = prompt_to_prompt(
            self.pipe,
            r.source_prompt,
            r.target_prompt,
            latent=inv.latent,
            null_embeddings=inv.null_embeddings,
            seed=r.seed,
            steps=r.steps,
            guidance=r.guidance,
            **shares,
        )
        info = {
            "method": P2P,
            "inversion": {**vars(settings), "updates": inv.inner_steps_used, "final_loss": max(inv.losses)},
            "cross_share": shares.get("cross_share", 0.8),
            "self_share": shares.get("self_share", 0.4),
        }
        return [Generated(out.images[1], info)]


def _read(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _grouped(
    requests: Sequence,
    key: Callable[[Any], Any],
    run: Callable[[list], list[Result]],
    problem: Callable[[Any], str | None],
) -> list[Result]:
    """``run`` on the requests grouped by ``key``, in order; a request with a ``problem`` fails alone, and a
    group whose call raises is retried one request at a time (the error becomes that request's reason)."""
    results: list[Result | None] = [None] * len(requests)
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(requests):
        reason = problem(r)
        if reason:
            results[i] = Failed(reason)
        else:
            groups[key(r)].append(i)
    for members in groups.values():
        for i, result in zip(members, _run_or_fail(run, [requests[i] for i in members])):
            results[i] = result
    return results


def _run_or_fail(run: Callable[[list], list[Result]], requests: list) -> list[Result]:
    """``run(requests)``; if it raises, each request alone, and a lone request's error is its ``Failed``."""
    try:
        return run(requests)
    except (RuntimeError, OSError, ValueError) as err:  # CUDA out of memory is a RuntimeError
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(requests) == 1:
            return [
                Failed(
                    f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                )
            ]
        log.warning(
            "diffusers backend: a batch of %d failed (%s); retrying one at a time", len(requests), err
        )
        return [result for r in requests for result in _run_or_fail(run, [r])]
