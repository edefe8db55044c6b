"""Losses by name, so a recipe can say ``{"sdm": 1.0, "itc": 0.5}`` and the trainer calls one function.

Every registered loss has the signature
``loss(image_feats, text_feats, image_pids, text_pids, logit_scale) -> scalar Tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

from tbpr.errors import ConfigError
from tbpr.losses.contrastive import itc_loss, sdm_loss

LossFn = Callable[[Tensor, Tensor, Tensor, Tensor, "Tensor | float"], Tensor]

LOSSES: dict[str, LossFn] = {
    "itc": itc_loss,
    "sdm": sdm_loss,
}


def check_loss_weights(weights: Mapping[str, object]) -> dict[str, float]:
    """Validate a ``{name: weight}`` mapping; return it with float weights, zero weights dropped.

    Raises ConfigError for an empty mapping, an unknown name (listing the known ones), or a weight
    that is not a non-negative number.
    """
    if not weights:
        raise ConfigError(f"losses: no loss given; name at least one of: {', '.join(sorted(LOSSES))}")
    checked: dict[str, float] = {}
    for name, weight in weights.items():
        if name not in LOSSES:
            raise ConfigError(f"losses: unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
            raise ConfigError(f"losses.{name}: weight must be a number >= 0, got {weight!r}")
        if weight > 0:
            checked[name] = float(weight)
    if not checked:
        raise ConfigError("losses: every weight is 0; give at least one loss a positive weight")
    return checked


def compute_losses(
    weights: Mapping[str, object],
    image_feats: Tensor,
    text_feats: Tensor,
    image_pids: Tensor,
    text_pids: Tensor,
    logit_scale: Tensor | float,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the named losses, and a log record of floats.

    The record holds each term unweighted (``name``) and weighted (``name_weighted``) and ``total``.
    Terms with weight 0 are skipped.
    """
    total: Tensor | None = None
    record: dict[str, float] = {}
    for name, weight in check_loss_weights(weights).items():
        value = LOSSES[name](image_feats, text_feats, image_pids, text_pids, logit_scale)
        weighted = weight * value
        total = weighted if total is None else total + weighted
        record[name] = float(value.detach())
        record[f"{name}_weighted"] = float(weighted.detach())
    record["total"] = float(total.detach())
    return total, record
