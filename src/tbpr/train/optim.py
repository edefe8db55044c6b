"""The optimizer: AdamW (or IRRA's Adam) without weight decay on biases, norms, embeddings and the temperature.

The heads trained from scratch on top of the encoders, the MLM head (``mlm_head.*``) and the ID
classifier (``id_head.*``) and RDE's TSE heads (``tse.*``), may learn at ``lr * mlm_lr_factor`` /
``lr * id_lr_factor`` / ``lr * tse_lr_factor``, as IRRA's and RDE's randomly initialized modules do; the
projections of towers into a shared space (``image_proj.*``, ``text_proj.*``, new on top of pretrained
towers) at ``lr * proj_lr_factor``; the encoders' biases at ``lr * bias_lr_factor`` (IRRA: 2).
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


def _lr_factor(name: str, cfg: OptimConfig) -> float:
    """A head's factor; else the bias factor for biases (``bias``, ``in_proj_bias``); else 1."""
    heads = (
        ("mlm_head.", cfg.mlm_lr_factor),
        ("id_head.", cfg.id_lr_factor),
        ("tse.", cfg.tse_lr_factor),
        ("image_proj.", cfg.proj_lr_factor),
        ("text_proj.", cfg.proj_lr_factor),
    )
    for prefix, factor in heads:
        if name.startswith(prefix):
            return factor
    return cfg.bias_lr_factor if "bias" in name.rsplit(".", 1)[-1] else 1.0


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """One group per (weight decay or not, learning-rate factor); decayed groups first."""
    groups: dict[tuple[bool, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = not (param.ndim < 2 or any(k in name for k in _NO_DECAY_KEYWORDS))
        groups.setdefault((decay, _lr_factor(name, cfg)), []).append(param)
    return [
        {"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": cfg.lr * factor}
        for (decay, factor), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """``optim.name``: 'adamw' (decoupled weight decay) or 'adam' (weight decay added to the gradient)."""
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(parameter_groups(model, cfg), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
