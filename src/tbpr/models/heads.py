"""SimCLR projection heads for the self-supervised (SS) losses of TBPS-CLIP."""

from __future__ import annotations

from torch import nn

from tbpr.errors import ConfigError

SS_TOWERS = ("image", "text")


def simclr_head(dim: int) -> nn.Sequential:
    """``Linear(dim, dim/4) -> ReLU -> Linear(dim/4, dim)``: TBPS-CLIP's 512-128-512 MLP scaled to ``dim``."""
    hidden = max(1, dim // 4)
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))


def build_ss_heads(towers: list[str], dim: int) -> nn.ModuleDict:
    """One head per listed tower (``model.ss_heads``); an empty dict when none is listed."""
    unknown = [t for t in towers if t not in SS_TOWERS]
    if unknown or len(set(towers)) != len(towers):
        raise ConfigError(f"model.ss_heads={towers}: expected distinct names among {list(SS_TOWERS)}")
    return nn.ModuleDict({tower: simclr_head(dim) for tower in towers})
