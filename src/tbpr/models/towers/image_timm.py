"""An image tower from timm: a ViT of any size (with overlapping slicing) or a CNN pooled globally."""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from tbpr.errors import ConfigError
from tbpr.models.towers.config import TowerConfig
from tbpr.models.towers.weights import map_by_position, read_weight_file, resolve_source

log = logging.getLogger(__name__)
FIELD = "model.image_tower"


def overlapping_grid(size: tuple[int, int], patch: int, stride: int) -> tuple[int, int]:
    """Patches per side of a patch convolution (kernel ``patch``, stride ``stride``) over ``size``:
    floor((H + w - P) / w) x floor((W + w - P) / w), PDG's N_p = (H+w-P)(W+w-P)/w^2."""
    rows, cols = ((side + stride - patch) // stride for side in size)
    if rows < 1 or cols < 1:
        raise ConfigError(f"{FIELD}.patch_stride={stride}: an image of {size} holds no {patch}-pixel patch")
    return rows, cols


def set_patch_stride(vit: nn.Module, stride: int) -> None:
    """Slide the ViT's patch embedding with ``stride`` and resample its position embeddings to the new grid."""
    from timm.layers import resample_abs_pos_embed

    embed = vit.patch_embed
    patch = embed.patch_size[0]
    if embed.patch_size[0] != embed.patch_size[1]:
        raise ConfigError(f"{FIELD}.patch_stride needs square patches, not {embed.patch_size}")
    if stride > patch:
        raise ConfigError(
            f"{FIELD}.patch_stride={stride} is larger than the patch size {patch}: pixels would be skipped"
        )
    grid = overlapping_grid(embed.img_size, patch, stride)
    prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
    with torch.no_grad():
        resampled = resample_abs_pos_embed(
            vit.pos_embed.data, new_size=grid, old_size=embed.grid_size, num_prefix_tokens=prefix
        )
    vit.pos_embed = nn.Parameter(resampled)
    embed.proj.stride = (stride, stride)
    embed.grid_size, embed.num_patches = grid, grid[0] * grid[1]


class TimmImageTower(nn.Module):
    """``encode(images)`` -> [B, width]: timm's pooled features (a ViT's class token after its final norm,
    a CNN's global average pool), with the classifier removed."""

    kind = "timm"

    def __init__(self, cfg: TowerConfig, image_size: tuple[int, int]):
        super().__init__()
        import timm

        if not timm.is_model(cfg.name):
            raise ConfigError(
                f"{FIELD}.name={cfg.name!r} is not a timm model (e.g. vit_base_patch16_224, efficientnet_lite0)"
            )
        pretrained = cfg.weights == "pretrained"
        try:
            try:  # a ViT is built for the input size (its position embeddings are resampled to it)
                self.model = timm.create_model(
                    cfg.name, pretrained=pretrained, img_size=tuple(image_size), **cfg.options
                )
            except TypeError:  # a CNN takes any size
                self.model = timm.create_model(cfg.name, pretrained=pretrained, **cfg.options)
        except TypeError as err:
            raise ConfigError(
                f"{FIELD}.options={cfg.options}: {cfg.name} does not take them ({err})"
            ) from err
        except (RuntimeError, OSError) as err:  # no network, or no such weights
            raise ConfigError(
                f"{FIELD}.weights=pretrained for {cfg.name}: {err}. Offline, give a weight file instead"
            ) from err
        if cfg.weights not in ("pretrained", "random"):
            self._load_file(resolve_source(cfg.weights, f"{FIELD}.weights"))
        self.model.reset_classifier(0)  # pooled features, no ImageNet logits
        if cfg.patch_stride is not None:
            if not hasattr(self.model, "patch_embed"):
                raise ConfigError(
                    f"{FIELD}.patch_stride: {cfg.name} has no patch embedding (it is not a ViT)"
                )
            set_patch_stride(self.model, cfg.patch_stride)
        self.width: int = self.model.num_features

    def _load_file(self, path: str) -> None:
        state = read_weight_file(path, f"{FIELD}.weights")
        own = getattr(self.model, "pos_embed", None)
        theirs = state.get("pos_embed")
        if own is not None and theirs is not None and theirs.shape != own.shape:  # trained at another size
            from timm.layers import resample_abs_pos_embed

            prefix = 0 if getattr(self.model, "no_embed_class", False) else self.model.num_prefix_tokens
            state = {
                **state,
                "pos_embed": resample_abs_pos_embed(
                    theirs, self.model.patch_embed.grid_size, num_prefix_tokens=prefix
                ),
            }
        self.model.load_state_dict(map_by_position(state, self.model, f"{FIELD}.weights"), strict=True)
        log.info("loaded %s into %s", path, type(self.model).__name__)

    @property
    def blocks(self) -> nn.Module:
        """A ViT's Transformer blocks, a CNN's stages."""
        return self.model.blocks

    def encode(self, images: Tensor) -> Tensor:
        return self.model(images)

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Intermediate ViT tokens through the final norm (the space the class token is read in)."""
        if not hasattr(self.model, "patch_embed"):
            raise ConfigError(f"{type(self.model).__name__} is a CNN: it has no patch tokens")
        return self.model.norm(tokens)
