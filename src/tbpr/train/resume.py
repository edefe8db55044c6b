"""Whether a run folder can be resumed with a config: the checkpoint's config must match it.

Only fields that change when or how a run is stopped, saved, logged or fed may differ: a resumed run must
compute what the interrupted one would have.
"""

from __future__ import annotations

from pathlib import Path

from tbpr.config import to_dict
from tbpr.errors import ConfigError
from tbpr.models.checkpoint import load_checkpoint
from tbpr.train.config import TrainConfig, config_differences

# may differ on resume: where the run is (it is the folder being resumed), when it stops or saves, how
# much it logs, how it is fed, and the starting weights (only read by a fresh start)
RESUME_FREE = frozenset(
    {
        "output_dir",
        "max_steps",
        "checkpoint_every",
        "log_every",
        "device",
        "save_init",
        "init_from",
        "data.num_workers",
        "data.eval_batch_size",
    }
)
_SHOWN = 8


def check_resumable(cfg: TrainConfig, last: Path) -> None:
    """ConfigError naming the differing fields if checkpoint ``last`` was trained with another config."""
    saved = load_checkpoint(last)["config"]
    differences = [
        f"{key}: {old!r} -> {new!r}"
        for key, (old, new) in config_differences(saved, to_dict(cfg), RESUME_FREE).items()
    ]
    if not differences:
        return
    shown = "; ".join(differences[:_SHOWN])
    more = f"; and {len(differences) - _SHOWN} more" if len(differences) > _SHOWN else ""
    raise ConfigError(
        f"{cfg.output_dir} holds a run trained with another config, which cannot be resumed with this one "
        f"({len(differences)} field(s) differ from {last}: {shown}{more}): train into another --out, or "
        "pass --no-resume to start this run folder over"
    )
