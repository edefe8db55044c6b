"""Training objectives: pure functions over features, person ids and a logit scale, plus a registry."""

from tbpr.losses.contrastive import cosine_logits, itc_loss, kl_to_targets, sdm_loss, soft_cross_entropy
from tbpr.losses.logit_scale import LogitScale
from tbpr.losses.registry import LOSSES, check_loss_weights, compute_losses
from tbpr.losses.targets import identity_mask, identity_targets

__all__ = [
    "LOSSES",
    "LogitScale",
    "check_loss_weights",
    "compute_losses",
    "cosine_logits",
    "identity_mask",
    "identity_targets",
    "itc_loss",
    "kl_to_targets",
    "sdm_loss",
    "soft_cross_entropy",
]
