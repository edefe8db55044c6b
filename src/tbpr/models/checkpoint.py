"""Saving and loading tbpr model weights together with the config that builds them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tbpr.atomic import atomic_write
from tbpr.errors import ConfigError
from tbpr.models.dual_encoder import DualEncoder, ModelConfig


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save that never leaves a half-written file."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def model_payload(model: DualEncoder) -> dict:
    return {"model_config": dataclasses.asdict(model.config), "model": model.state_dict()}


def save_model(model: DualEncoder, path: Path) -> None:
    atomic_torch_save(model_payload(model), path)


def load_model(path: Path, map_location: str | torch.device = "cpu") -> DualEncoder:
    """Rebuild a DualEncoder from a tbpr checkpoint (a file written by ``save_model`` or training)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if "model_config" not in payload or "model" not in payload:
        raise ConfigError(
            f"{path} is not a tbpr checkpoint (no model_config/model); "
            "to start from open_clip weights set model.pretrained to the file instead"
        )
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    cfg = dict(payload["model_config"], pretrained=None)
    cfg["image_size"] = tuple(cfg["image_size"])
    model = DualEncoder(ModelConfig(**{k: v for k, v in cfg.items() if k in fields}))
    model.load_state_dict(payload["model"])
    return model
