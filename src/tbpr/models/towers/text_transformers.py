"""A text tower from Hugging Face transformers: any ``AutoModel`` encoder (BERT, MiniLM, ...) with its tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor, nn

from tbpr.data.tokenizer import PretrainedTokenizer
from tbpr.errors import ConfigError
from tbpr.models.towers.config import TowerConfig
from tbpr.models.towers.weights import load_weight_file, resolve_source

FIELD = "model.text_tower"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would flood the training log


def _one_line(err: Exception) -> str:
    """A transformers / hub message on one line (theirs span several)."""
    return " ".join(str(err).split())


def _model_source(cfg: TowerConfig) -> str:
    """The folder or hub name of the model; a path that does not exist is a ConfigError."""
    name = resolve_source(cfg.name, f"{FIELD}.name")
    if not name.startswith((".", "/", "~")):
        return name  # a hub name
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{FIELD}.name={cfg.name!r}: no such model folder")
    return str(folder)


def load_tokenizer(cfg: TowerConfig, context_length: int) -> PretrainedTokenizer:
    """The tokenizer that ships with the model at ``cfg.name``."""
    from transformers import AutoTokenizer

    name = _model_source(cfg)
    _quiet_transformers()
    # captions are tokenized one at a time in DataLoader workers: the Rust thread pool gains nothing there
    # and warns (then disables itself) at every fork
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        hf = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{FIELD}.name={cfg.name!r}: no tokenizer could be loaded ({_one_line(err)})"
        ) from err
    try:
        return PretrainedTokenizer(hf, context_length)
    except ValueError as err:
        raise ConfigError(f"{FIELD}.name={cfg.name!r}: {err}") from err


class TransformersTextTower(nn.Module):
    """``encode(tokens)`` -> [B, width]: the encoder's last hidden states pooled at the first token
    ([CLS], PDG eq. 3) or averaged over the caption's tokens (``cfg.pooling``)."""

    kind = "transformers"

    def __init__(self, cfg: TowerConfig, context_length: int):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        name = _model_source(cfg)
        _quiet_transformers()
        try:
            config, unused = AutoConfig.from_pretrained(name, return_unused_kwargs=True, **cfg.options)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"{FIELD}.name={cfg.name!r}: not a transformers model folder or reachable hub name ({_one_line(err)})"
            ) from err
        if unused:
            raise ConfigError(f"{FIELD}.options: {sorted(unused)} are not fields of {cfg.name}'s config")
        try:
            if cfg.weights == "pretrained":
                self.model = AutoModel.from_pretrained(name, config=config)
            else:
                self.model = AutoModel.from_config(config)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"{FIELD}: {cfg.name} (options {cfg.options}, weights {cfg.weights}) could not be built: {_one_line(err)}"
            ) from err
        if cfg.weights not in ("pretrained", "random"):
            load_weight_file(self.model, resolve_source(cfg.weights, f"{FIELD}.weights"), f"{FIELD}.weights")
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # BERT's next-sentence pooler: unused, and DDP rejects unused weights
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and context_length > limit:
            raise ConfigError(
                f"model.context_length={context_length}: {cfg.name} has {limit} positions; use at most {limit}"
            )
        self.pooling = cfg.pooling
        self.width: int = self.model.config.hidden_size
        self.tokenizer = load_tokenizer(cfg, context_length)

    @property
    def blocks(self) -> nn.ModuleList:
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if layers is None:
            raise ConfigError(f"{type(self.model).__name__}: its blocks are not at encoder.layer")
        return layers

    def hidden_states(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Last hidden states [B, L, width] and the attention mask [B, L], L = longest caption in the batch
        (padding past it changes nothing: the mask hides padding from every token)."""
        mask = tokens != self.tokenizer.pad_id
        length = max(1, int(mask.sum(dim=1).max()))
        tokens, mask = tokens[:, :length], mask[:, :length]
        return self.model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state, mask

    def encode(self, tokens: Tensor) -> Tensor:
        x, mask = self.hidden_states(tokens)
        if self.pooling == "first":
            return x[:, 0]
        weights = mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
