"""The optimizer: AdamW without weight decay on biases, norms, embeddings and the temperature."""

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
)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or any(k in name for k in _NO_DECAY_KEYWORDS):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
    )
