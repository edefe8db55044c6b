"""Saving and loading tbpr model weights together with the config that builds them.

Checkpoints hold only tensors and plain data (dicts, lists, strings, numbers), so they are read with
``torch.load(weights_only=True)``: a file that needs more (a pickled object, which can run code) is refused
unless the user trusts it explicitly (``tbpr --trust-checkpoint`` or ``TBPR_TRUST_CHECKPOINT=1``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from pathlib import Path

import torch

from tbpr.atomic import atomic_write
from tbpr.config import from_dict, to_dict
from tbpr.errors import ConfigError
from tbpr.models.dual_encoder import DualEncoder, ModelConfig

log = logging.getLogger(__name__)

TRUST_ENV = "TBPR_TRUST_CHECKPOINT"
TRUST_HINT = f"tbpr --trust-checkpoint COMMAND ... (or {TRUST_ENV}=1)"


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save that never leaves a half-written file."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def model_payload(model: DualEncoder) -> dict:
    return {"model_config": to_dict(model.config), "model": model.state_dict()}


def save_model(model: DualEncoder, path: Path) -> None:
    atomic_torch_save(model_payload(model), path)


def trusted() -> bool:
    """Whether the user allowed checkpoints that need full (code-running) unpickling."""
    return os.environ.get(TRUST_ENV, "") == "1"


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", trust: bool | None = None) -> dict:
    """The payload of a tbpr checkpoint, read without running code from the file.

    A file that needs unsafe unpickling is refused (ConfigError naming the trust flag) unless ``trust``
    (default: ``TBPR_TRUST_CHECKPOINT=1``); a missing, truncated or corrupt file is a ConfigError too.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Weights only" not in str(err):
            raise _corrupt(path, err) from err
        if not (trusted() if trust is None else trust):
            raise ConfigError(
                f"{path} holds pickled Python objects, which can run code when loaded (written by an older "
                f"tbpr, or tampered with); if you trust its source, load it with {TRUST_HINT}"
            ) from None
        log.warning("loading %s with full unpickling (trusted by the user)", path)
        payload = _load_unsafe(path, map_location)
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise _corrupt(path, err) from err
    if not isinstance(payload, dict):
        raise ConfigError(f"{path} is not a tbpr checkpoint (a {type(payload).__name__}, not a dict)")
    return payload


def _load_unsafe(path: Path, map_location) -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, pickle.UnpicklingError) as err:
        raise _corrupt(path, err) from err


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


def load_model(
    path: Path, map_location: str | torch.device = "cpu", trust: bool | None = None
) -> DualEncoder:
    """Rebuild a DualEncoder from a tbpr checkpoint (a file written by ``save_model`` or training)."""
    return model_from_payload(load_checkpoint(path, map_location, trust), Path(path))
