"""A recipe's losses over RDE's two embeddings, and co-teaching between them.

With ``model.tse`` every pair loss of the recipe (one that reads only the image and text features: no
second view, no head) is computed on the global embedding and again, with the same weight, on the TSE
embedding, and the two are added, as RDE trains TAL on BGE and on TSE. Losses that read more (ID, MLM,
SimCLR, ...) stay on the global embedding.

Co-teaching (Han et al., NeurIPS 2018) with the two embeddings as the two networks: in every batch each
embedding ranks the rows by its own per-sample loss (no gradient) and keeps the ``keep`` share with the
smallest; each embedding's loss is then computed on the rows the OTHER kept (``Views.weights``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
from torch import Tensor

from tbpr.losses.registry import LOSSES, LossParams, Views, check_loss_weights, compute_losses


def pair_losses(weights: Mapping[str, object]) -> dict[str, float]:
    """The losses of ``weights`` that read only the image and text features (they also train the TSE)."""
    return {
        name: w
        for name, w in check_loss_weights(weights).items()
        if not LOSSES[name].extra_views and not LOSSES[name].ss_heads
    }


def small_loss_rows(losses: Tensor, keep: float, rows: Tensor | None = None) -> Tensor:
    """0/1 [N]: the ceil(``keep`` * n) rows with the smallest ``losses`` among the n rows ``rows`` (0/1 [N];
    None: all) keeps; ties go to the lower index."""
    candidates = torch.ones_like(losses, dtype=torch.bool) if rows is None else rows.to(losses.device) > 0
    n = int(candidates.sum())
    chosen = torch.zeros_like(losses, dtype=torch.float32)
    if n == 0:
        return chosen
    masked = losses.detach().float().masked_fill(~candidates, float("inf"))
    order = torch.sort(masked, stable=True).indices[: math.ceil(keep * n)]
    return chosen.index_fill(0, order, 1.0)


@torch.no_grad()
def per_sample(weights: Mapping[str, float], views: Views, params: LossParams) -> Tensor:
    """Each row's weighted sum of the per-sample forms of ``weights`` (no gradient)."""
    return sum(w * LOSSES[name].per_sample(views, params).float() for name, w in weights.items())


def compute_two_embeddings(
    weights: Mapping[str, object],
    views: Views,
    tse: Views | None,
    params: LossParams | None = None,
    keep: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``compute_losses`` on the global ``views`` plus (when ``tse`` is given) the pair losses on the TSE
    ``tse`` views; the record adds ``tse_NAME``, ``tse_NAME_weighted`` and ``tse_total``, and ``total`` is
    the sum. ``keep`` (with ``tse``): co-teaching, each embedding trained on the other's small-loss rows."""
    params = params or LossParams()
    if tse is None:
        return compute_losses(weights, views, params)
    pairs = pair_losses(weights)
    if keep is not None:
        kept_by_global = small_loss_rows(per_sample(pairs, views, params), keep, views.weights)
        kept_by_tse = small_loss_rows(per_sample(pairs, tse, params), keep, tse.weights)
        views = dataclasses.replace(views, weights=kept_by_tse)
        tse = dataclasses.replace(tse, weights=kept_by_global)
    total, record = compute_losses(weights, views, params)
    tse_total, tse_record = compute_losses(pairs, tse, params)
    record.update({f"tse_{key}": value for key, value in tse_record.items()})
    record["total"] = float((total + tse_total).detach())
    return total + tse_total, record
