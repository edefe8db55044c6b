"""Whether a run folder can be resumed with a config: the checkpoint's config must match it.

Only fields that change when or how a run is stopped, saved, logged or fed may differ: a resumed run must
compute what the interrupted one would have.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tbpr.config import to_dict
from tbpr.errors import ConfigError
from tbpr.train.config import TrainConfig

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


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(saved: dict, new: dict) -> list[str]:
    """``'key: old -> new'`` for every dotted key whose value differs, ``RESUME_FREE`` keys left out."""
    old, cur = _flat(saved), _flat(new)
    return [
        f"{key}: {old.get(key, '(absent)')!r} -> {cur.get(key, '(absent)')!r}"
        for key in sorted(old.keys() | cur.keys())
        if key not in RESUME_FREE and old.get(key) != cur.get(key)
    ]


def check_resumable(cfg: TrainConfig, last: Path) -> None:
    """ConfigError naming the differing fields if checkpoint ``last`` was trained with another config."""
    saved = torch.load(last, map_location="cpu", mmap=True, weights_only=False)["config"]
    differences = config_differences(saved, to_dict(cfg))
    if not differences:
        return
    shown = "; ".join(differences[:_SHOWN])
    more = f"; and {len(differences) - _SHOWN} more" if len(differences) > _SHOWN else ""
    raise ConfigError(
        f"{cfg.output_dir} holds a run trained with another config, which cannot be resumed with this one "
        f"({len(differences)} field(s) differ from {last}: {shown}{more}): train into another --out, or "
        "pass --no-resume to start this run folder over"
    )
