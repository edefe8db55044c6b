"""RDE's second embedding (TSE, Token Selection Embedding; Qin et al., CVPR 2024, QinYang79/RDE).

Beside the global embedding (BGE: the class token / end-of-text token), each tower picks the ``ratio``
share of its tokens that the last block's attention from that token weighs most, L2-normalizes their
last-layer features in the joint space (the tower's final LayerNorm and projection), maps each through
``Linear(x) + MLP(x)`` (MLP: Linear - BatchNorm - ReLU - Linear, hidden width out/2) and max-pools them.

How many: image ``int(patches * ratio)``; text ``int((context_length - 2) * ratio)``, at most the caption's
own tokens (start, end and padding never count), as RDE's ``maxk_pool1d_var`` over ``lengths``.
Attention: the head average of ``softmax(q k^T / sqrt(d))`` of the class / end token's query over the
block's keys (the text's causal mask: keys up to the end token), as ``nn.MultiheadAttention`` returns
with ``need_weights=True``; it is computed from the last block's input, so the towers run unchanged.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tbpr.errors import ConfigError


@dataclass
class TseConfig:
    """``model.tse``: ``ratio`` of the tokens selected (RDE: 0.3); ``dim`` the TSE width (null: twice the
    joint width, RDE's 1024 for CLIP ViT-B/16's 512)."""

    ratio: float = 0.3
    dim: int | None = None


def select_tokens(attention: Tensor, selectable: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Positions [B, k'] of the ``k`` highest-``attention`` selectable tokens per row (k' = min(k, L)), and
    which of them are real [B, k'] (a row with fewer than k selectable tokens keeps only those)."""
    scores = attention.float().masked_fill(~selectable, float("-inf"))
    top, index = scores.topk(min(k, scores.shape[1]), dim=1)
    return index, torch.isfinite(top)


def attention_row(block: nn.Module, x: Tensor, query: Tensor, keys: Tensor) -> Tensor:
    """Head-averaged attention [B, L] of position ``query`` [B] over the ``keys`` [B, L] (bool) in ``block``
    (an open_clip ``ResidualAttentionBlock``) given its batch-first input ``x`` [B, L, W]."""
    attn = block.attn
    width, heads = attn.embed_dim, attn.num_heads
    h = block.ln_1(x)
    rows = torch.arange(len(x), device=x.device)
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(h[rows, query], weight[:width], None if bias is None else bias[:width])
    k = F.linear(h, weight[width : 2 * width], None if bias is None else bias[width : 2 * width])
    d = width // heads
    logits = torch.einsum("bhd,blhd->bhl", q.view(len(x), heads, d), k.view(*k.shape[:2], heads, d))
    logits = (logits / math.sqrt(d)).float().masked_fill(~keys[:, None, :], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)


