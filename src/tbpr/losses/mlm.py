"""Masked language modelling loss: cross-entropy of the predicted vocabulary ids at the masked positions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

IGNORE = -100  # label of every position that was not masked


def masked_labels(labels: Tensor) -> Tensor:
    """The labels of the masked positions, [n], in the order the MLM head returns their logits."""
    return labels[labels != IGNORE]


def masked_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over positions whose label is not ``IGNORE``; 0 (with gradient) when none is.

    ``logits``: [..., vocab]; ``labels``: [...], the original token id at masked positions, else IGNORE.
    """
    chosen = labels != IGNORE
    if not chosen.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[chosen].float(), labels[chosen])
