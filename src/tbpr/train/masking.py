"""Caption token masking for training: Equal Masking (EM) and Noise-Aware Masking (NAM, MLLM4Text-ReID).

EM masks every real caption token (strictly between the start and end tokens) with probability ``p``.
NAM gives token i of a caption the probability r'_i = clip(r_i - mean(r) + p, 0, 1) with
r_i = 1 - max_j cos(t_i, v_j) between the unmasked caption's token features and its image's patch
features at one intermediate layer (``nam_probabilities``). The r' computed during epoch e are used in
epoch e + 1 (``MaskTable``); epoch 1 uses the constant p. The table lives on the CPU, one row per
caption of the training split, and is saved in the checkpoint.

Masked tokens become the mask token (``replace="mask"``) or, BERT-style (``replace="bert"``), the mask
token 80%, a random vocabulary token 10%, unchanged 10%. The standard CLIP vocabulary has no mask token:
as IRRA does, id 49405 (the last BPE merge, a rare word piece) is used as <|mask|>, unless the tokenizer
defines one. Draws come from a generator per sample seeded by (run seed, epoch, caption index), so a
caption's mask does not depend on batch composition, DataLoader workers, processes or resumption.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tbpr.errors import ConfigError
from tbpr.models.checkpoint import atomic_torch_save

log = logging.getLogger(__name__)

IRRA_MASK_ID = 49405
MODES = ("none", "em", "nam")
REPLACE = ("mask", "bert")
SCOPES = ("all", "mlm")
_SEED_TAG = 0x6D61736B  # separates masking seeds from the augmentation seeds of the same sample


@dataclass
class MaskingConfig:
    """``mode``: none | em | nam; ``p``: mean masking probability of a caption's real tokens.

    ``layer``: the (0-based, negatives from the end) block of both towers whose token features NAM
    compares; None scales the 10th of 12 blocks to each tower's depth: round(10 * depth / 12) - 1.
    ``replace``: "mask" or "bert" (80/10/10). ``dump``: write run_dir/nam/epoch_XXX.pt after each epoch
    (the NAM probabilities for the next epoch, one float16 row per caption). ``scope``: "all", the masked
    captions replace the captions in every loss (MLLM4Text-ReID), or "mlm", only the MLM loss reads them
    and the other losses read the unmasked captions (IRRA).
    """

    mode: str = "none"
    p: float = 0.15
    layer: int | None = None
    replace: str = "mask"
    dump: bool = True
    scope: str = "all"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"masking.mode={self.mode!r}: choose one of {list(MODES)}")
        if self.replace not in REPLACE:
            raise ConfigError(f"masking.replace={self.replace!r}: choose one of {list(REPLACE)}")
        if self.scope not in SCOPES:
            raise ConfigError(f"masking.scope={self.scope!r}: choose one of {list(SCOPES)}")
        if not 0 <= self.p <= 1:
            raise ConfigError(f"masking.p={self.p}: expected a probability in [0, 1]")


def nam_layer(layer: int | None, depth: int, tower: str) -> int:
    """The 0-based block NAM reads in a ``depth``-block tower (see ``MaskingConfig.layer``)."""
    if layer is None:
        return max(0, round(10 * depth / 12) - 1)
    if not -depth <= layer < depth:
        raise ConfigError(f"masking.layer={layer}: the {tower} tower has {depth} blocks (0..{depth - 1})")
    return layer % depth


def real_tokens(tokens: Tensor, sot_id: int, eot_id: int, pad_id: int = 0) -> Tensor:
    """Bool mask of the caption's own tokens: not padding, not the start or end token."""
    return (tokens != pad_id) & (tokens != sot_id) & (tokens != eot_id)


def nam_probabilities(sim: Tensor, real: Tensor, p: float) -> Tensor:
    """Per-token masking probabilities r' from token-patch cosine similarities.

    ``sim``: [L, P] or [B, L, P]; ``real``: bool [L] or [B, L] (``real_tokens``). r_i = 1 - max_j s_ij,
    r'_i = r_i - mean(r over the caption's real tokens) + p, clipped to [0, 1]; 0 elsewhere.
    """
    r = 1 - sim.float().amax(dim=-1)
    real = real.to(r.device)
    count = real.sum(dim=-1, keepdim=True).clamp(min=1)
    mean = (r * real).sum(dim=-1, keepdim=True) / count
    return torch.where(real, (r - mean + p).clamp(0, 1), torch.zeros_like(r))


