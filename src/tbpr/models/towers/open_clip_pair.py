"""Both towers of one open_clip CLIP model: built once, seen through a text view and an image view.

The CLIP module stays ``DualEncoder.clip`` (its parameter names, "clip.visual.conv1", are what recipes
freeze and checkpoints hold); the views only read it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import open_clip
from open_clip.model import text_global_pool
from torch import Tensor, nn

from tbpr.data.tokenizer import Tokenizer
from tbpr.errors import ConfigError

_CONFIG_DIR = Path(__file__).parent.parent / "configs"
open_clip.add_model_config(_CONFIG_DIR)


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


def create_open_clip(config) -> nn.Module:
    """The open_clip model of ``config.arch`` (a ``ModelConfig``), with its weights if ``config.pretrained``."""
    pretrained = config.pretrained
    weight_file = pretrained and Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors")
    if weight_file and not Path(pretrained).is_file():
        raise ConfigError(f"model.pretrained={pretrained!r}: no such checkpoint file")
    try:
        with _quiet_root_logger(pretrained is None):  # open_clip warns about the random init we asked for
            return open_clip.create_model(
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


class OpenClipText:
    """The text tower of a CLIP model: ``encode(tokens)`` -> [B, embed_dim] (unnormalized).

    A causal tower pooled at the end token never looks at the padding after it: dropping the padding
    columns shared by the whole batch (``trim_padding``) gives the same features for less compute.
    With CoOp (``prompt``) the context vectors follow the start token (a caption then keeps at most
    ``context_length - M`` of its tokens, the end token included).
    """

    kind = "open_clip"

    def __init__(self, clip: nn.Module, context_length: int):
        self.clip = clip
        self.context_length = context_length
        self.prompt = None
        self.trim_padding = (
            type(clip) is open_clip.CLIP
            and clip.attn_mask is not None
            and clip.text_pool_type in ("argmax", "eos")
        )

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.context_length)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.clip.transformer.resblocks

    def encode(self, tokens: Tensor) -> Tensor:
        clip = self.clip
        if not self.trim_padding:
            return clip.encode_text(tokens)
        if self.prompt is not None:
            tokens = self.prompt.make_room(tokens)
        length = max(1, int((tokens != 0).sum(dim=1).max()))
        tokens = tokens[:, :length]
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)
        if self.prompt is not None:
            x = self.prompt.insert(x)
        x = x + clip.positional_embedding[:length].to(cast_dtype)
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))
        x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
        return self._project(x)

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Intermediate text tokens in the joint space (final LayerNorm and projection)."""
        return self._project(self.clip.ln_final(tokens))

    def _project(self, x: Tensor) -> Tensor:
        proj = self.clip.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


class OpenClipImage:
    """The image tower of a CLIP model: ``encode(images)`` -> [B, embed_dim] (unnormalized)."""

    kind = "open_clip"

    def __init__(self, clip: nn.Module):
        self.clip = clip

    @property
    def width(self) -> int | None:
        return getattr(self.clip.visual, "output_dim", None)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.clip.visual.transformer.resblocks

    def encode(self, images: Tensor) -> Tensor:
        return self.clip.encode_image(images)

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Intermediate image tokens in the joint space (final LayerNorm and projection)."""
        visual = self.clip.visual
        x = visual.ln_post(tokens)
        return x @ visual.proj if visual.proj is not None else x
