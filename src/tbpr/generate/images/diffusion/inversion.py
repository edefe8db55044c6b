"""DDIM inversion and null-text inversion (Mokady et al., CVPR 2023) of one image and its caption.

DDIM inversion runs the deterministic sampler backwards with the caption alone (guidance 1), giving the
latents x_0 .. x_K. Null-text inversion then walks from x_K down and, at each step, optimises the
unconditional ("null") embedding with Adam so that the guided step lands on the inverted latent of the next
step; sampling from x_K with those per-step embeddings and the same prompt reconstructs the image, and
prompt-to-prompt edits it. Defaults are the paper's: 10 inner steps, learning rate 1e-2 * (1 - i/100) at
step i, and an early stop once the loss is below 1e-5 + i * 2e-5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tbpr.generate.images.diffusion.sampling import encode_prompts, guided_noise


@dataclass(frozen=True)
class NullTextSettings:
    """Null-text optimisation: Adam steps per timestep, learning rate, and the early-stop loss."""

    inner_steps: int = 10
    lr: float = 1e-2
    lr_decay: float = 0.01  # the learning rate at step i is lr * (1 - lr_decay * i)
    early_stop: float = 1e-5
    early_stop_growth: float = 2e-5  # the early-stop threshold at step i is early_stop + i * growth


@dataclass
class Inversion:
    """What sampling needs to reproduce an image: its prompt, noise x_K and one null embedding per step."""

    prompt: str
    latent: torch.Tensor  # x_K, (1, C, h, w)
    null_embeddings: list[torch.Tensor]  # step i's unconditional embedding, (1, L, D), in sampling order
    steps: int
    guidance: float
    inner_steps_used: list[int] = field(default_factory=list)  # Adam updates made at each timestep
    losses: list[float] = field(default_factory=list)  # the last loss at each timestep


def image_to_latent(pipe, image) -> torch.Tensor:
    """The VAE latent (distribution mean, scaled) of a PIL image or an (H, W, 3) uint8 array: (1, C, h, w)."""
    pixels = torch.from_numpy(np.array(image.convert("RGB") if hasattr(image, "convert") else image))
    pixels = pixels.permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        dist = pipe.vae.encode(pixels.to(pipe.vae.device, pipe.vae.dtype)).latent_dist
    return dist.mean * pipe.vae.config.scaling_factor


def inverse_step(scheduler, eps: torch.Tensor, t: int, latents: torch.Tensor) -> torch.Tensor:
    """The DDIM step from the timestep before ``t`` up to ``t``: the exact inverse of ``scheduler.step``
    at ``t`` for the same noise prediction (same alphas, final one included)."""
    before = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alpha_before = scheduler.alphas_cumprod[before] if before >= 0 else scheduler.final_alpha_cumprod
    alpha_t = scheduler.alphas_cumprod[t]
    clean = (latents - (1 - alpha_before) ** 0.5 * eps) / alpha_before**0.5
    return alpha_t**0.5 * clean + (1 - alpha_t) ** 0.5 * eps


def ddim_invert(pipe, latent: torch.Tensor, prompt: str, steps: int) -> list[torch.Tensor]:
    """Latents x_0 (``latent``) .. x_K of DDIM inversion conditioned on ``prompt``: K + 1 tensors."""
    cond = encode_prompts(pipe, [prompt]).expand(len(latent), -1, -1)
    pipe.scheduler.set_timesteps(steps, device=latent.device)
    trajectory = [latent]
    with torch.no_grad():
        for t in reversed(pipe.scheduler.timesteps):
            eps = pipe.unet(trajectory[-1], t, encoder_hidden_states=cond).sample
            trajectory.append(inverse_step(pipe.scheduler, eps, int(t), trajectory[-1]))
    return trajectory


def null_text_inversion(
    pipe,
    image,
    prompt: str,
    steps: int = 50,
    guidance: float = 7.5,
    settings: NullTextSettings = NullTextSettings(),
) -> Inversion:
    """Invert ``image`` captioned ``prompt``: DDIM inversion, then per-step optimised null embeddings."""
    trajectory = ddim_invert(pipe, image_to_latent(pipe, image), prompt, steps)
    cond = encode_prompts(pipe, [prompt])
    null = encode_prompts(pipe, [""])
    result = Inversion(prompt, trajectory[-1], [], steps, guidance)
    latent = trajectory[-1]
    for i, t in enumerate(pipe.scheduler.timesteps):
        target = trajectory[-2 - i]
        with torch.no_grad():
            eps_cond = pipe.unet(latent, t, encoder_hidden_states=cond).sample
        null = null.detach().float().requires_grad_(True)  # optimised in fp32 even for an fp16 UNet
        optimizer = torch.optim.Adam([null], lr=settings.lr * (1 - settings.lr_decay * i))
        threshold = settings.early_stop + i * settings.early_stop_growth
        updates = 0
        while True:
            with torch.enable_grad():
                eps_uncond = pipe.unet(latent, t, encoder_hidden_states=null.to(cond.dtype)).sample
                eps = eps_uncond + guidance * (eps_cond - eps_uncond)
                loss = F.mse_loss(pipe.scheduler.step(eps, t, latent).prev_sample.float(), target.float())
            if loss.item() < threshold or updates == settings.inner_steps:
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            updates += 1
        null = null.detach().to(cond.dtype)
        result.null_embeddings.append(null)
        result.inner_steps_used.append(updates)
        result.losses.append(loss.item())
        with torch.no_grad():
            latent = pipe.scheduler.step(
                guided_noise(pipe, latent, t, cond, null, guidance), t, latent
            ).prev_sample
    return result
