"""Fine-tuning: start a run from the model weights of another tbpr run (``TrainConfig.init_from``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tbpr.errors import ConfigError
from tbpr.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

# SimCLR, MLM and ID heads belong to a recipe's losses, not to the encoders: a fine-tuning recipe may add
# or drop them, so they may be absent on either side (new heads keep their fresh initialization). The ID
# classifier has one class per training identity: on data with another identity count it starts fresh.
_OPTIONAL_PREFIXES = ("ss_heads.", "mlm_head.", "id_head.")
_PER_DATASET_PREFIXES = ("id_head.",)
_SHOWN = 5


def init_checkpoint(source: str | Path) -> Path:
    """The weights file of ``init_from``: a run folder's ``checkpoints/best.pt`` or a checkpoint file."""
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise ConfigError(
            f"init_from={source}: no checkpoint at {path}; give a tbpr run folder or a checkpoint file"
        )
    return path


def load_init_weights(model: torch.nn.Module, source: str | Path) -> Path:
    """Copy the model weights of ``source`` into ``model`` (no optimizer, schedule or epoch); returns the file.

    Raises ConfigError naming ``init_from`` and the keys when the architectures do not match.
    """
    path = init_checkpoint(source)
    payload = load_checkpoint(path)
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise ConfigError(f"init_from={source}: {path} is not a tbpr checkpoint (no 'model' weights)")
    weights, own = payload["model"], model.state_dict()
    weights = {  # the source's classifier over other identities does not carry over
        k: v
        for k, v in weights.items()
        if not (k.startswith(_PER_DATASET_PREFIXES) and k in own and v.shape != own[k].shape)
    }
    missing = [k for k in own if k not in weights and not k.startswith(_OPTIONAL_PREFIXES)]
    unexpected = [k for k in weights if k not in own and not k.startswith(_OPTIONAL_PREFIXES)]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        source_arch = payload.get("model_config", {}).get("arch", "?")
        problems = [
            f"{label} ({len(keys)}): {keys[:_SHOWN]}{' ...' if len(keys) > _SHOWN else ''}"
            for label, keys in (
                ("missing in the checkpoint", missing),
                ("not in this model", unexpected),
                ("shape checkpoint vs model", shapes),
            )
            if keys
        ]
        raise ConfigError(
            f"init_from={source}: {path} (arch {source_arch}) does not match the model built from the recipe "
            f"({getattr(getattr(model, 'config', None), 'arch', '?')}); " + "; ".join(problems)
        )
    fresh = [k for k in own if k not in weights]
    model.load_state_dict({k: weights.get(k, own[k]) for k in own})
    heads = sorted({prefix for k in fresh for prefix in _OPTIONAL_PREFIXES if k.startswith(prefix)})
    log.info(
        "initialized the model from %s (weights only)%s",
        path,
        f"; freshly initialized: {', '.join(h + '*' for h in heads)} ({len(fresh)} tensors)" if fresh else "",
    )
    return path
