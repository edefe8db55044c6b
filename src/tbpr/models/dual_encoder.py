"""A CLIP dual encoder over open_clip architectures, with access to per-layer token features."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import text_global_pool
from torch import nn

from tbpr.errors import ConfigError
from tbpr.losses import LogitScale

_CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(_CONFIG_DIR)


@dataclass
class ModelConfig:
    """Which architecture, which weights, and the contrastive temperature.

    ``pretrained`` is ``None`` (random initialization), an open_clip pretrained tag such as
    ``"openai"`` (downloaded by open_clip; needs internet), or a path to a local checkpoint file.
    ``arch`` may also be ``hf-hub:org/repo`` or ``local-dir:/path`` as open_clip understands them.
    """

    arch: str = "ViT-B-16"
    pretrained: str | None = None
    image_size: tuple[int, int] = (384, 128)
    context_length: int = 77
    temperature: float = 0.02
    learnable_temperature: bool = False
    extra: dict = field(default_factory=dict)


def available_architectures() -> list[str]:
    return open_clip.list_models()


@contextmanager
def _quiet_root_logger(active: bool):
    root = logging.getLogger()
    level = root.level
    if active:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class DualEncoder(nn.Module):
    """Image and text towers of one open_clip CLIP model plus a shared temperature.

    The model only encodes tensors: tokenization, decoding and augmentation live in ``tbpr.data``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        if config.arch not in open_clip.list_models() and ":" not in config.arch:
            raise ConfigError(
                f"model.arch={config.arch!r} is not an open_clip architecture; "
                f"choose one of tbpr-micro, tbpr-tiny, ViT-B-16, ViT-B-32 (or any of open_clip.list_models())"
            )
        pretrained = config.pretrained
        weight_file = pretrained and Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors")
        if weight_file and not Path(pretrained).is_file():
            raise ConfigError(f"model.pretrained={pretrained!r}: no such checkpoint file")
        try:
            with _quiet_root_logger(pretrained is None):  # open_clip warns about the random init we asked for
                self.clip = open_clip.create_model(
                    config.arch,
                    pretrained=pretrained,
                    force_image_size=tuple(config.image_size),
                    force_context_length=config.context_length,
                    **config.extra,
                )
        except RuntimeError as err:
            if "download" not in str(err) and "Pretrained value" not in str(err):
                raise
            tags = open_clip.list_pretrained_tags_by_model(config.arch) if ":" not in config.arch else []
            raise ConfigError(
                f"model.pretrained={pretrained!r} for {config.arch}: {err}. Known tags: {tags}. Offline, "
                "download the open_clip weights on a connected machine and set model.pretrained to the file"
            ) from err
        # A causal text tower pooled at the end token never looks at the padding after it: dropping the
        # padding columns shared by the whole batch gives the same features for less compute.
        self._trim_padding = (
            type(self.clip) is open_clip.CLIP
            and self.clip.attn_mask is not None
            and self.clip.text_pool_type in ("argmax", "eos")
        )
        # tbpr's temperature replaces open_clip's own (kept only so open_clip checkpoints load strictly)
        self.clip.logit_scale.requires_grad_(False)
        self.temperature = LogitScale(config.temperature, learnable=config.learnable_temperature)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The multiplier 1/tau applied to cosine similarities (clamped at 100 as CLIP does)."""
        return self.temperature()

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_image(images, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text features; padding past the batch's longest caption is skipped (see ``_trim_padding``)."""
        clip = self.clip
        if not self._trim_padding:
            return clip.encode_text(tokens, normalize=normalize)
        length = max(1, int((tokens != 0).sum(dim=1).max()))
        tokens = tokens[:, :length]
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))
        x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
        x = self._project_text(x)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "image_feats": self.encode_image(images),
            "text_feats": self.encode_text(tokens),
            "logit_scale": self.logit_scale,
        }

    @property
    def image_blocks(self) -> nn.ModuleList:
        return self.clip.visual.transformer.resblocks

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.clip.transformer.resblocks

    @contextmanager
    def capture_tokens(self, image_layers: list[int] = (), text_layers: list[int] = ()):
        """Record the token sequence after the given (0-based) blocks of each tower.

        Yields a dict filled during the forward passes run inside the block:
        ``{"image": {layer: [B, 1+patches, width]}, "text": {layer: [B, context, width]}}``.
        """
        store: dict[str, dict[int, torch.Tensor]] = {"image": {}, "text": {}}
        handles = []
        for tower, blocks, layers in (
            ("image", self.image_blocks, image_layers),
            ("text", self.text_blocks, text_layers),
        ):
            for layer in layers:
                if not -len(blocks) <= layer < len(blocks):
                    raise ConfigError(
                        f"{tower} layer {layer} out of range: the tower has {len(blocks)} blocks"
                    )
                index = layer % len(blocks)

                def hook(_module, _inputs, output, tower=tower, index=index):
                    store[tower][index] = output

                handles.append(blocks[index].register_forward_hook(hook))
        try:
            yield store
        finally:
            for handle in handles:
                handle.remove()

    def project_image_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map intermediate image tokens into the joint space (final LayerNorm and projection)."""
        visual = self.clip.visual
        x = visual.ln_post(tokens)
        return x @ visual.proj if visual.proj is not None else x

    def project_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map intermediate text tokens into the joint space (final LayerNorm and projection)."""
        return self._project_text(self.clip.ln_final(tokens))

    def _project_text(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.clip.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def token_features(
        self,
        images: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        image_layer: int = -1,
        text_layer: int = -1,
        project: bool = True,
        normalize: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Token-level features of one layer of each tower given (image: [B, 1+P, D], text: [B, L, D])."""
        out = {}
        with self.capture_tokens(
            [image_layer] if images is not None else [], [text_layer] if tokens is not None else []
        ) as store:
            if images is not None:
                self.encode_image(images)
            if tokens is not None:
                self.encode_text(tokens)
        for tower, project_fn in (("image", self.project_image_tokens), ("text", self.project_text_tokens)):
            if store[tower]:
                x = next(iter(store[tower].values()))
                x = project_fn(x) if project else x
                out[tower] = F.normalize(x, dim=-1) if normalize else x
        return out
