"""Learning-rate schedule: linear warmup then cosine decay, as a factor of the peak lr per step."""

from __future__ import annotations

import math


def warmup_cosine_factor(
    step: int, total_steps: int, warmup_steps: int, warmup_start_factor: float, min_factor: float
) -> float:
    """lr(step) / peak lr: ramps linearly from ``warmup_start_factor`` to 1 over ``warmup_steps``,
    then follows a half cosine from 1 down to ``min_factor`` at ``total_steps``."""
    if step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
