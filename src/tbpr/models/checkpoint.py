"""Saving and loading tbpr model weights together with the config that builds them.

Checkpoints hold only tensors and plain data (dicts, lists, strings, numbers), so they are read with
``torch.load(weights_only=True)``. Checkpoints of older tbpr versions also hold numpy arrays and scalars (the
numpy RNG state): those load through an allow-list of numpy's array and scalar constructors, which build data
and run no other code. Anything else pickled (an object that can run code when loaded) is refused: tbpr never
unpickles a checkpoint in full.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct, scalar

from tbpr.atomic import atomic_write
from tbpr.config import from_dict, to_dict
from tbpr.errors import ConfigError
from tbpr.models.dual_encoder import DualEncoder, ModelConfig

# numpy arrays and scalars as pickle writes them: the array constructor, the array and dtype classes, and the
# dtype classes of bool and the fixed-width numbers (older tbpr checkpoints hold the numpy RNG state)
NUMPY_DATA_GLOBALS = [
    _reconstruct,
    scalar,
    np.ndarray,
    np.dtype,
    *(type(np.dtype(code)) for code in "?bhilqBHILQefdg"),
]
_ALLOWED_NAMES = {f"{g.__module__}.{g.__qualname__}" for g in NUMPY_DATA_GLOBALS}


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save that never leaves a half-written file."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def model_payload(model: DualEncoder) -> dict:
    return {"model_config": to_dict(model.config), "model": model.state_dict()}


def save_model(model: DualEncoder, path: Path) -> None:
    atomic_torch_save(model_payload(model), path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a tbpr checkpoint, read without running code from the file.

    A file that holds pickled objects other than tensors, plain data and numpy arrays is refused, like a
    missing, truncated or corrupt file, with a ConfigError.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(NUMPY_DATA_GLOBALS):
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Weights only" not in str(err):
            raise _corrupt(path, err) from err
        raise ConfigError(
            f"{path} holds pickled Python objects ({_unsafe_globals(path)}), which can run code when loaded, "
            "so tbpr does not load it: tbpr writes tensors and plain data only, so this file was not written "
            "by tbpr or was altered; train again, or use a checkpoint from a source you trust"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise _corrupt(path, err) from err
    if not isinstance(payload, dict):
        raise ConfigError(f"{path} is not a tbpr checkpoint (a {type(payload).__name__}, not a dict)")
    return payload


def _unsafe_globals(path: Path) -> str:
    """The names the file would import (for the error message), or a placeholder if they cannot be listed."""
    try:
        names = [
            g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in _ALLOWED_NAMES
        ]
    except Exception:  # noqa: BLE001 - only the message needs them; the refusal stands either way
        return "objects torch does not allow"
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def _corrupt(path: Path, err: Exception) -> ConfigError:
    reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"{path} is truncated or corrupt ({reason}); restore it, or delete it "
        "(last.pt: training restarts from scratch) and train again"
    )


def model_from_payload(payload: dict, path: Path) -> DualEncoder:
    """Rebuild the DualEncoder of a checkpoint payload (see ``load_checkpoint``)."""
    if "model_config" not in payload or "model" not in payload:
        raise ConfigError(
            f"{path} is not a tbpr checkpoint (no model_config/model); "
            "to start from open_clip weights set model.pretrained to the file instead"
        )
    model = DualEncoder(rebuild_config(payload["model_config"]))
    model.load_state_dict(payload["model"])
    return model


def rebuild_config(recorded: dict) -> ModelConfig:
    """The ``ModelConfig`` a checkpoint recorded, set to build without reading any pretrained weights
    (the checkpoint's own weights replace them): a transformers tower still reads its architecture and
    tokenizer from its ``name`` (a local folder, an installed package or the hub cache)."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    cfg = {k: v for k, v in recorded.items() if k in fields}
    cfg["pretrained"] = None
    for role in ("text_tower", "image_tower"):
        if cfg.get(role):
            cfg[role] = dict(cfg[role], weights="random")
    return from_dict(ModelConfig, cfg, "model_config")


def load_model(path: Path, map_location: str | torch.device = "cpu") -> DualEncoder:
    """Rebuild a DualEncoder from a tbpr checkpoint (a file written by ``save_model`` or training)."""
    return model_from_payload(load_checkpoint(path, map_location), Path(path))
