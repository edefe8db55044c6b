"""Batched text-to-image with one seeded generator per image, and the DDIM loop every sampler shares.

Image ``i`` starts from noise drawn by ``torch.Generator("cpu").manual_seed(seeds[i])``, so its result does
not depend on the batch it ran in or on the device (up to floating-point rounding), and its seed is its
provenance. ``denoise`` accepts one unconditional embedding per step (null-text inversion's) and a hook
called before each step (prompt-to-prompt's step counter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Generated:
    """Images (PIL) with the latents they were decoded from and the settings that made them."""

    images: list
    latents: torch.Tensor
    seeds: list[int]
    steps: int
    guidance: float


def encode_prompts(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder hidden states of ``prompts`` padded to the tokenizer's length: (B, L, D)."""
    tokens = pipe.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        return pipe.text_encoder(tokens.input_ids.to(pipe.text_encoder.device))[0]


def token_count(pipe, prompt: str) -> int:
    """Tokens of ``prompt`` with its start and end tokens, before padding or truncation."""
    return len(pipe.tokenizer(prompt).input_ids)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    """(channels, h, w) of the latent of a ``height`` x ``width`` image; ValueError for sizes the UNet
    cannot take."""
    factor = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    if height % factor or width % factor:
        raise ValueError(f"image size {height}x{width}: height and width must be multiples of {factor}")
    return pipe.unet.config.out_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def initial_latents(pipe, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
    """Starting noise, one CPU generator per seed, on the UNet's device and dtype."""
    shape = latent_shape(pipe, height, width)
    noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
    latents = torch.stack(noise) * pipe.scheduler.init_noise_sigma
    return latents.to(pipe.unet.device, pipe.unet.dtype)


def guided_noise(pipe, latents, t, cond, uncond, guidance: float) -> torch.Tensor:
    """The UNet's classifier-free guided noise prediction (the conditional one alone at guidance 1)."""
    if guidance == 1.0:
        return pipe.unet(latents, t, encoder_hidden_states=cond).sample
    both = pipe.unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    eps_uncond, eps_cond = both.chunk(2)
    return eps_uncond + guidance * (eps_cond - eps_uncond)


def denoise(
    pipe,
    latents: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | Sequence[torch.Tensor],
    guidance: float,
    steps: int,
    before_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run ``steps`` DDIM steps (eta 0) from ``latents``; ``uncond`` is one embedding batch or one per step."""
    pipe.scheduler.set_timesteps(steps, device=latents.device)
    with torch.no_grad():
        for i, t in enumerate(pipe.scheduler.timesteps):
            if before_step is not None:
                before_step(i)
            null = uncond[i] if isinstance(uncond, (list, tuple)) else uncond
            eps = guided_noise(pipe, latents, t, cond, null.expand_as(cond), guidance)
            latents = pipe.scheduler.step(eps, t, latents).prev_sample
    return latents


def decode(pipe, latents: torch.Tensor) -> list:
    """PIL images of ``latents``."""
    with torch.no_grad():
        pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def text_to_image(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 50,
    guidance: float = 7.5,
    negative_prompt: str = "",
    height: int = 512,
    width: int = 512,
) -> Generated:
    """One image per prompt, all in one batch; image ``i`` is seeded by ``seeds[i]``."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    cond = encode_prompts(pipe, prompts)
    uncond = encode_prompts(pipe, [negative_prompt] * len(prompts))
    latents = denoise(pipe, initial_latents(pipe, seeds, height, width), cond, uncond, guidance, steps)
    return Generated(decode(pipe, latents), latents, [int(s) for s in seeds], steps, guidance)
