"""Losses by name, so a recipe can say ``{"n_itc": 1.0, "r_itc": 1.0}`` and the trainer calls one function.

A training step hands every loss the same ``Views``: the (all-gathered) features of each view it
encoded once. Each registered ``LossSpec`` names the views it reads, so the trainer encodes a second
image or text view, or runs the SimCLR heads, only when a configured loss needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import Tensor

from tbpr.errors import ConfigError
from tbpr.losses.constraint import approximate_constraint_loss
from tbpr.losses.contrastive import c_itc_loss, itc_loss, r_itc_loss, sdm_loss, simclr_loss
from tbpr.losses.mlm import masked_token_loss


@dataclass
class LossParams:
    """Hyperparameters of the losses (TBPS-CLIP's public defaults)."""

    soft_label: float = 0.0  # alpha of the soft-label trick in every ITC-family loss (0: off)
    soft_label_ramp: bool = True  # ramp alpha linearly from 0 over the first epoch (as the public code)
    ss_tau: float = 0.1  # SimCLR temperature tau_s
    r_itc_eps: float = 1e-2
    c_itc_in_modal: float = 0.25
    c_itc_cross_modal: float = 0.25
    constraint_min_sim: float = 0.05  # L_c's denominator floor (tbpr.losses.constraint)

    def __post_init__(self) -> None:
        if not self.constraint_min_sim > 0:
            raise ConfigError(f"loss_params.constraint_min_sim={self.constraint_min_sim}: must be > 0")


@dataclass
class Views:
    """One step's features, each [N, D] over the whole (all-gathered) batch, rows paired by sample.

    ``image2``/``text2`` are a second augmented view; ``ss`` maps a view name ('image', 'image2',
    'text', 'text2') to its SimCLR projection. ``soft_label`` is the alpha in force at this step.
    ``mlm_logits`` [n, vocab] and ``mlm_labels`` [n] at the n masked positions of this process's captions
    feed the MLM loss. ``text_orig`` holds the original caption's features where ``replaced`` [N] (bool)
    says PDG's approximate text replaced it (other rows: zeros).
    """

    image: Tensor
    text: Tensor
    pids: Tensor
    logit_scale: Tensor | float
    image2: Tensor | None = None
    text2: Tensor | None = None
    ss: dict[str, Tensor] = field(default_factory=dict)
    soft_label: float = 0.0
    mlm_logits: Tensor | None = None
    mlm_labels: Tensor | None = None
    text_orig: Tensor | None = None
    replaced: Tensor | None = None


@dataclass(frozen=True)
class LossSpec:
    """A loss over ``Views``: ``fn(views, params)``; ``views`` it reads beyond image/text; SS heads it needs."""

    fn: Callable[[Views, LossParams], Tensor]
    extra_views: tuple[str, ...] = ()
    ss_heads: tuple[str, ...] = ()
    description: str = ""


def _itc_between(image_view: str, text_view: str, identity_aware: bool = True) -> Callable:
    def loss(v: Views, p: LossParams) -> Tensor:
        image, text = getattr(v, image_view), getattr(v, text_view)
        return itc_loss(image, text, v.pids, v.pids, v.logit_scale, v.soft_label, identity_aware)

    return loss


def _ss_over(*towers: str) -> Callable:
    def loss(v: Views, p: LossParams) -> Tensor:
        return sum(simclr_loss(v.ss[t], v.ss[f"{t}2"], p.ss_tau) for t in towers)

    return loss


LOSSES: dict[str, LossSpec] = {
    "itc": LossSpec(_itc_between("image", "text"), description="identity-aware ITC (= n_itc)"),
    "clip_itc": LossSpec(
        _itc_between("image", "text", identity_aware=False), description="CLIP's ITC: one-hot targets"
    ),
    "n_itc": LossSpec(_itc_between("image", "text"), description="TBPS-CLIP normalized ITC (eq. 1)"),
    "sdm": LossSpec(
        lambda v, p: sdm_loss(v.image, v.text, v.pids, v.pids, v.logit_scale), description="IRRA SDM"
    ),
    "r_itc": LossSpec(
        lambda v, p: r_itc_loss(v.image, v.text, v.pids, v.pids, v.logit_scale, p.r_itc_eps),
        description="reversed ITC (eq. 4)",
    ),
    "c_itc": LossSpec(
        lambda v, p: c_itc_loss(v.image, v.text, p.c_itc_in_modal, p.c_itc_cross_modal),
        description="cyclic ITC (eqs. 5-7)",
    ),
    "ss_i": LossSpec(_ss_over("image"), ("image2",), ("image",), "SimCLR on two image views"),
    "ss_t": LossSpec(_ss_over("text"), ("text2",), ("text",), "SimCLR on two text views"),
    "ss_it": LossSpec(_ss_over("image", "text"), ("image2", "text2"), ("image", "text"), "SS-I + SS-T"),
    "mvs_i": LossSpec(_itc_between("image2", "text"), ("image2",), description="N-ITC of (I~, T)"),
    "mvs_t": LossSpec(_itc_between("image", "text2"), ("text2",), description="N-ITC of (I, T~)"),
    "mvs_it": LossSpec(_itc_between("image2", "text2"), ("image2", "text2"), description="N-ITC of (I~, T~)"),
    "mlm": LossSpec(
        lambda v, p: masked_token_loss(v.mlm_logits, v.mlm_labels),
        ("mlm",),
        description="IRRA's cross-modal masked language modelling (needs masking.mode em or nam)",
    ),
    "approx_constraint": LossSpec(
        lambda v, p: approximate_constraint_loss(
            v.image, v.text, v.text_orig, v.replaced, p.constraint_min_sim
        ),
        ("text_orig",),
        description="PDG's L_c (eq. 16): approximate text scores below the original, summed over the batch",
    ),
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


def required_views(weights: Mapping[str, object]) -> set[str]:
    """The extra views ('image2', 'text2', 'mlm', 'text_orig') the configured losses read."""
    return {view for name in check_loss_weights(weights) for view in LOSSES[name].extra_views}


def required_ss_heads(weights: Mapping[str, object]) -> list[str]:
    """The SimCLR heads ('image', 'text') the configured losses need, in a fixed order."""
    needed = {tower for name in check_loss_weights(weights) for tower in LOSSES[name].ss_heads}
    return [tower for tower in ("image", "text") if tower in needed]


def compute_losses(
    weights: Mapping[str, object], views: Views, params: LossParams | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the named losses, and a log record of floats.

    The record holds each term unweighted (``name``) and weighted (``name_weighted``) and ``total``.
    Terms with weight 0 are skipped.
    """
    params = params or LossParams()
    total: Tensor | None = None
    record: dict[str, float] = {}
    for name, weight in check_loss_weights(weights).items():
        value = LOSSES[name].fn(views, params)
        weighted = weight * value
        total = weighted if total is None else total + weighted
        record[name] = float(value.detach())
        record[f"{name}_weighted"] = float(weighted.detach())
    record["total"] = float(total.detach())
    return total, record
