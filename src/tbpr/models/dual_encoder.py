"""A dual encoder over a pair of towers (one open_clip CLIP model, or transformers text + timm image),
with access to per-layer token features."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from tbpr.errors import ConfigError
from tbpr.losses import LogitScale
from tbpr.models.adapter import FeatureAdapter
from tbpr.models.freezing import drop_blocks, freeze_batchnorm_statistics, freeze_prefixes, resolve_layers
from tbpr.models.heads import build_ss_heads
from tbpr.models.mlm import CrossModalMLMHead
from tbpr.models.prompting import PromptContext
from tbpr.models.towers import (
    PRESETS,
    OpenClipImage,
    OpenClipText,
    TowerConfig,
    build_image_tower,
    build_text_tower,
    create_open_clip,
    fill_tower,
)
from tbpr.models.tse import TokenSelection, TseConfig, check_towers, refuse_other_towers

TUNINGS = ("full", "coop", "clip-adapter")


@dataclass
class ModelConfig:
    """Which architecture, which weights, the contrastive temperature, and what is trained.

    ``arch`` is an open_clip architecture (both towers from one CLIP model) or a tower architecture
    (``PRESETS``: "tbpr-lite", or "towers" to spell out both): then ``text_tower`` / ``image_tower``
    (``TowerConfig``; null fields come from the preset) choose each tower and its weights, and
    ``embed_dim`` (null: the text tower's width) is the shared space a linear projection maps a tower
    of another width into. For open_clip architectures both stay null.

    ``pretrained`` (open_clip only) is ``None`` (random initialization), an open_clip pretrained tag such as
    ``"openai"`` (downloaded by open_clip; needs internet), or a path to a local checkpoint file.
    ``arch`` may also be ``hf-hub:org/repo`` or ``local-dir:/path`` as open_clip understands them.

    Training options (all off by default):
    ``text_attn_dropout`` drops self-attention weights in the text tower (TBPS-CLIP: 0.05);
    ``freeze`` lists parameter-name prefixes to lock (e.g. "clip.visual.conv1", names of the built model;
    a BatchNorm layer left with no trainable parameter also keeps its running statistics);
    ``freeze_text_layers`` / ``drop_text_layers`` lock / remove text blocks, numbered as in the architecture;
    ``tuning`` is "full", "coop" (only context vectors initialized from ``coop_init`` learn) or
    "clip-adapter" (only a residual image-feature adapter, ``adapter_alpha``/``adapter_reduction``, learns);
    ``ss_heads`` lists the towers ("image", "text") that get a SimCLR projection head;
    ``mlm_head`` adds IRRA's cross-modal MLM head with ``mlm_depth`` blocks (set when losses include mlm);
    ``id_classes`` > 0 adds IRRA's ID classifier over that many training identities (set by training when
    losses include id);
    ``tse`` (``TseConfig``) adds RDE's second embedding (``tbpr.models.tse``) beside the global one.
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
    text_tower: TowerConfig | None = None
    image_tower: TowerConfig | None = None
    embed_dim: int | None = None
    tse: TseConfig | None = None

    def __post_init__(self) -> None:
        preset = PRESETS.get(self.arch)
        if preset is None:
            if self.text_tower is not None or self.image_tower is not None or self.embed_dim is not None:
                raise ConfigError(
                    f"model.text_tower/image_tower/embed_dim are set, but model.arch={self.arch!r} is one open_clip "
                    f"model; set model.arch to a tower architecture ({', '.join(PRESETS)})"
                )
            return
        self.text_tower = fill_tower(self.arch, "text_tower", self.text_tower)
        self.image_tower = fill_tower(self.arch, "image_tower", self.image_tower)
        if self.embed_dim is None:
            self.embed_dim = preset.get("embed_dim")
        if self.pretrained is not None:
            raise ConfigError(
                f"model.pretrained={self.pretrained!r}: model.arch={self.arch} takes its weights per tower "
                "(model.text_tower.weights, model.image_tower.weights)"
            )
        refuse_other_towers(self)  # when the recipe is read, before any data or weights


def available_architectures() -> list[str]:
    return [*PRESETS, *open_clip.list_models()]


