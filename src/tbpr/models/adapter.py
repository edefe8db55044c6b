"""CLIP-Adapter: a residual bottleneck MLP on the image features of a frozen CLIP (Gao et al. 2021)."""

from __future__ import annotations

import torch
from torch import nn

from tbpr.errors import ConfigError


class FeatureAdapter(nn.Module):
    """``f -> alpha * A(f) + (1 - alpha) * f`` with ``A = ReLU(W2 ReLU(W1 f))``, both maps without bias.

    ``W1`` reduces the width by ``reduction``; the layout (bias-free linears, a ReLU after each) follows
    the public CLIP-Adapter code, which adapts the image features only.
    """

    def __init__(self, dim: int, reduction: int = 4, alpha: float = 0.4):
        super().__init__()
        if not 0 <= alpha <= 1:
            raise ConfigError(f"model.adapter_alpha={alpha}: expected a blend factor in [0, 1]")
        if not 1 <= reduction <= dim:
            raise ConfigError(f"model.adapter_reduction={reduction}: expected 1..{dim} (the feature width)")
        self.alpha = alpha
        self.fc = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(dim // reduction, dim, bias=False),
            nn.ReLU(),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.fc(feats) + (1 - self.alpha) * feats
