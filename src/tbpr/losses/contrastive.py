"""Cross-modal contrastive objectives over cosine-similarity logits and person-id targets.

Every loss here takes raw (unnormalized) features: they are L2-normalized inside, so callers may
pass either. Rows of the image->text logits are images, rows of the text->image logits are texts;
the two batches may differ in size (e.g. local rows against all-gathered columns). Losses are
computed in at least float32 whatever the feature dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tbpr.losses.targets import identity_targets


def cosine_logits(row_feats: Tensor, col_feats: Tensor, logit_scale: Tensor | float) -> Tensor:
    """logit_scale * cos(row_i, col_j) as a (rows x cols) matrix in at least float32."""
    rows = F.normalize(row_feats, dim=-1)
    cols = F.normalize(col_feats, dim=-1)
    logits = logit_scale * (rows @ cols.t())
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """mean_i -sum_j t_ij log softmax(logits_i)_j: cross-entropy against a target distribution per row."""
    return -(targets.to(logits) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def kl_to_targets(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """mean_i KL(p_i || q_i) = mean_i sum_j p_ij (log p_ij - log(q_ij + eps)) with p = softmax(logits).

    ``eps`` keeps log(q) finite where q_ij = 0: such an entry costs p_ij * (log p_ij - log eps).
    """
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - torch.log(targets.to(logits) + eps))).sum(dim=1).mean()


def itc_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    image_pids: Tensor,
    text_pids: Tensor,
    logit_scale: Tensor | float,
) -> Tensor:
    """Symmetric InfoNCE with identity-aware soft targets: the MEAN of image->text and text->image.

    Each row's target spreads its mass evenly over all columns sharing its person id (as TBPS-CLIP);
    with unique ids this is exactly CLIP's (and IRRA's compute_itc) arange cross-entropy.
    """
    logits = cosine_logits(image_feats, text_feats, logit_scale)
    i2t = soft_cross_entropy(logits, identity_targets(image_pids, text_pids))
    t2i = soft_cross_entropy(logits.t(), identity_targets(text_pids, image_pids))
    return (i2t + t2i) / 2


def sdm_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    image_pids: Tensor,
    text_pids: Tensor,
    logit_scale: Tensor | float,
    eps: float = 1e-8,
) -> Tensor:
    """Similarity distribution matching (IRRA; MLLM4Text eqs. 5-7): the SUM L_i2t + L_t2i.

    L_i2t = mean_i KL(p_i || q_i) with p_i = softmax(logit_scale * cos(image_i, texts)) and q_i the
    identity targets of image i; L_t2i swaps the roles of images and texts.
    """
    logits = cosine_logits(image_feats, text_feats, logit_scale)
    i2t = kl_to_targets(logits, identity_targets(image_pids, text_pids), eps)
    t2i = kl_to_targets(logits.t(), identity_targets(text_pids, image_pids), eps)
    return i2t + t2i
