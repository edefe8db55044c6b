"""Comparing a config with the one a run was trained with: what makes a result stale, what blocks a resume.

``NEUTRAL_KEYS`` cannot change a run's numbers (an ablation keeps its result when only they change).
``RESUME_FREE`` may also differ when a run resumes: when it stops, the device, and the starting weights
(read by a fresh start only). Any other difference means the checkpoint is of another run.
"""

from __future__ import annotations

from pathlib import Path

from tbpr.config import to_dict
from tbpr.errors import ConfigError
from tbpr.models.checkpoint import load_checkpoint
from tbpr.train.config import TrainConfig, config_differences

# config keys that cannot change a run's numbers: editing them (or moving OUT) does not make a result stale
NEUTRAL_KEYS = frozenset(
    {"output_dir", "data.num_workers", "data.eval_batch_size", "log_every", "checkpoint_every"}
)
# may also differ on resume: when it stops, where it runs, and the starting weights (read by a fresh start only)
RESUME_FREE = NEUTRAL_KEYS | {"max_steps", "device", "save_init", "init_from"}
_SHOWN = 8


def check_resumable(cfg: TrainConfig, last: Path) -> None:
    """ConfigError naming the differing fields if checkpoint ``last`` was trained with another config."""
    saved = load_checkpoint(last)["config"]
    changes = config_differences(saved, to_dict(cfg), RESUME_FREE)
    if not changes:
        return
    shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in list(changes.items())[:_SHOWN])
    more = f"; and {len(changes) - _SHOWN} more" if len(changes) > _SHOWN else ""
    raise ConfigError(
        f"{cfg.output_dir} holds a run trained with another config, which cannot be resumed with this one "
        f"({len(changes)} field(s) differ from {last}: {shown}{more}): train into another --out, or "
        "pass --no-resume to start this run folder over"
    )
