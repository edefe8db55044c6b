"""IRRA's identity (ID) loss: a linear classifier over the training identities on both towers' features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def id_loss(image_logits: Tensor, text_logits: Tensor, labels: Tensor) -> Tensor:
    """The mean of the two towers' cross-entropies: (CE(image_logits, y) + CE(text_logits, y)) / 2.

    ``image_logits``, ``text_logits``: [N, classes], the classifier applied to each sample's image and
    text features; ``labels``: [N], the class (training identity, 0..classes-1) of each sample.
    """
    return (F.cross_entropy(image_logits.float(), labels) + F.cross_entropy(text_logits.float(), labels)) / 2