class DualEncoder(nn.Module):
    """A text tower and an image tower (``tbpr.models.towers``) plus a shared temperature.

    The model only encodes tensors: tokenization, decoding and augmentation live in ``tbpr.data``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.clip = None
        self.text_proj = self.image_proj = None
        if config.text_tower is None:
            self._build_open_clip(config)
        else:
            self._build_towers(config)
        self._trim_padding = self.text_tower.kind == "open_clip" and self.text_tower.trim_padding
        self.temperature = LogitScale(config.temperature, learnable=config.learnable_temperature)
        if config.tuning not in TUNINGS:
            raise ConfigError(f"model.tuning={config.tuning!r}: choose one of {list(TUNINGS)}")
        frozen_blocks = self._setup_text_layers(config)
        self.prompt = self._build_prompt(config) if config.tuning == "coop" else None
        if self.clip is not None:
            self.text_tower.prompt = self.prompt
        self.adapter = (
            FeatureAdapter(self._embed_dim(), config.adapter_reduction, config.adapter_alpha)
            if config.tuning == "clip-adapter"
            else None
        )
        self.ss_heads = build_ss_heads(config.ss_heads, self._embed_dim() if config.ss_heads else 0)
        self.mlm_head = self._build_mlm_head(config) if config.mlm_head else None
        self.id_head = self._build_id_head(config.id_classes) if config.id_classes else None
        self.tse = None
        if config.tse is not None:
            check_towers(self)
            self.tse = TokenSelection(config.tse, self._embed_dim(), config.context_length)
        self._freeze(config, frozen_blocks)

    def _build_open_clip(self, config: ModelConfig) -> None:
        if config.arch not in open_clip.list_models() and ":" not in config.arch:
            raise ConfigError(
                f"model.arch={config.arch!r} is not an open_clip architecture (nor a tower architecture); "
                f"choose one of tbpr-micro, tbpr-tiny, ViT-B-16, ViT-B-32 (or any of open_clip.list_models()), "
                f"or {', '.join(PRESETS)}"
            )
        self.clip = create_open_clip(config)
        # tbpr's temperature replaces open_clip's own (kept only so open_clip checkpoints load strictly)
        self.clip.logit_scale.requires_grad_(False)
        self.text_tower = OpenClipText(self.clip, config.context_length)
        self.image_tower = OpenClipImage(self.clip)

    def _build_towers(self, config: ModelConfig) -> None:
        """A transformers text tower and a timm image tower, each projected to ``embed_dim`` if wider/narrower."""
        self.text_tower = build_text_tower(config.text_tower, config.context_length)
        self.image_tower = build_image_tower(config.image_tower, tuple(config.image_size))
        dim = config.embed_dim or self.text_tower.width
        if dim < 1:
            raise ConfigError(f"model.embed_dim={config.embed_dim}: expected a width >= 1")
        if self.text_tower.width != dim:
            self.text_proj = nn.Linear(self.text_tower.width, dim, bias=False)
        if self.image_tower.width != dim:
            self.image_proj = nn.Linear(self.image_tower.width, dim, bias=False)
        unsupported = [
            name
            for name, used in (
                ("model.drop_text_layers", config.drop_text_layers),
                ("model.freeze_text_layers", config.freeze_text_layers),
                ("model.text_attn_dropout", config.text_attn_dropout),
                (f"model.tuning={config.tuning}", config.tuning != "full"),
            )
            if used
        ]
        if unsupported:
            raise ConfigError(
                f"{', '.join(unsupported)}: implemented for open_clip towers only (they edit CLIP's text blocks "
                f"or freeze the CLIP model); model.arch={config.arch} has {config.text_tower.kind} and "
                f"{config.image_tower.kind} towers"
            )

    @property
    def tokenizer(self):
        """The text tower's own tokenizer (``tbpr.data.tokenizer``: CLIP BPE or a Hugging Face tokenizer)."""
        return self.text_tower.tokenizer

    def _embed_dim(self) -> int:
        """Width of the joint feature space (``embed_dim`` for towers; an open_clip image tower states it)."""
        if self.clip is None:
            return self.config.embed_dim or self.text_tower.width
        dim = self.image_tower.width
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
        if not self._trim_padding or config.tuning == "coop":  # also refuses transformers/timm towers
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
        tokens = self.tokenizer(config.coop_init)[0]
        words = tokens[1 : int((tokens != 0).sum()) - 1].tolist()  # between the start and end tokens
        return PromptContext(self.clip.token_embedding, words)

    def _freeze(self, config: ModelConfig, text_blocks: list[int]) -> None:
        """CoOp and CLIP-Adapter lock all of CLIP; then the listed prefixes and text blocks are locked."""
        if config.tuning != "full":
            self.clip.requires_grad_(False)
        freeze_prefixes(self, config.freeze)
        for block in text_blocks:
            self.text_blocks[block].requires_grad_(False)

    def train(self, mode: bool = True) -> DualEncoder:
        """``nn.Module.train``, except that frozen BatchNorm layers (all parameters locked by
        ``model.freeze`` or ``tuning``) keep their running statistics and stay in eval mode."""
        super().train(mode)
        freeze_batchnorm_statistics(self)
        return self

    @property
    def logit_scale(self) -> torch.Tensor:
        """The multiplier 1/tau applied to cosine similarities (clamped at 100 as CLIP does)."""
        return self.temperature()

    def global_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalized global image features (through the CLIP-Adapter when ``tuning="clip-adapter"``)."""
        x = self.image_tower.encode(images)
        if self.image_proj is not None:
            x = self.image_proj(x)
        return self.adapter(x) if self.adapter is not None else x

    def global_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalized global text features of token rows made by ``self.tokenizer``."""
        x = self.text_tower.encode(tokens)
        return self.text_proj(x) if self.text_proj is not None else x

    def image_features(self, images: torch.Tensor, rows: int | None = None):
        """(global features, TSE features of the first ``rows`` images or None without ``model.tse``), both
        unnormalized, from one forward."""
        if self.tse is None:
            return self.global_image(images), None
        return self.tse.encode_image(self, images, rows)

    def text_features(self, tokens: torch.Tensor, rows: int | None = None):
        """(global features, TSE features of the first ``rows`` captions or None), as ``image_features``."""
        if self.tse is None:
            return self.global_text(tokens), None
        return self.tse.encode_text(self, tokens, rows)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The retrieval embedding of images (``embedding``); ``normalize=False``: the global features as they
        are (training)."""
        return self.embedding(*self.image_features(images)) if normalize else self.global_image(images)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The retrieval embedding of token rows made by ``self.tokenizer``, as ``encode_image``."""
        return self.embedding(*self.text_features(tokens)) if normalize else self.global_text(tokens)

    @staticmethod
    def embedding(global_feats: torch.Tensor, tse_feats: torch.Tensor | None = None) -> torch.Tensor:
        """The L2-normalized global features; with TSE features, [g/|g|, t/|t|] / sqrt(2): a unit vector whose
        dot products are the mean of the two cosine similarities, RDE's (S_BGE + S_TSE) / 2."""
        g = F.normalize(global_feats, dim=-1)
        if tse_feats is None:
            return g
        return torch.cat([g, F.normalize(tse_feats.to(g.dtype), dim=-1)], dim=-1) / math.sqrt(2)

    def split_embedding(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(global, TSE or None) unit vectors of retrieval embeddings made by ``embedding``."""
        if self.tse is None:
            return feats, None
        dim = self._embed_dim()
        return feats[:, :dim] * math.sqrt(2), feats[:, dim:] * math.sqrt(2)

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
        return self.image_tower.blocks

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.text_tower.blocks

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
        """Map intermediate image tokens into the joint space (the tower's final norm and projection)."""
        x = self.image_tower.project_tokens(tokens)
        return self.image_proj(x) if self.image_proj is not None else x

    def project_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map intermediate text tokens into the joint space (the tower's final norm and projection)."""
        if not hasattr(self.text_tower, "project_tokens"):
            raise ConfigError(
                f"the {self.text_tower.kind} text tower has no token-level projection (token features, NAM "
                "and the MLM head need an open_clip text tower)"
            )
        x = self.text_tower.project_tokens(tokens)
        return self.text_proj(x) if self.text_proj is not None else x

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
                self.global_image(images)
            if tokens is not None:
                self.global_text(tokens)
        for tower, project_fn in (("image", self.project_image_tokens), ("text", self.project_text_tokens)):
            if store[tower]:
                x = next(iter(store[tower].values()))
                x = project_fn(x) if project else x
                out[tower] = F.normalize(x, dim=-1) if normalize else x
        return out
