"""CoOp: learnable context vectors placed between the start token and the caption (Zhou et al. 2022)."""

from __future__ import annotations

import torch
from torch import nn

from tbpr.errors import ConfigError


class PromptContext(nn.Module):
    """``M`` learnable token embeddings, initialized from the embeddings of the words of ``init_ids``.

    The text tower then reads ``<SOT> [V]_1 .. [V]_M caption <EOT>``: ``make_room`` shifts the token ids
    right by ``M`` (the placeholders repeat the start token, so the end token stays the row's largest id
    for argmax pooling and the padding stays zero for the padding trim), and ``insert`` writes the
    vectors into those embedding slots.
    """

    def __init__(self, token_embedding: nn.Embedding, init_ids: list[int]):
        super().__init__()
        if not init_ids:
            raise ConfigError("model.coop_init is empty: give the words the context vectors start from")
        ids = torch.tensor(init_ids, device=token_embedding.weight.device)
        self.ctx = nn.Parameter(token_embedding.weight.detach()[ids].clone())

    @property
    def length(self) -> int:
        return self.ctx.shape[0]

    def make_room(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids with ``M`` placeholder columns after the start token, cut back to the same width.

        A caption that no longer fits loses its last words and keeps its end token in the last column,
        as the tokenizer truncates.
        """
        width = tokens.shape[1]
        m = self.length
        if m >= width - 1:
            raise ConfigError(f"{m} CoOp context vectors leave no room for the caption in {width} positions")
        placeholders = tokens[:, :1].expand(-1, m)
        out = torch.cat([tokens[:, :1], placeholders, tokens[:, 1:]], dim=1)[:, :width].clone()
        end = (tokens != 0).sum(dim=1) - 1
        cut = end + m >= width
        out[cut, -1] = tokens[cut, end[cut]]
        return out

    def insert(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, L, D]`` of ``make_room`` tokens with the placeholder slots replaced by the context."""
        ctx = self.ctx.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], ctx, x[:, 1 + self.length :]], dim=1)
