"""PDG's approximate-text constraint L_c (eq. 16), summed over the replaced rows as eq. 17 sums it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def approximate_constraint_loss(
    image: Tensor, text: Tensor, text_orig: Tensor, replaced: Tensor, min_sim: float = 0.05
) -> Tensor:
    """sum_j Phi_j max(0, s'_j / s_j - 1), s'_j = cos(I_j, T'_j) (the approximate text), s_j = cos(I_j, T_j).

    ``replaced`` [N] bool is Phi; rows where it is False contribute 0 whatever ``text_orig`` holds there.
    Non-positive or small denominators: with d_j = max(s_j, ``min_sim``), the term is
    max(0, s'_j - s_j) / d_j, which is eq. 16 wherever s_j >= min_sim (max(0, a/d - 1) = max(0, a - d)/d
    for d > 0); below it the ratio would flip the inequality (s_j <= 0) or explode (s_j near 0), so the
    hinge on the similarity difference is scaled by 1 / min_sim instead. Either way the term is 0 exactly
    when constraint (11), cos(I, T) >= cos(I, T'), holds.
    """
    if min_sim <= 0:
        raise ValueError(f"min_sim={min_sim}: must be > 0")
    image, text, text_orig = (F.normalize(x, dim=-1) for x in (image, text, text_orig))
    approx = (image * text).sum(dim=-1)
    orig = (image * text_orig).sum(dim=-1)
    terms = (approx - orig).clamp(min=0) / orig.clamp(min=min_sim)
    return torch.where(replaced.bool(), terms, torch.zeros_like(terms)).sum()