class SelectionHead(nn.Module):
    """``Linear(x) + MLP(x)`` of the L2-normalized selected tokens, max-pooled over the real ones."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        hidden = max(1, out_dim // 2)
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, tokens: Tensor, real: Tensor) -> Tensor:
        """``tokens`` [B, k, D], ``real`` [B, k] -> [B, out_dim] (BatchNorm sees the real tokens only)."""
        x = F.normalize(tokens[real].float(), dim=-1)
        y = self.linear(x) + self.mlp(x)
        out = y.new_full((*real.shape, y.shape[-1]), float("-inf"))
        return out.index_put((real,), y).amax(dim=1)


class _LastBlock:
    """The input and output of a block, recorded by hooks during a forward."""

    input: Tensor | None = None
    output: Tensor | None = None


@contextmanager
def _record(block: nn.Module, batch_first: bool):
    seen = _LastBlock()

    def pre(_module, args):
        seen.input = args[0] if batch_first else args[0].transpose(0, 1)

    def post(_module, _args, output):
        seen.output = output if batch_first else output.transpose(0, 1)

    handles = [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class TokenSelection(nn.Module):
    """The TSE heads of a ``DualEncoder`` over open_clip CLIP towers (``check_towers`` says which qualify)."""

    def __init__(self, config: TseConfig, joint_dim: int, context_length: int):
        super().__init__()
        if not 0 < config.ratio <= 1:
            raise ConfigError(f"model.tse.ratio={config.ratio}: expected a share of the tokens in (0, 1]")
        dim = config.dim or 2 * joint_dim
        if dim < 2:
            raise ConfigError(f"model.tse.dim={config.dim}: expected a width >= 2")
        self.ratio = config.ratio
        self.text_k = max(1, int((context_length - 2) * config.ratio))
        self.image = SelectionHead(joint_dim, dim)
        self.text = SelectionHead(joint_dim, dim)

    def encode_image(self, model, images: Tensor, rows: int | None = None) -> tuple[Tensor, Tensor]:
        """(global [B, D] unnormalized, TSE [rows, dim]) of ``images`` from one forward of the image tower."""
        visual = model.clip.visual
        with _record(model.image_blocks[-1], visual.transformer.batch_first) as seen:
            pooled = model.global_image(images)
        x, out = seen.input[:rows], seen.output[:rows]
        keys = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        attention = attention_row(
            model.image_blocks[-1], x, torch.zeros_like(keys[:, 0], dtype=torch.long), keys
        )
        selectable = keys.clone()
        selectable[:, 0] = False  # the class token
        index, real = select_tokens(attention, selectable, max(1, int((x.shape[1] - 1) * self.ratio)))
        return pooled, self._pool(self.image, model.project_image_tokens(out), index, real)

    def encode_text(self, model, tokens: Tensor, rows: int | None = None) -> tuple[Tensor, Tensor]:
        """(global [B, D] unnormalized, TSE [rows, dim]) of token rows from one forward of the text tower."""
        with _record(model.text_blocks[-1], model.clip.transformer.batch_first) as seen:
            pooled = model.global_text(tokens)
        x, out = seen.input[:rows], seen.output[:rows]
        ids = tokens[:rows, : x.shape[1]]
        end = ids.argmax(dim=-1)  # the end-of-text token has the largest id (open_clip's argmax pooling)
        position = torch.arange(x.shape[1], device=x.device)[None, :]
        keys = position <= end[:, None]  # the causal mask of the end token's query
        selectable = (position > 0) & (position < end[:, None])
        attention = attention_row(model.text_blocks[-1], x, end, keys)
        index, real = select_tokens(attention, selectable, self.text_k)
        return pooled, self._pool(self.text, model.project_text_tokens(out), index, real)

    @staticmethod
    def _pool(head: SelectionHead, feats: Tensor, index: Tensor, real: Tensor) -> Tensor:
        picked = feats.gather(1, index[..., None].expand(-1, -1, feats.shape[-1]))
        return head(picked, real)


def refuse_other_towers(config) -> None:
    """Raise ConfigError when ``model.tse`` is asked of towers that are not open_clip's (a ``ModelConfig``)."""
    if config.tse is not None and config.text_tower is not None:
        raise ConfigError(
            f"model.tse needs the last layer's attention weights, which tbpr reads from open_clip CLIP towers "
            f"only; model.arch={config.arch} has a {config.text_tower.kind} text tower ({config.text_tower.name}) "
            f"and a {config.image_tower.kind} image tower ({config.image_tower.name}): use an open_clip ViT "
            "architecture (e.g. ViT-B-16, tbpr-tiny) or remove model.tse"
        )


def check_towers(model) -> None:
    """Raise ConfigError unless ``model`` (a DualEncoder over open_clip towers) has what TSE reads attention
    weights from: a CLIP ViT with a class token and a causal text tower pooled at the end token."""
    config = model.config
    visual = model.clip.visual
    problems = []
    if not isinstance(visual, open_clip.transformer.VisionTransformer) or visual.pool_type != "tok":
        problems.append(f"its image tower ({type(visual).__name__}) is not a ViT pooled at a class token")
    if not model.text_tower.trim_padding or model.clip.text_pool_type != "argmax":
        problems.append("its text tower is not a causal CLIP text transformer pooled at the end token")
    blocks = [*model.text_blocks, *model.image_blocks] if not problems else []
    if any(not isinstance(getattr(b, "attn", None), nn.MultiheadAttention) for b in blocks):
        problems.append("its blocks do not use torch.nn.MultiheadAttention")
    if config.tuning == "coop":
        problems.append("tuning=coop inserts context vectors among the caption's tokens")
    if problems:
        raise ConfigError(f"model.tse with model.arch={config.arch}: {'; '.join(problems)}")
