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

from tbpr.losses.targets import identity_mask, identity_targets


def cosine_logits(row_feats: Tensor, col_feats: Tensor, logit_scale: Tensor | float) -> Tensor:
    """logit_scale * cos(row_i, col_j) as a (rows x cols) matrix in at least float32."""
    rows = F.normalize(row_feats, dim=-1)
    cols = F.normalize(col_feats, dim=-1)
    logits = logit_scale * (rows @ cols.t())
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def soft_cross_entropy(logits: Tensor, targets: Tensor, per_row: bool = False) -> Tensor:
    """mean_i -sum_j t_ij log softmax(logits_i)_j: cross-entropy against a target distribution per row
    (``per_row``: the vector over i, not its mean)."""
    rows = -(targets.to(logits) * F.log_softmax(logits, dim=1)).sum(dim=1)
    return rows if per_row else rows.mean()


def kl_to_targets(logits: Tensor, targets: Tensor, eps: float, per_row: bool = False) -> Tensor:
    """mean_i KL(p_i || q_i) = mean_i sum_j p_ij (log p_ij - log(q_ij + eps)) with p = softmax(logits).

    ``eps`` keeps log(q) finite where q_ij = 0: such an entry costs p_ij * (log p_ij - log eps).
    ``per_row``: the vector over i, not its mean.
    """
    log_p = F.log_softmax(logits, dim=1)
    rows = (log_p.exp() * (log_p - torch.log(targets.to(logits) + eps))).sum(dim=1)
    return rows if per_row else rows.mean()


def soft_label_targets(logits: Tensor, targets: Tensor, alpha: float) -> Tensor:
    """ALBEF/TBPS-CLIP soft labels: alpha * softmax(logits) (no gradient) + (1 - alpha) * targets."""
    if alpha == 0:
        return targets
    return alpha * F.softmax(logits.detach(), dim=1) + (1 - alpha) * targets.to(logits)


def instance_targets(rows: int, cols: int, device: torch.device | None = None) -> Tensor:
    """CLIP's one-hot targets: row i matches column i only, whatever the person ids."""
    return torch.eye(rows, cols, device=device)


def itc_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    image_pids: Tensor,
    text_pids: Tensor,
    logit_scale: Tensor | float,
    soft_label: float = 0.0,
    identity_aware: bool = True,
    per_sample: bool = False,
) -> Tensor:
    """Symmetric InfoNCE, the MEAN of image->text and text->image: TBPS-CLIP's N-ITC (eq. 1).

    Each row's target spreads its mass evenly over all columns sharing its person id (q-hat of eq. 1);
    with unique ids this is exactly CLIP's (and IRRA's compute_itc) arange cross-entropy, which
    ``identity_aware=False`` gives whatever the ids. ``soft_label`` = alpha mixes in the model's own
    detached similarity distribution (TBPS-CLIP's soft-label trick, see ``soft_label_targets``).
    ``per_sample`` (square batches, image i paired with text i): sample i's (i2t_i + t2i_i) / 2, whose mean
    is the loss.
    """
    logits = cosine_logits(image_feats, text_feats, logit_scale)
    if identity_aware:
        i2t_targets = identity_targets(image_pids, text_pids)
        t2i_targets = identity_targets(text_pids, image_pids)
    else:
        i2t_targets = instance_targets(*logits.shape, device=logits.device)
        t2i_targets = i2t_targets.t()
    i2t = soft_cross_entropy(logits, soft_label_targets(logits, i2t_targets, soft_label), per_sample)
    t2i = soft_cross_entropy(logits.t(), soft_label_targets(logits.t(), t2i_targets, soft_label), per_sample)
    return (i2t + t2i) / 2


