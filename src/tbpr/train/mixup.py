"""PDG's feature-level mixup (eqs. 12-13) in training: who is mixed with whom, and the extra pairs in the loss.

``mixup:`` block of a recipe (docs/pdg.md)::

    mixup:
      p: 0.5     # probability per sample (0: off)
      lam: 0.5   # lambda: the sample's share of the mixed hidden states

With probability p a sample is mixed with a partner drawn uniformly from its batch among the samples of
another identity (any other sample if the batch holds one identity; none if it holds one sample). Both
draws come from a generator seeded by the sample's own seed (run seed, epoch, batch, dataset index;
``tbpr.train.reproducible``) on a stream of its own, so they do not depend on DataLoader workers or a
resume. Under DDP each process draws partners from its own share of the batch. The towers mix the
hidden states after their first block (``tbpr.models.mixup``); the mixed pair joins the contrastive
losses as a positive pair with an identity of its own.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from tbpr.errors import ConfigError
from tbpr.losses import Views
from tbpr.train.reproducible import sample_seed

MIXUP_STREAM = 1  # the per-sample seed's stream for mixup draws (0: the sample's augmentations)


@dataclass
class MixupConfig:
    """``p``: probability per sample that it is mixed with a partner; ``lam``: its share of the mixture."""

    p: float = 0.0
    lam: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ConfigError(f"mixup.p={self.p}: a probability, within [0, 1]")
        if not 0 <= self.lam <= 1:
            raise ConfigError(f"mixup.lam={self.lam}: the sample's share of the mixture, within [0, 1]")

    def check(self, views: set[str], noise_division: str, coteach: float = 0.0) -> None:
        """Refuse what the mixed pairs cannot join: second views, clean-sample division and co-teaching."""
        if not self.p:
            return
        paired = sorted(views & {"image2", "text2"})
        if paired:
            raise ConfigError(
                f"mixup.p={self.p}: the mixed pairs have no second view ({', '.join(paired)}, which losses "
                "mvs_*/ss_* read); use mixup without those losses"
            )
        if noise_division != "none":
            raise ConfigError(
                f"mixup.p={self.p} with noise.division={noise_division}: a mixed pair has no per-sample "
                "clean/noisy verdict; use one or the other"
            )
        if coteach:
            raise ConfigError(
                f"mixup.p={self.p} with noise.coteach={coteach}: the mixed pairs have no second (TSE) embedding "
                "for the peer to select them; use one or the other"
            )


def draw_partners(
    pids: list[int], indices: list[int], p: float, seed: int, epoch: int, batch: int
) -> tuple[Tensor, Tensor]:
    """(rows, partners): positions in the batch of the samples mixed and of their partners."""
    rows, partners = [], []
    for row, (pid, index) in enumerate(zip(pids, indices)):
        rng = random.Random(sample_seed(seed, epoch, batch, index, MIXUP_STREAM))
        if rng.random() >= p:
            continue
        others = [j for j, other in enumerate(pids) if other != pid] or [
            j for j in range(len(pids)) if j != row
        ]
        if others:
            rows.append(row)
            partners.append(rng.choice(others))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(partners, dtype=torch.long)


def with_mixed_pairs(views: Views, image_mix: Tensor, text_mix: Tensor, mixed: Tensor) -> Views:
    """``views`` with the mixed pairs (rows of ``image_mix``/``text_mix`` [N, D] where ``mixed`` [N]) appended
    to image and text, each with a person id no other row has; ``text_orig``/``replaced`` get zero rows."""
    mixed = mixed.bool()
    image_mix, text_mix = image_mix[mixed], text_mix[mixed]
    count = len(image_mix)
    if not count:
        return views
    first = int(views.pids.max()) + 1 if len(views.pids) else 0
    new_ids = torch.arange(first, first + count, device=views.pids.device, dtype=views.pids.dtype)
    extra = {}
    if views.text_orig is not None:
        extra["text_orig"] = torch.cat([views.text_orig, text_mix.new_zeros(text_mix.shape)])
        extra["replaced"] = torch.cat([views.replaced.bool(), mixed.new_zeros(count)])
    return dataclasses.replace(
        views,
        image=torch.cat([views.image, image_mix.to(views.image.dtype)]),
        text=torch.cat([views.text, text_mix.to(views.text.dtype)]),
        pids=torch.cat([views.pids, new_ids]),
        **extra,
    )
