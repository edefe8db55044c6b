"""Prompt-to-prompt word swap (Hertz et al., ICLR 2023) on the UNet's attention processors.

The source prompt and the edited prompt (one word swapped, the same token count) are sampled together from
the same starting latent. In the conditional half of the batch, the edited prompt's cross-attention maps are
replaced by the source's during the first ``cross_share`` of the steps, and its self-attention maps likewise
during the first ``self_share`` in layers of at most 16x16 positions (the paper's rule): the layout follows
the source, the swapped word changes what is drawn there. Defaults are the papers' typical settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from tbpr.errors import ConfigError
from tbpr.generate.images.diffusion.sampling import (
    Generated,
    decode,
    denoise,
    encode_prompts,
    initial_latents,
    token_count,
)

SELF_MAX_POSITIONS = 16 * 16


@dataclass
class AttentionSwap:
    """Which steps replace which maps; ``step`` is advanced by the sampling loop."""

    steps: int
    cross_share: float = 0.8
    self_share: float = 0.4
    guided: bool = True  # the batch is [unconditional, conditional]: edit the conditional half only
    step: int = 0

    def replaces(self, is_cross: bool, positions: int) -> bool:
        if is_cross:
            return self.step < self.cross_share * self.steps
        return positions <= SELF_MAX_POSITIONS and self.step < self.self_share * self.steps

    def apply(self, probs: torch.Tensor, heads: int, is_cross: bool) -> torch.Tensor:
        """Attention probabilities (batch * heads, queries, keys) with the source's copied onto the edits."""
        if not self.replaces(is_cross, probs.shape[1]):
            return probs
        probs = probs.reshape(-1, heads, *probs.shape[1:]).clone()
        half = probs.shape[0] // 2 if self.guided else 0
        probs[half + 1 :] = probs[half]  # the batch's first prompt of each half is the source
        return probs.flatten(0, 1)


class SwapAttnProcessor:
    """diffusers' plain attention computation with the probabilities passed through an ``AttentionSwap``."""

    def __init__(self, swap: AttentionSwap):
        self.swap = swap

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_like = hidden_states.ndim == 4
        if image_like:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        context = encoder_hidden_states if is_cross else hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], context.shape[0])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = self.swap.apply(attn.get_attention_scores(query, key, attention_mask), attn.heads, is_cross)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))
        if image_like:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def swapped_attention(unet, swap: AttentionSwap) -> Iterator[None]:
    """Route every attention layer of ``unet`` through ``swap``; the previous processors come back after."""
    previous = unet.attn_processors
    unet.set_attn_processor(SwapAttnProcessor(swap))
    try:
        yield
    finally:
        unet.set_attn_processor(previous)


def check_token_counts(pipe, source: str, edited: str) -> None:
    """ConfigError unless the two prompts have the same number of tokens (word swap maps token to token)."""
    n, m = token_count(pipe, source), token_count(pipe, edited)
    if n != m:
        raise ConfigError(
            f"prompt-to-prompt word swap needs prompts with equal token counts: source has {n} "
            f"({source!r}), edited has {m} ({edited!r}); choose a replacement word of the same token length"
        )


def word_swap(
    pipe,
    source: str,
    edited: str,
    latent: torch.Tensor | None = None,
    null_embeddings: list[torch.Tensor] | None = None,
    seed: int = 0,
    steps: int = 50,
    guidance: float = 7.5,
    cross_share: float = 0.8,
    self_share: float = 0.4,
    height: int = 512,
    width: int = 512,
) -> Generated:
    """Sample ``source`` and ``edited`` together: images [source, edited].

    Start from ``latent`` (x_K of a null-text inversion, with its ``null_embeddings``) or from ``seed``'s
    noise with the empty prompt as the unconditional embedding.
    """
    check_token_counts(pipe, source, edited)
    if latent is None:
        latent = initial_latents(pipe, [seed], height, width)
    uncond = null_embeddings if null_embeddings is not None else encode_prompts(pipe, [""])
    swap = AttentionSwap(steps, cross_share, self_share, guided=guidance != 1.0)

    def before_step(i: int) -> None:
        swap.step = i

    with swapped_attention(pipe.unet, swap):
        latents = denoise(
            pipe,
            latent.expand(2, -1, -1, -1),
            encode_prompts(pipe, [source, edited]),
            uncond,
            guidance,
            steps,
            before_step,
        )
    return Generated(decode(pipe, latents), latents, [seed, seed], steps, guidance)
