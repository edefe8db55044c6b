"""Training objectives: pure functions over features, person ids and a logit scale, plus a registry."""

from tbpr.losses.constraint import approximate_constraint_loss
from tbpr.losses.contrastive import (
    c_itc_loss,
    cmpm_loss,
    cosine_logits,
    hardness_infonce_loss,
    itc_loss,
    kl_to_targets,
    r_itc_loss,
    sdm_loss,
    simclr_loss,
    soft_cross_entropy,
    soft_label_targets,
    tal_loss,
    tal_per_sample,
)
from tbpr.losses.identity import id_loss
from tbpr.losses.logit_scale import LogitScale
from tbpr.losses.mlm import masked_token_loss
from tbpr.losses.registry import (
    LOSSES,
    LossParams,
    Views,
    check_loss_weights,
    check_per_sample,
    compute_losses,
    required_ss_heads,
    required_views,
)
from tbpr.losses.targets import identity_mask, identity_targets

__all__ = [
    "LOSSES",
    "LogitScale",
    "LossParams",
    "Views",
    "approximate_constraint_loss",
    "c_itc_loss",
    "check_loss_weights",
    "check_per_sample",
    "cmpm_loss",
    "compute_losses",
    "cosine_logits",
    "hardness_infonce_loss",
    "identity_mask",
    "identity_targets",
    "id_loss",
    "itc_loss",
    "kl_to_targets",
    "masked_token_loss",
    "r_itc_loss",
    "required_ss_heads",
    "required_views",
    "sdm_loss",
    "simclr_loss",
    "soft_cross_entropy",
    "soft_label_targets",
    "tal_loss",
    "tal_per_sample",
]
