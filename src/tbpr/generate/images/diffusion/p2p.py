"""Prompt-to-prompt (Hertz et al., ICLR 2023) on the UNet's attention processors: word swap and refinement.

The source prompt and the edited prompt are sampled together from the same starting latent. In the
conditional half of the batch, the edited prompt's cross-attention maps are replaced by the source's during
the first ``cross_share`` of the steps, and its self-attention maps likewise during the first
``self_share`` in layers of at most 16x16 positions (the paper's rule): the layout follows the source.
Word swap: equal token counts, token j takes the source's token j map (the swapped word changes what is
drawn there). Refinement: the edited prompt adds tokens after all of the source's words ("..., in a park");
the shared tokens take the source's maps, the added ones keep their own. Defaults are the papers'.
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
    alignment: tuple[torch.Tensor, torch.Tensor] | None = None  # refinement's (mapper, keep); None: swap
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
        if is_cross and self.alignment is not None:  # edited token j reads source column mapper[j]
            mapper, keep = (t.to(probs.device) for t in self.alignment)
            probs[half + 1 :] = torch.where(keep, probs[half + 1 :], probs[half][..., mapper])
        else:
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


def token_alignment(pipe, source: str, edited: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """None for a word swap (equal token counts); for a refinement (the edited prompt's tokens start with
    all of the source's words) the column ``mapper`` into the source's maps and the ``keep`` mask of added
    tokens; ConfigError for any other pair."""
    src, dst = (pipe.tokenizer(p).input_ids[:-1] for p in (source, edited))  # without the end token
    if len(src) == len(dst):
        return None
    if len(dst) > len(src) and dst[: len(src)] == src:
        n, added = len(src), len(dst) - len(src)
        positions = torch.arange(pipe.tokenizer.model_max_length)
        keep = (positions >= n) & (positions < n + added)
        mapper = torch.where(positions < n, positions, (positions - added).clamp(min=n))
        return mapper, keep
    raise ConfigError(
        f"prompt-to-prompt needs equal token counts (word swap) or an edited prompt that adds words after "
        f"the source's (refinement): source has {token_count(pipe, source)} ({source!r}), edited has "
        f"{token_count(pipe, edited)} ({edited!r}); swap one word for one of the same token length"
    )


def prompt_to_prompt(
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
    alignment = token_alignment(pipe, source, edited)
    if latent is None:
        latent = initial_latents(pipe, [seed], height, width)
    uncond = null_embeddings if null_embeddings is not None else encode_prompts(pipe, [""])
    swap = AttentionSwap(steps, cross_share, self_share, guided=guidance != 1.0, alignment=alignment)

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
