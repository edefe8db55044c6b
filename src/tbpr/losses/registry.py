"""Losses by name, so a recipe can say ``{"n_itc": 1.0, "r_itc": 1.0}`` and the trainer calls one function.

A training step hands every loss the same ``Views``: the (all-gathered) features of each view it
encoded once. Each registered ``LossSpec`` names the views it reads, so the trainer encodes a second
image or text view, or runs the SimCLR heads, only when a configured loss needs them. A loss with a
``per_sample`` form also gives each pair's own loss: clean-sample division (``tbpr.train.noise``) fits
its mixture to them, and ``Views.weights`` drops the pairs it judged noisy from the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tbpr.errors import ConfigError
from tbpr.losses.constraint import approximate_constraint_loss
from tbpr.losses.contrastive import (
    c_itc_loss,
    cmpm_loss,
    hardness_infonce_loss,
    itc_loss,
    r_itc_loss,
    sdm_loss,
    simclr_loss,
    tal_loss,
)
from tbpr.losses.identity import id_loss
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
    tal_tau: float = 0.015  # RDE's TAL temperature
    tal_margin: float = 0.1  # RDE's TAL margin
    infonce_tau: float = 0.005  # PDG's fixed temperature of hardness-aware InfoNCE (not the model's)
    constraint_min_sim: float = 0.05  # L_c's denominator floor (tbpr.losses.constraint)

    def __post_init__(self) -> None:
        if not self.infonce_tau > 0:
            raise ConfigError(f"loss_params.infonce_tau={self.infonce_tau}: expected a temperature > 0")
        if not self.constraint_min_sim > 0:
            raise ConfigError(f"loss_params.constraint_min_sim={self.constraint_min_sim}: must be > 0")


@dataclass
class Views:
    """One step's features, each [N, D] over the whole (all-gathered) batch, rows paired by sample.

    ``image2``/``text2`` are a second augmented view; ``ss`` maps a view name ('image', 'image2',
    'text', 'text2') to its SimCLR projection. ``soft_label`` is the alpha in force at this step.
    ``mlm_logits`` [n, vocab] and ``mlm_labels`` [n] at the n masked positions of this process's captions
    feed the MLM loss. ``id_logits`` ('image', 'text': [B, classes]) and ``id_labels`` [B] are the ID
    classifier's outputs and the training-identity classes of this process's samples (the ID loss).
    ``weights`` [N] (0/1 per row; None: all 1) keeps only the rows a clean-sample division judged clean
    in the losses (their per-sample form).
    ``text_orig`` holds the original caption's features where ``replaced`` [N] (bool) says PDG's
    approximate text replaced it (other rows: zeros).
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
    id_logits: dict[str, Tensor] = field(default_factory=dict)
    id_labels: Tensor | None = None
    weights: Tensor | None = None
    text_orig: Tensor | None = None
    replaced: Tensor | None = None


@dataclass(frozen=True)
class LossSpec:
    """A loss over ``Views``: ``fn(views, params)``; ``views`` it reads beyond image/text; SS heads it needs.

    ``per_sample(views, params)`` [N], when given, is each pair's loss; ``fn`` is its mean, or its sum when
    ``summed``. ``soft_targets``: the loss reads ``LossParams.soft_label``.
    """

    fn: Callable[[Views, LossParams], Tensor]
    extra_views: tuple[str, ...] = ()
    ss_heads: tuple[str, ...] = ()
    description: str = ""
    per_sample: Callable[[Views, LossParams], Tensor] | None = None
    summed: bool = False
    soft_targets: bool = False


def _itc_between(
    image_view: str, text_view: str, identity_aware: bool = True, per_sample: bool = False
) -> Callable:
    def loss(v: Views, p: LossParams) -> Tensor:
        image, text = getattr(v, image_view), getattr(v, text_view)
        return itc_loss(image, text, v.pids, v.pids, v.logit_scale, v.soft_label, identity_aware, per_sample)

    return loss


def _sdm(per_sample: bool) -> Callable:
    return lambda v, p: sdm_loss(
        v.image, v.text, v.pids, v.pids, v.logit_scale, soft_label=v.soft_label, per_sample=per_sample
    )


def _tal(per_sample: bool) -> Callable:
    return lambda v, p: tal_loss(v.image, v.text, v.pids, p.tal_tau, p.tal_margin, per_sample)


def _itc_spec(identity_aware: bool, description: str) -> LossSpec:
    return LossSpec(
        _itc_between("image", "text", identity_aware),
        description=description,
        per_sample=_itc_between("image", "text", identity_aware, per_sample=True),
        soft_targets=True,
    )


