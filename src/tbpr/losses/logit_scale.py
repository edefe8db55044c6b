"""The similarity multiplier 1/tau shared by both towers: fixed (IRRA, tau=0.02) or learnable (CLIP)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tbpr.errors import ConfigError


class LogitScale(nn.Module):
    """Holds log(1/tau) as a parameter (learnable) or a buffer (fixed); ``forward()`` returns 1/tau.

    The returned scale is clamped to ``max_scale`` (CLIP's 100), so a learnable scale cannot run away;
    beyond the clamp its gradient is zero.
    """

    def __init__(self, init_tau: float = 0.02, learnable: bool = False, max_scale: float = 100.0) -> None:
        super().__init__()
        if not init_tau > 0:
            raise ConfigError(f"logit scale: temperature tau must be > 0, got {init_tau}")
        if not 1.0 / init_tau <= max_scale:
            raise ConfigError(
                f"logit scale: 1/tau = {1.0 / init_tau:g} exceeds max_scale = {max_scale:g}; "
                "raise max_scale or use a larger tau"
            )
        log_scale = torch.tensor(math.log(1.0 / init_tau))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.max_scale = max_scale

    def forward(self) -> Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale)

    def extra_repr(self) -> str:
        learnable = isinstance(self.log_scale, nn.Parameter)
        return f"tau={1.0 / float(self()):.4g}, learnable={learnable}, max_scale={self.max_scale:g}"
