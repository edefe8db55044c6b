"""PDG's feature-level mixup (eqs. 12-13) inside a tower: a forward hook on the tower's first block.

The rows to mix are extra rows of the tower's batch (placed at ``start``); the hook overwrites their
first-block output with lam * h_i + (1 - lam) * h_j, h_i and h_j being the same call's first-block
outputs of rows ``rows`` and ``partners``, and the remaining blocks run on the mixture. What the extra
rows hold on input only matters for what the tower reads besides the hidden states (the attention mask
and pooling position of a text row: ``mix_token_rows``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def mix_token_rows(tokens: Tensor, rows: Tensor, partners: Tensor, pad_id: int) -> Tensor:
    """The token row each mixed caption runs with: the longer caption of each pair (more non-padding tokens;
    the first on a tie). Its padding mask is the union of both (masks are prefixes) and its end token the
    later of the two, so a tower pooled at the end token (CLIP) or over the mask reads every position either
    caption holds, and one pooled at the first token reads position 0 as for any caption."""
    lengths = (tokens != pad_id).sum(dim=1)
    longer = torch.where(lengths[rows] >= lengths[partners], rows, partners)
    return tokens[longer]


@contextmanager
def mixed_after_first_block(
    blocks: nn.Module, start: int, rows: Tensor, partners: Tensor, lam: float
) -> Iterator[None]:
    """While active, the first block's output rows ``start .. start + len(rows)`` become
    ``lam * out[rows] + (1 - lam) * out[partners]`` (batch first; a block returning a tuple has its first
    element mixed)."""

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[0] < start + len(rows):
            raise RuntimeError(
                f"mixup: the first block's output {tuple(hidden.shape)} is not batch-first over "
                f"{start + len(rows)} rows"
            )
        mixed = lam * hidden[rows] + (1 - lam) * hidden[partners]
        where = torch.arange(start, start + len(rows), device=hidden.device)
        hidden = hidden.index_copy(0, where, mixed.to(hidden.dtype))
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = blocks[0].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
