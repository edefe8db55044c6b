"""Learning-rate schedules as a factor of the peak lr per optimizer step: linear warm-up, then a cosine
decay (``optim.schedule: cosine``) or steps (``step``: x ``step_gamma`` every ``step_epochs`` epochs, PDG)."""

from __future__ import annotations

import math
from collections.abc import Callable

SCHEDULES = ("cosine", "step")


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


def warmup_step_factor(
    step: int, warmup_steps: int, warmup_start_factor: float, every_steps: int, gamma: float
) -> float:
    """lr(step) / peak lr: the same linear warm-up, then gamma ** (number of whole ``every_steps`` periods
    since the start of training): with PDG's 10 warm-up epochs and x0.1 every 20, 1e-4 until epoch 20,
    1e-5 until 40, 1e-6 until 60, 1e-7 after."""
    if step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    return gamma ** (step // max(1, every_steps))


def lr_factor(optim, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """The factor per step for an ``OptimConfig`` (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    if optim.schedule == "step":
        every = round(optim.step_epochs * steps_per_epoch)
        return lambda s: warmup_step_factor(s, warmup, optim.warmup_start_factor, every, optim.step_gamma)
    min_factor = optim.min_lr / optim.lr
    return lambda s: warmup_cosine_factor(s, total_steps, warmup, optim.warmup_start_factor, min_factor)
