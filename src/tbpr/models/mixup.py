"""PDG's feature-level mixup (eqs. 12-13) inside a tower: its first block, while the tower runs.

The rows to mix are extra rows of the tower's batch (placed at ``start``, after the real rows); the
first block's output holds lam * h_i + (1 - lam) * h_j in their place, h_i and h_j being the same call's
first-block outputs of rows ``rows`` and ``partners``, and the remaining blocks run on the mixture.
What the extra rows hold on input only matters for what the tower reads besides the hidden states (the
attention mask and pooling position of a text row: ``mix_token_rows``).

The extra rows skip the first block's work: it runs on the real rows only (its batch-indexed arguments,
the hidden states and e.g. BERT's attention mask, cut to them) and the mixtures are appended to its
output. Its dropout draws still cover every row (``_DrawsForAllRows``), so each random mask, and every
later block's, is the one the full batch draws: a step's loss and gradients stay those of running the
extra rows through the block. A first block that mixes rows (BatchNorm in training mode: EfficientNet's
first stage) runs on every row instead, the extra rows' outputs overwritten, so its batch statistics
still count them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode


def mix_token_rows(tokens: Tensor, rows: Tensor, partners: Tensor, pad_id: int) -> Tensor:
    """The token row each mixed caption runs with: the longer caption of each pair (more non-padding tokens;
    the first on a tie). Its padding mask is the union of both (masks are prefixes) and its end token the
    later of the two, so a tower pooled at the end token (CLIP) or over the mask reads every position either
    caption holds, and one pooled at the first token reads position 0 as for any caption."""
    lengths = (tokens != pad_id).sum(dim=1)
    longer = torch.where(lengths[rows] >= lengths[partners], rows, partners)
    return tokens[longer]


def rows_independent(block: nn.Module) -> bool:
    """Whether each row of ``block``'s output depends on that row of its input only (no BatchNorm
    computing batch statistics), so the extra rows can skip it."""
    return not any(isinstance(m, _BatchNorm) and m.training for m in block.modules())


def _batched(value, rows: int, first: bool = False) -> bool:
    """A tensor indexed by the batch: the hidden states (``first``) or one of 3 or more dimensions (an
    attention mask [B, heads, L, L]; a causal mask [L, L] is shared by every row)."""
    return isinstance(value, Tensor) and (first or value.dim() >= 3) and value.shape[0] == rows


class _DrawsForAllRows(TorchFunctionMode):
    """Dropout (``F.dropout``, and inside ``F.scaled_dot_product_attention``) on the real rows, drawn as
    for all ``total`` rows: the input is padded with rows that are dropped afterwards, so the generator
    draws what the full batch's call draws, whatever its kernel."""

    def __init__(self, start: int, total: int):
        super().__init__()
        self.start, self.total = start, total

    def _pad(self, x: Tensor) -> Tensor:
        """``x`` with rows up to ``total``: a boolean mask's first row (a valid mask), else zeros."""
        shape = (self.total - self.start, *x.shape[1:])
        return torch.cat([x, x[:1].expand(shape) if x.dtype == torch.bool else x.new_zeros(shape)])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not (args and _batched(args[0], self.start, first=True)):
            return func(*args, **kwargs)
        if func is F.dropout:
            p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
            if (args[2] if len(args) > 2 else kwargs.get("training", True)) and p > 0:
                return func(self._pad(args[0]), p, True)[: self.start]
        attention = func is F.scaled_dot_product_attention
        if attention and (args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0)) > 0:
            # query, key, value and a per-row attention mask padded
            args = [self._pad(a) if _batched(a, self.start, first=i < 3) else a for i, a in enumerate(args)]
            kwargs = {k: self._pad(v) if _batched(v, self.start) else v for k, v in kwargs.items()}
            return func(*args, **kwargs)[: self.start]
        return func(*args, **kwargs)


@contextmanager
def mixed_after_first_block(
    blocks: nn.Module, start: int, rows: Tensor, partners: Tensor, lam: float
) -> Iterator[None]:
    """While active, the first block's output rows ``start .. start + len(rows)`` are
    ``lam * out[rows] + (1 - lam) * out[partners]`` of its output ``out`` (batch first; of a block returning
    a tuple, its first element)."""
    block, total = blocks[0], start + len(rows)
    run = block.forward
    skip = rows_independent(block)

    def forward(*args, **kwargs):
        hidden = args[0] if args else None
        if not _batched(hidden, total, first=True):
            raise RuntimeError(f"mixup: the first block's input is not batch-first over {total} rows")
        if skip:
            args = tuple(a[:start] if _batched(a, total, i == 0) else a for i, a in enumerate(args))
            kwargs = {k: v[:start] if _batched(v, total) else v for k, v in kwargs.items()}
            with _DrawsForAllRows(start, total):
                output = run(*args, **kwargs)
        else:
            output = run(*args, **kwargs)
        hidden = output[0] if isinstance(output, tuple) else output
        mixed = (lam * hidden[rows] + (1 - lam) * hidden[partners]).to(hidden.dtype)
        if skip:
            hidden = torch.cat([hidden, mixed])
        else:
            hidden = hidden.index_copy(0, torch.arange(start, total, device=hidden.device), mixed)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    block.forward = forward
    try:
        yield
    finally:
        del block.forward  # the class's forward again
