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

from tbpr.data.tokenizer import Tokenizer
from tbpr.errors import ConfigError
from tbpr.losses import LogitScale
from tbpr.models.adapter import FeatureAdapter
from tbpr.models.freezing import drop_blocks, freeze_prefixes, resolve_layers
from tbpr.models.heads import build_ss_heads
from tbpr.models.mlm import CrossModalMLMHead
from tbpr.models.prompting import PromptContext

_CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(_CONFIG_DIR)


TUNINGS = ("full", "coop", "clip-adapter")


@dataclass
class ModelConfig:
    """Which architecture, which weights, the contrastive temperature, and what is trained.

    ``pretrained`` is ``None`` (random initialization), an open_clip pretrained tag such as
    ``"openai"`` (downloaded by open_clip; needs internet), or a path to a local checkpoint file.
    ``arch`` may also be ``hf-hub:org/repo`` or ``local-dir:/path`` as open_clip understands them.

    Training options (all off by default):
    ``text_attn_dropout`` drops self-attention weights in the text tower (TBPS-CLIP: 0.05);
    ``freeze`` lists parameter-name prefixes to lock (e.g. "clip.visual.conv1", names of the built model);
    ``freeze_text_layers`` / ``drop_text_layers`` lock / remove text blocks, numbered as in the architecture;
    ``tuning`` is "full", "coop" (only context vectors initialized from ``coop_init`` learn) or
    "clip-adapter" (only a residual image-feature adapter, ``adapter_alpha``/``adapter_reduction``, learns);
    ``ss_heads`` lists the towers ("image", "text") that get a SimCLR projection head;
    ``mlm_head`` adds IRRA's cross-modal MLM head with ``mlm_depth`` blocks (set when losses include mlm);
    ``id_classes`` > 0 adds IRRA's ID classifier over that many training identities (set by training when
    losses include id).
    """

    arch: str = "ViT-B-16"
    pretrained: str | None = None
    image_size: tuple[int, int] = (384, 128)
    context_length: int = 77
    temperature: float = 0.02
    learnable_temperature: bool = False
    extra: dict = field(default_factory=dict)
    text_attn_dropout: float = 0.0
    freeze: list[str] = field(default_factory=list)
    freeze_text_layers: list[int] = field(default_factory=list)
    drop_text_layers: list[int] = field(default_factory=list)
    tuning: str = "full"
    coop_init: str = "a pedestrian photo of"
    adapter_alpha: float = 0.4
    adapter_reduction: int = 4
    ss_heads: list[str] = field(default_factory=list)
    mlm_head: bool = False
    mlm_depth: int = 4
    id_classes: int = 0


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
        if config.tuning not in TUNINGS:
            raise ConfigError(f"model.tuning={config.tuning!r}: choose one of {list(TUNINGS)}")
        frozen_blocks = self._setup_text_layers(config)
        self.prompt = self._build_prompt(config) if config.tuning == "coop" else None
        self.adapter = (
            FeatureAdapter(self._embed_dim(), config.adapter_reduction, config.adapter_alpha)
            if config.tuning == "clip-adapter"
            else None
        )
        self.ss_heads = build_ss_heads(config.ss_heads, self._embed_dim() if config.ss_heads else 0)
        self.mlm_head = self._build_mlm_head(config) if config.mlm_head else None
        self.id_head = self._build_id_head(config.id_classes) if config.id_classes else None
        self._freeze(config, frozen_blocks)

    def _embed_dim(self) -> int:
        """Width of the joint feature space (read from the image tower)."""
        dim = getattr(self.clip.visual, "output_dim", None)
        if dim is None:
            raise ConfigError(
                f"model.arch={self.config.arch}: its image tower does not state its output width, which "
                "tuning=clip-adapter and model.ss_heads need; use an open_clip ViT or ResNet architecture"
            )
        return dim

    def _setup_text_layers(self, config: ModelConfig) -> list[int]:
        """Drop text blocks and set their attention dropout; returns the positions of the blocks to freeze."""
        uses_text_blocks = (
            config.drop_text_layers
            or config.freeze_text_layers
            or config.text_attn_dropout
            or config.tuning == "coop"
        )
        if not uses_text_blocks:
            return []
        if not self._trim_padding:
            raise ConfigError(
                f"model.arch={config.arch}: the text-layer options (drop/freeze_text_layers, text_attn_dropout, "
                "tuning=coop) need an open_clip CLIP text tower with a causal mask"
            )
        depth = len(self.text_blocks)
        drop = resolve_layers(config.drop_text_layers, depth, "model.drop_text_layers")
        freeze = resolve_layers(config.freeze_text_layers, depth, "model.freeze_text_layers")
        if set(freeze) & set(drop):
            raise ConfigError(
                f"model.freeze_text_layers: layers {sorted(set(freeze) & set(drop))} are dropped"
            )
        if drop:
            self.clip.transformer.resblocks = drop_blocks(self.text_blocks, drop)
            self.clip.transformer.layers = len(self.text_blocks)
        if not 0 <= config.text_attn_dropout < 1:
            raise ConfigError(
                f"model.text_attn_dropout={config.text_attn_dropout}: expected a probability in [0, 1)"
            )
        for block in self.text_blocks:
            block.attn.dropout = config.text_attn_dropout
        kept = [i for i in range(depth) if i not in drop]
        return [kept.index(i) for i in freeze]

    def _build_mlm_head(self, config: ModelConfig) -> CrossModalMLMHead:
        if not self._trim_padding or config.tuning == "coop":
            raise ConfigError(
                "model.mlm_head (losses.mlm) needs an open_clip CLIP text tower without prompt context; "
                f"got arch {config.arch}, tuning {config.tuning}"
            )
        if config.mlm_depth < 0:
            raise ConfigError(f"model.mlm_depth={config.mlm_depth}: expected a number of blocks >= 0")
        return CrossModalMLMHead(
            self._embed_dim(), self.clip.token_embedding.num_embeddings, config.mlm_depth
        )

    def _build_id_head(self, classes: int) -> nn.Linear:
        """IRRA's ID classifier: Linear(embed dim, classes), weights N(0, 0.001^2), biases 0."""
        if classes < 0:
            raise ConfigError(f"model.id_classes={classes}: expected a number of identities >= 0")
        head = nn.Linear(self._embed_dim(), classes)
        nn.init.normal_(head.weight, std=0.001)
        nn.init.zeros_(head.bias)
        return head

    def _build_prompt(self, config: ModelConfig) -> PromptContext:
        tokens = Tokenizer(config.context_length)(config.coop_init)[0]
        words = tokens[1 : int((tokens != 0).sum()) - 1].tolist()  # between the start and end tokens
        return PromptContext(self.clip.token_embedding, words)

    def _freeze(self, config: ModelConfig, text_blocks: list[int]) -> None:
        """CoOp and CLIP-Adapter lock all of CLIP; then the listed prefixes and text blocks are locked."""
        if config.tuning != "full":
            self.clip.requires_grad_(False)
        freeze_prefixes(self, config.freeze)
        for block in text_blocks:
            self.text_blocks[block].requires_grad_(False)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The multiplier 1/tau applied to cosine similarities (clamped at 100 as CLIP does)."""
        return self.temperature()

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image features (through the CLIP-Adapter when ``tuning="clip-adapter"``)."""
        if self.adapter is None:
            return self.clip.encode_image(images, normalize=normalize)
        x = self.adapter(self.clip.encode_image(images))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text features; padding past the batch's longest caption is skipped (see ``_trim_padding``).

        With CoOp the context vectors follow the start token (a caption then keeps at most
        ``context_length - M`` of its tokens, the end token included).
        """
        clip = self.clip
        if not self._trim_padding:
            return clip.encode_text(tokens, normalize=normalize)
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
        x = self._project_text(x)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "image_feats": self.encode_image(images),
            "text_feats": self.encode_text(tokens),
            "logit_scale": self.logit_scale,
        }

    def ss_project(self, tower: str, feats: torch.Tensor) -> torch.Tensor:
        """The SimCLR head of ``tower`` ("image" or "text") applied to its features (TBPS-CLIP feeds the
        unnormalized encoder output; the SS loss normalizes)."""
        if tower not in self.ss_heads:
            raise ConfigError(f"no SimCLR head for the {tower} tower: add {tower!r} to model.ss_heads")
        return self.ss_heads[tower](feats)

    def predict_masked(
        self, text_tokens: torch.Tensor, image_tokens: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """MLM vocabulary logits from the last text and image blocks' token outputs: [positions.sum(),
        vocab] at the bool [B, L] ``positions``, or [B, L, vocab] without them (``CrossModalMLMHead``)."""
        if self.mlm_head is None:
            raise ConfigError("no MLM head: set model.mlm_head (or add the mlm loss)")
        text, image = self.project_text_tokens(text_tokens), self.project_image_tokens(image_tokens)
        return self.mlm_head(text, image, positions)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """ID logits [B, id_classes] of (unnormalized) image or text features, as IRRA's classifier."""
        if self.id_head is None:
            raise ConfigError("no ID classifier: set model.id_classes (or add the id loss)")
        return self.id_head(feats.to(self.id_head.weight.dtype))

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