def sdm_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    image_pids: Tensor,
    text_pids: Tensor,
    logit_scale: Tensor | float,
    eps: float = 1e-8,
    soft_label: float = 0.0,
    per_sample: bool = False,
) -> Tensor:
    """Similarity distribution matching (IRRA; MLLM4Text eqs. 5-7): the SUM L_i2t + L_t2i.

    L_i2t = mean_i KL(p_i || q_i) with p_i = softmax(logit_scale * cos(image_i, texts)) and q_i the
    identity targets of image i; L_t2i swaps the roles of images and texts. ``soft_label`` = alpha
    smooths q_i as N-ITC's soft labels do (``soft_label_targets``). ``per_sample`` (square batches, image
    i paired with text i): sample i's KL_i2t_i + KL_t2i_i, whose mean is the loss.
    """
    logits = cosine_logits(image_feats, text_feats, logit_scale)
    i2t_targets = soft_label_targets(logits, identity_targets(image_pids, text_pids), soft_label)
    t2i_targets = soft_label_targets(logits.t(), identity_targets(text_pids, image_pids), soft_label)
    return kl_to_targets(logits, i2t_targets, eps, per_sample) + kl_to_targets(
        logits.t(), t2i_targets, eps, per_sample
    )


def r_itc_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    image_pids: Tensor,
    text_pids: Tensor,
    logit_scale: Tensor | float,
    eps: float = 1e-2,
    per_sample: bool = False,
) -> Tensor:
    """TBPS-CLIP's reversed ITC (eq. 4): (KL(p_i2t || q + eps) + KL(p_t2i || q + eps)) / 2.

    The same divergences as SDM, averaged instead of summed, with the public code's eps = 1e-2.
    """
    return (
        sdm_loss(image_feats, text_feats, image_pids, text_pids, logit_scale, eps, per_sample=per_sample) / 2
    )


def c_itc_loss(
    image_feats: Tensor, text_feats: Tensor, in_modal: float = 0.25, cross_modal: float = 0.25
) -> Tensor:
    """TBPS-CLIP's cyclic ITC (eqs. 5-7, after CyCLIP) over paired rows (image i belongs with text i).

    in_modal * mean_ij (cos(I_i, I_j) - cos(T_i, T_j))^2 + cross_modal * mean_ij (cos(I_i, T_j) - cos(I_j, T_i))^2,
    averaged over the N^2 pairs and weighted 0.25 / 0.25 as the public code does (the paper's 1/N sum
    differs only by the constant factor N).
    """
    images = F.normalize(image_feats, dim=-1)
    texts = F.normalize(text_feats, dim=-1)
    images = images.to(torch.promote_types(images.dtype, torch.float32))
    texts = texts.to(images.dtype)
    in_gap = (images @ images.t() - texts @ texts.t()).square().mean()
    cross = images @ texts.t()
    cross_gap = (cross - cross.t()).square().mean()
    return in_modal * in_gap + cross_modal * cross_gap


def simclr_loss(view_a: Tensor, view_b: Tensor, tau: float = 0.1) -> Tensor:
    """NT-Xent (SimCLR; TBPS-CLIP's SS, eq. 3) between two views' projections, rows paired.

    Over the 2N embeddings z, -1/(2N) sum_i log exp(cos(z_i, z_pos(i))/tau) / sum_{k != i} exp(cos(z_i, z_k)/tau).
    """
    z = F.normalize(torch.cat([view_a, view_b]), dim=-1)
    z = z.to(torch.promote_types(z.dtype, torch.float32))
    n = view_a.shape[0]
    logits = (z @ z.t()) / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, positives)