def _ss_over(*towers: str) -> Callable:
    def loss(v: Views, p: LossParams) -> Tensor:
        return sum(simclr_loss(v.ss[t], v.ss[f"{t}2"], p.ss_tau) for t in towers)

    return loss


LOSSES: dict[str, LossSpec] = {
    "itc": _itc_spec(True, "identity-aware ITC (= n_itc)"),
    "clip_itc": _itc_spec(False, "CLIP's ITC: one-hot targets"),
    "n_itc": _itc_spec(True, "TBPS-CLIP normalized ITC (eq. 1)"),
    "sdm": LossSpec(_sdm(False), description="IRRA SDM", per_sample=_sdm(True), soft_targets=True),
    "tal": LossSpec(
        _tal(False), description="RDE's triplet alignment loss (summed)", per_sample=_tal(True), summed=True
    ),
    "r_itc": LossSpec(
        lambda v, p: r_itc_loss(v.image, v.text, v.pids, v.pids, v.logit_scale, p.r_itc_eps),
        description="reversed ITC (eq. 4)",
        per_sample=lambda v, p: r_itc_loss(
            v.image, v.text, v.pids, v.pids, v.logit_scale, p.r_itc_eps, per_sample=True
        ),
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
    "hinfonce": LossSpec(
        lambda v, p: hardness_infonce_loss(v.image, v.text, p.infonce_tau),
        description="PDG's hardness-aware InfoNCE (eqs. 14-15, 17): instance-level, fixed tau, summed over the batch",
    ),
    "cmpm": LossSpec(
        lambda v, p: cmpm_loss(v.image, v.text, v.pids, v.pids),
        description="cross-modal projection matching (Zhang & Lu 2018, as IRRA's compute_cmpm)",
    ),
    "mlm": LossSpec(
        lambda v, p: masked_token_loss(v.mlm_logits, v.mlm_labels),
        ("mlm",),
        description="IRRA's cross-modal masked language modelling (needs masking.mode em or nam)",
    ),
    "id": LossSpec(
        lambda v, p: id_loss(v.id_logits["image"], v.id_logits["text"], v.id_labels),
        ("id",),
        description="IRRA's ID loss: a classifier over the training identities on both towers' features",
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
    """The extra views ('image2', 'text2', 'mlm', 'id', 'text_orig') the configured losses read."""
    return {view for name in check_loss_weights(weights) for view in LOSSES[name].extra_views}


def required_ss_heads(weights: Mapping[str, object]) -> list[str]:
    """The SimCLR heads ('image', 'text') the configured losses need, in a fixed order."""
    needed = {tower for name in check_loss_weights(weights) for tower in LOSSES[name].ss_heads}
    return [tower for tower in ("image", "text") if tower in needed]


def check_per_sample(names: list[str]) -> None:
    """Raise ConfigError unless every loss in ``names`` has a per-sample form (clean-sample division needs it)."""
    lacking = sorted(name for name in names if LOSSES[name].per_sample is None)
    if lacking:
        known = sorted(name for name, spec in LOSSES.items() if spec.per_sample is not None)
        raise ConfigError(
            f"losses {lacking} have no per-sample form, which clean-sample division (noise.division) needs; "
            f"use losses among {known}"
        )


def weighted_term(spec: LossSpec, views: Views, params: LossParams) -> Tensor:
    """A loss over the rows ``views.weights`` keeps: the mean (or sum, ``spec.summed``) of its per-sample form."""
    if views.weights is None:
        return spec.fn(views, params)
    kept = views.weights.to(views.image.device, torch.float32) * spec.per_sample(views, params)
    return kept.sum() if spec.summed else kept.sum() / views.weights.sum().clamp(min=1)


def compute_losses(
    weights: Mapping[str, object], views: Views, params: LossParams | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the named losses, and a log record of floats.

    The record holds each term unweighted (``name``) and weighted (``name_weighted``) and ``total``.
    Terms with weight 0 are skipped; ``views.weights`` keeps only the rows it marks (``weighted_term``).
    """
    params = params or LossParams()
    total: Tensor | None = None
    record: dict[str, float] = {}
    for name, weight in check_loss_weights(weights).items():
        value = weighted_term(LOSSES[name], views, params)
        weighted = weight * value
        total = weighted if total is None else total + weighted
        record[name] = float(value.detach())
        record[f"{name}_weighted"] = float(weighted.detach())
    record["total"] = float(total.detach())
    return total, record
