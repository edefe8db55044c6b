"""The optimizer: AdamW without weight decay on biases, norms, embeddings and the temperature.

The MLM head (``mlm_head.*``, trained from scratch on top of the encoders) may learn at
``lr * mlm_lr_factor``, as IRRA's cross-modal modules do.
"""

from __future__ import annotations

import torch
from torch import nn

from tbpr.train.config import OptimConfig

_NO_DECAY_KEYWORDS = (
    "positional_embedding",
    "class_embedding",
    "token_embedding",
    "logit_scale",
    "temperature",
    "embeddings.",  # transformers towers: word / position / token-type embeddings
    "pos_embed",  # timm ViTs
    "cls_token",
)


def parameter_groups(
    model: nn.Module, weight_decay: float, lr: float, mlm_lr_factor: float = 1.0
) -> list[dict]:
    """(decay, no decay) x (encoders, MLM head) groups; empty groups are left out."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = not (param.ndim < 2 or any(k in name for k in _NO_DECAY_KEYWORDS))
        groups.setdefault((decay, name.startswith("mlm_head.")), []).append(param)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decay else 0.0,
            "lr": lr * (mlm_lr_factor if head else 1.0),
        }
        for (decay, head), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = parameter_groups(model, cfg.weight_decay, cfg.lr, cfg.mlm_lr_factor)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
