"""Towers of the dual encoder, behind one interface.

A text tower has ``kind``, ``tokenizer`` (its own: CLIP BPE, WordPiece, ...), ``blocks`` and
``encode(tokens) -> [B, width]``; an image tower has ``kind``, ``blocks`` and ``encode(images) -> [B, width]``.
Features are unnormalized; ``project_tokens`` (where a tower has it) maps a block's token outputs into the
space its pooled features live in. Kinds: ``open_clip`` (both towers of one CLIP model), ``transformers``
(text) and ``timm`` (image).
"""

from __future__ import annotations

from tbpr.models.towers.config import PRESETS, TowerConfig, fill_tower
from tbpr.models.towers.open_clip_pair import OpenClipImage, OpenClipText, create_open_clip

__all__ = [
    "PRESETS",
    "OpenClipImage",
    "OpenClipText",
    "TowerConfig",
    "build_image_tower",
    "build_text_tower",
    "build_tokenizer",
    "create_open_clip",
    "fill_tower",
]


def build_text_tower(cfg: TowerConfig, context_length: int):
    from tbpr.models.towers.text_transformers import TransformersTextTower

    return TransformersTextTower(cfg, context_length)


def build_image_tower(cfg: TowerConfig, image_size: tuple[int, int]):
    from tbpr.models.towers.image_timm import TimmImageTower

    return TimmImageTower(cfg, image_size)


def build_tokenizer(model_config):
    """The text tower's tokenizer for a ``ModelConfig``, without building the model."""
    if model_config.text_tower is None:
        from tbpr.data.tokenizer import Tokenizer

        return Tokenizer(model_config.context_length)
    from tbpr.models.towers.text_transformers import load_tokenizer

    return load_tokenizer(model_config.text_tower, model_config.context_length)