def tal_per_sample(
    scores: Tensor, text_pids: Tensor, image_pids: Tensor, tau: float = 0.015, margin: float = 0.1
) -> Tensor:
    """RDE's Triplet Alignment Loss of each pair i over a cosine matrix ``scores`` [texts x images], i paired with i.

    For a query row r of S (texts) or of S^T (images): [m - sum_{j in pos} a_rj S_rj + tau log sum_{k in neg}
    exp(S_rk / tau)]_+, positives and negatives by person id, a_r = softmax over the positives of S_r / tau,
    detached (RDE's compute_TAL_per). Sample i's loss is its text row plus its image row; a row without
    negatives costs 0.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    return _tal_rows(scores, text_pids, image_pids, tau, margin) + _tal_rows(
        scores.t(), image_pids, text_pids, tau, margin
    )


def _tal_rows(scores: Tensor, row_pids: Tensor, col_pids: Tensor, tau: float, margin: float) -> Tensor:
    positive = identity_mask(row_pids, col_pids).bool()
    scaled = scores / tau
    alpha = F.softmax(scaled.masked_fill(~positive, float("-inf")), dim=1).detach()
    pulled = (alpha * scores).sum(dim=1)
    negatives = (~positive).any(dim=1)
    pushed = tau * torch.logsumexp(scaled.masked_fill(positive, float("-inf")), dim=1)
    pushed = torch.where(negatives, pushed, torch.zeros_like(pushed))  # no -inf (nor NaN gradient)
    return torch.where(negatives, (margin - pulled + pushed).clamp(min=0), torch.zeros_like(pulled))


def tal_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor,
    tau: float = 0.015,
    margin: float = 0.1,
    per_sample: bool = False,
) -> Tensor:
    """RDE's TAL over paired rows (image i with text i): the SUM over samples of ``tal_per_sample``, as RDE
    sums it (not a mean: its scale grows with the batch)."""
    scores = F.normalize(text_feats, dim=-1) @ F.normalize(image_feats, dim=-1).t()
    losses = tal_per_sample(scores, pids, pids, tau, margin)
    return losses if per_sample else losses.sum()


def hardness_infonce_loss(image_feats: Tensor, text_feats: Tensor, tau: float = 0.005) -> Tensor:
    """PDG's hardness-aware InfoNCE (eqs. 14, 15, 17): sum_j L_t2i(j) + L_i2t(j) over paired rows.

    L_t2i(j) = -log exp(cos(T_j, I_j) / tau) / sum_k exp(cos(T_j, I_k) / tau), L_i2t alike: instance-level
    (row j's only positive is column j, whatever the person ids) with a fixed, small temperature that
    concentrates the penalty on the hardest negatives. Eq. 17 SUMS over the N pairs (no 1/N): the loss
    and its gradient grow with the batch (see docs/towers.md for what this means for the learning rate).
    """
    logits = cosine_logits(image_feats, text_feats, 1.0 / tau)
    targets = torch.arange(logits.shape[0], device=logits.device)
    i2t = F.cross_entropy(logits, targets, reduction="sum")
    t2i = F.cross_entropy(logits.t(), targets, reduction="sum")
    return i2t + t2i


def cmpm_loss(
    image_feats: Tensor, text_feats: Tensor, image_pids: Tensor, text_pids: Tensor, eps: float = 1e-8
) -> Tensor:
    """Cross-modal projection matching (Zhang & Lu, ECCV 2018) as IRRA's ``compute_cmpm`` computes it.

    Image i projected on text j is x_i . z_j / |z_j| with x_i UNnormalized (no temperature); p_i is the
    softmax of row i, q_ij = y_ij / |y_i|_2 with y_ij = 1 for the same person (an L2, not a sum,
    normalization, as the public code); loss_i2t = mean_i sum_j p_ij (log p_ij - log(q_ij + eps)), and
    loss_t2i the same with texts projected on images. Returns loss_i2t + loss_t2i.
    """
    images = image_feats.to(torch.promote_types(image_feats.dtype, torch.float32))
    texts = text_feats.to(images.dtype)
    i2t_logits = images @ F.normalize(texts, dim=-1).t()
    t2i_logits = texts @ F.normalize(images, dim=-1).t()
    i2t = (image_pids.view(-1, 1) == text_pids.view(1, -1)).to(images.dtype)
    t2i = i2t.t()
    return kl_to_targets(i2t_logits, i2t / i2t.norm(dim=1, keepdim=True), eps) + kl_to_targets(
        t2i_logits, t2i / t2i.norm(dim=1, keepdim=True), eps
    )
