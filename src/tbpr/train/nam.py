"""The model side of Noise-Aware Masking: each caption token's best cosine with its image's patches.

Inside the training forward the image tower runs once (its block-l output is captured by a hook) and
the masked captions run through the whole text tower for the loss. The unmasked captions run, without
gradient, only through text blocks 0..l: cheaper than batching them with the masked captions through
the whole tower, which would also carry them through every later block and the backward pass. Both
token sets go through the tower's final LayerNorm and projection before the cosine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tbpr.errors import ConfigError
from tbpr.models import DualEncoder
from tbpr.train.masking import nam_layer


def nam_layers(model: DualEncoder, layer: int | None) -> tuple[int, int]:
    """(image block, text block) NAM reads, checked against the towers (``masking.layer``)."""
    if model.prompt is not None or not model._trim_padding:
        raise ConfigError(
            "masking.mode=nam needs an open_clip CLIP text tower with a causal mask and model.tuning "
            f"'full' or 'clip-adapter' (got arch {model.config.arch}, tuning {model.config.tuning})"
        )
    return (
        nam_layer(layer, len(model.image_blocks), "image"),
        nam_layer(layer, len(model.text_blocks), "text"),
    )


def text_layer_tokens(model: DualEncoder, tokens: Tensor, layer: int) -> Tensor:
    """Text tokens after block ``layer`` (0-based), [B, length, width], length = longest caption."""
    clip = model.clip
    length = max(1, int((tokens != 0).sum(dim=1).max()))
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens[:, :length]).to(cast_dtype)
    x = x + clip.positional_embedding[:length].to(cast_dtype)
    mask = clip.attn_mask[:length, :length]
    for block in model.text_blocks[: layer + 1]:
        x = block(x, attn_mask=mask)
    return x


@torch.no_grad()
def max_patch_similarity(model: DualEncoder, image_tokens: Tensor, tokens: Tensor, text_layer: int) -> Tensor:
    """Each token's maximum cosine over its image's patches [B, context] (0 past the longest caption).

    ``image_tokens``: block output [B, 1 + patches, width] of the same image forward (class token dropped).
    """
    patches = F.normalize(model.project_image_tokens(image_tokens.detach()[:, 1:]), dim=-1)
    text = F.normalize(model.project_text_tokens(text_layer_tokens(model, tokens, text_layer)), dim=-1)
    best = torch.bmm(text, patches.transpose(1, 2).to(text.dtype)).amax(dim=-1)
    return F.pad(best.float(), (0, tokens.shape[1] - best.shape[1]))