def sample_generators(seed: int, epoch: int, indices: list[int]) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by (run seed, epoch, caption index)."""
    gens = []
    for index in indices:
        state = np.random.SeedSequence([seed, epoch, int(index), _SEED_TAG]).generate_state(2, np.uint64)
        gens.append(torch.Generator().manual_seed(int(state[0] >> np.uint64(1))))
    return gens


def apply_masking(
    tokens: Tensor,
    probs: Tensor,
    generators: list[torch.Generator],
    *,
    sot_id: int,
    eot_id: int,
    mask_id: int = IRRA_MASK_ID,
    replace: str = "mask",
    pad_id: int = 0,
    random_range: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask a batch of token rows (CPU): -> (masked tokens, bool [B, L] of the chosen positions).

    Position i of row b is chosen with probability ``probs[b, i]`` (only real tokens); chosen tokens
    become ``mask_id``, or with ``replace="bert"`` ``mask_id`` 80%, a random word piece 10%, themselves
    10%. Random word pieces are drawn from ``random_range`` [low, high) (the tokenizer's; CLIP: 1 to
    ``sot_id - 1``), skipping ``mask_id`` if it lies inside.
    """
    if replace not in REPLACE:
        raise ConfigError(f"masking.replace={replace!r}: choose one of {list(REPLACE)}")
    if len(generators) != len(tokens):
        raise ValueError(f"{len(generators)} generators for {len(tokens)} rows")
    rows, length = tokens.shape
    draws = torch.stack([torch.rand(2, length, generator=g) for g in generators])  # [B, 2, L]
    chosen = (draws[:, 0] < probs.float()) & real_tokens(tokens, sot_id, eot_id, pad_id)
    masked = tokens.clone()
    if replace == "mask":
        masked[chosen] = mask_id
        return masked, chosen
    kind = draws[:, 1]
    low, high = random_range or (1, sot_id - 1)
    inside = low <= mask_id < high
    random_ids = torch.stack([torch.randint(low, high - inside, (length,), generator=g) for g in generators])
    if inside:
        random_ids = random_ids + (random_ids >= mask_id).long()  # skip the mask token itself
    masked = torch.where(chosen & (kind < 0.8), torch.full_like(tokens, mask_id), masked)
    masked = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, masked)
    return masked, chosen


class MaskTable:
    """Per-caption masking probabilities on the CPU: ``current`` serves this epoch, ``next`` collects r'.

    Rows start at the constant p; ``advance()`` (at each epoch end) makes ``next`` current and starts
    the next collection from it, so captions not seen in an epoch keep their probabilities.
    """

    def __init__(self, num_captions: int, context_length: int, p: float):
        self.current = torch.full((num_captions, context_length), p, dtype=torch.float16)
        self.next = self.current.clone()

    def rows(self, indices: Tensor) -> Tensor:
        return self.current[indices.cpu()].float()

    def update(self, indices: Tensor, probs: Tensor) -> None:
        self.next[indices.cpu()] = probs.detach().cpu().to(self.next.dtype)

    def advance(self) -> None:
        self.current = self.next
        self.next = self.current.clone()

    def state_dict(self) -> dict:
        return {"current": self.current, "next": self.next}

    def load_state_dict(self, state: dict) -> None:
        if state["current"].shape != self.current.shape:
            raise ConfigError(
                f"the checkpoint's NAM table is {tuple(state['current'].shape)}, this run needs "
                f"{tuple(self.current.shape)}: resume with the same data and model.context_length"
            )
        self.current, self.next = state["current"].clone(), state["next"].clone()


class TokenMasker:
    """What the trainer needs: mask a batch, record NAM probabilities, hand over at epoch end, dump."""

    def __init__(self, cfg: MaskingConfig, num_captions: int, context_length: int, tokenizer, seed: int):
        self.cfg = cfg
        self.seed = seed
        self.sot_id, self.eot_id, self.pad_id = tokenizer.sot_id, tokenizer.eot_id, tokenizer.pad_id
        self.mask_id = tokenizer.mask_id if tokenizer.mask_id is not None else IRRA_MASK_ID
        self.random_range = tokenizer.random_range
        self.table = MaskTable(num_captions, context_length, cfg.p) if cfg.mode == "nam" else None

    @property
    def nam(self) -> bool:
        return self.table is not None

    def mask(self, tokens: Tensor, caption_indices: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        """The masked copy of a batch of (CPU) token rows of the given training captions, and the bool
        [B, L] of the chosen positions (``apply_masking``)."""
        indices = caption_indices.tolist()
        probs = self.table.rows(caption_indices) if self.nam else torch.full(tokens.shape, self.cfg.p)
        return apply_masking(
            tokens,
            probs,
            sample_generators(self.seed, epoch, indices),
            sot_id=self.sot_id,
            eot_id=self.eot_id,
            mask_id=self.mask_id,
            replace=self.cfg.replace,
            pad_id=self.pad_id,
            random_range=self.random_range,
        )

    def probabilities(self, max_sim: Tensor, tokens: Tensor) -> Tensor:
        """r' [B, L] from each token's maximum patch similarity [B, L] (as ``nam_probabilities``)."""
        real = real_tokens(tokens, self.sot_id, self.eot_id, self.pad_id).to(max_sim.device)
        return nam_probabilities(max_sim.unsqueeze(-1), real, self.cfg.p)

    def end_epoch(self, epoch: int, out_dir: Path, caption_ids: list[int], main: bool) -> None:
        """Epoch ``epoch`` (1-based) is done: dump the probabilities it computed, then make them current."""
        if not self.nam:
            return
        if main and self.cfg.dump:
            payload = {"epoch": epoch, "caption_ids": torch.tensor(caption_ids), "probs": self.table.next}
            atomic_torch_save(payload, out_dir / "nam" / f"epoch_{epoch:03d}.pt")
        self.table.advance()

    def state_dict(self) -> dict:
        return self.table.state_dict() if self.nam else {}

    def load_state_dict(self, state: dict) -> None:
        if self.nam and state:
            self.table.load_state_dict(state)
