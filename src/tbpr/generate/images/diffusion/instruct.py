"""Instruction editing with InstructPix2Pix: one seeded generator per image, batched instructions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tbpr.generate.images.diffusion.sampling import Generated, decode


def instruct_edit(
    pipe,
    images: Sequence,
    instructions: Sequence[str],
    seeds: Sequence[int],
    steps: int = 20,
    guidance: float = 7.5,
    image_guidance: float = 1.5,
) -> Generated:
    """Edit PIL ``images[i]`` by ``instructions[i]`` with seed ``seeds[i]`` (text guidance ``guidance``,
    image guidance ``image_guidance``: higher keeps closer to the source image)."""
    if not len(images) == len(instructions) == len(seeds):
        raise ValueError(
            f"{len(images)} images, {len(instructions)} instructions and {len(seeds)} seeds: give one of each per edit"
        )
    out = pipe(
        prompt=list(instructions),
        image=list(images),
        num_inference_steps=steps,
        guidance_scale=guidance,
        image_guidance_scale=image_guidance,
        generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
        output_type="latent",
    )
    latents = out.images
    return Generated(decode(pipe, latents), latents, [int(s) for s in seeds], steps, guidance)
