"""Saving and loading tbpr model weights together with the config that builds them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tbpr.atomic import atomic_write
from tbpr.config import from_dict
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
