"""Comparing a config with the one a run was trained with: what makes a result stale, what blocks a resume.

``NEUTRAL_KEYS`` cannot change a run's numbers (an ablation keeps its result when only they change).
``RESUME_FREE`` may also differ when a run resumes: when it stops, the device, and the starting weights
(read by a fresh start only). Any other difference means the checkpoint is of another run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tbpr.config import to_dict
from tbpr.errors import ConfigError
from tbpr.train.config import TrainConfig

NEUTRAL_KEYS = frozenset(
    {"output_dir", "data.num_workers", "data.eval_batch_size", "log_every", "checkpoint_every"}
)
RESUME_FREE = NEUTRAL_KEYS | {"max_steps", "device", "save_init", "init_from"}
UNSET = "<unset>"
_SHOWN = 8


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(old: dict, new: dict, ignore: frozenset[str] = NEUTRAL_KEYS) -> dict[str, tuple]:
    """Dotted key -> (old value, new value) for every key whose value differs, sorted, ``ignore`` left out.

    Values are compared as JSON gives them back (tuples are lists); a missing key is ``UNSET``.
    """
    a, b = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))
    return {
        key: (a.get(key, UNSET), b.get(key, UNSET))
        for key in sorted(a.keys() | b.keys())
        if key not in ignore and a.get(key, UNSET) != b.get(key, UNSET)
    }


def check_resumable(cfg: TrainConfig, last: Path) -> None:
    """ConfigError naming the differing fields if checkpoint ``last`` was trained with another config."""
    saved = torch.load(last, map_location="cpu", mmap=True, weights_only=False)["config"]
    changes = config_changes(saved, to_dict(cfg), RESUME_FREE)
    if not changes:
        return
    shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in list(changes.items())[:_SHOWN])
    more = f"; and {len(changes) - _SHOWN} more" if len(changes) > _SHOWN else ""
    raise ConfigError(
        f"{cfg.output_dir} holds a run trained with another config, which cannot be resumed with this one "
        f"({len(changes)} field(s) differ from {last}: {shown}{more}): train into another --out, or "
        "pass --no-resume to start this run folder over"
    )
