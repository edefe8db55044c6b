"""Training batch samplers: deterministic per (seed, epoch), distributed-aware and resumable.

``batch_size`` is the GLOBAL batch: every epoch draws the same global batches whatever the
number of processes, and rank r of ``world_size`` yields the r-th contiguous slice of each
(``batch_size // world_size`` indices), so all ranks together see exactly what one process
with the global batch would. ``set_start_batch(n)`` skips the first n batches of the next
iteration (resuming mid-epoch) by index arithmetic only; no sample is loaded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class _EpochBatchSampler(Sampler[list[int]]):
    """Shared machinery: epoch-seeded global batches, the rank's slice, the resume offset."""

    def __init__(self, batch_size: int, seed: int, rank: int, world_size: int, drop_last: bool):
        if batch_size <= 0 or batch_size % world_size:
            raise ValueError(
                f"batch_size={batch_size} must be a positive multiple of world_size={world_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if world_size > 1 and not drop_last:
            raise ValueError("drop_last=False would give ranks unequal last batches; use drop_last=True")
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch`` next (and start from its first batch)."""
        self.epoch = epoch
        self.start_batch = 0

    def set_start_batch(self, n: int) -> None:
        """Skip the first ``n`` batches of the next iteration only."""
        self.start_batch = n

    def _count(self, units: int, per_batch: int) -> int:
        """Batches of ``per_batch`` out of ``units``: the full ones, plus a smaller last one unless ``drop_last``."""
        full, rest = divmod(units, per_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def global_batches(self) -> list[np.ndarray]:
        """All global batches of the current epoch (indices into the dataset)."""
        return self._draw(np.random.default_rng([self.seed, self.epoch]))

    def _draw(self, rng: np.random.Generator) -> list[np.ndarray]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        share = self.batch_size // self.world_size
        for batch in self.global_batches()[start:]:
            yield batch[self.rank * share : (self.rank + 1) * share].tolist()


class RandomBatchSampler(_EpochBatchSampler):
    """Batches of a random permutation of ``range(num_samples)``."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        super().__init__(batch_size, seed, rank, world_size, drop_last)
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self._count(self.num_samples, self.batch_size)

    def _draw(self, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(self.num_samples)
        return [
            order[i : i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)
        ]


class IdentityBatchSampler(_EpochBatchSampler):
    """P identities x K samples per batch (P = batch_size // num_instances), as torchreid's
    RandomIdentitySampler.

    Each epoch every identity's samples are shuffled and cut into groups of K (the remainder is
    dropped; an identity with fewer than K samples gives one group drawn with replacement). A
    batch takes one group from each of P distinct identities, drawn with probability
    proportional to their groups left, so large identities are spread over the epoch. When fewer
    than P identities have groups left, the last batches repeat identities. The epoch has
    ``total_groups // P`` batches (plus one smaller batch if not ``drop_last``).
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        super().__init__(batch_size, seed, rank, world_size, drop_last)
        if batch_size % num_instances:
            raise ValueError(f"batch_size={batch_size} must be a multiple of num_instances={num_instances}")
        self.num_instances = num_instances
        self.ids_per_batch = batch_size // num_instances
        self._members = _members(pids)
        self._groups = np.array([max(1, len(m) // num_instances) for m in self._members])

    def __len__(self) -> int:
        return self._count(int(self._groups.sum()), self.ids_per_batch)

    def _identity_groups(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        k = self.num_instances
        groups = []
        for members in self._members:
            if len(members) < k:
                groups.append([rng.choice(members, size=k, replace=True)])
            else:
                order = rng.permutation(members)
                groups.append([order[i * k : (i + 1) * k] for i in range(len(members) // k)])
        return groups

    def _draw(self, rng: np.random.Generator) -> list[np.ndarray]:
        groups = self._identity_groups(rng)
        left = self._groups.copy()
        batches = []
        for _ in range(len(self)):
            available = np.flatnonzero(left)
            p_ids = min(self.ids_per_batch, int(left.sum()))
            if len(available) >= p_ids:
                weights = left[available] / left[available].sum()
                chosen = rng.choice(available, size=p_ids, replace=False, p=weights)
            else:  # too few identities left: fill the batch with further groups of the same ones
                chosen = rng.choice(np.repeat(available, left[available]), size=p_ids, replace=False)
            batch = []
            for pid in chosen:
                left[pid] -= 1
                batch.append(groups[pid][left[pid]])
            batches.append(np.concatenate(batch))
        return batches


class PerImageBatchSampler(RandomBatchSampler):
    """Batches of caption indices with one caption per image per epoch (``tbpr data from-captions``).

    ``image_of_caption[i]`` is the image of caption ``i``. Each epoch draws, for every image, one of its
    captions uniformly, then batches the images as ``RandomBatchSampler`` batches samples: an epoch has
    ``images // batch_size`` batches (plus a smaller one if not ``drop_last``), and no image appears
    twice in it, so no batch holds two captions of one image (one identity each).
    """

    def __init__(
        self,
        image_of_caption: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        members = _members(image_of_caption)
        super().__init__(len(members), batch_size, seed, rank, world_size, drop_last)
        self._captions = np.concatenate(members)
        self._counts = np.array([len(m) for m in members])
        self._starts = np.cumsum(self._counts) - self._counts

    def _draw(self, rng: np.random.Generator) -> list[np.ndarray]:
        picks = self._captions[self._starts + rng.integers(0, self._counts)]
        return [picks[batch] for batch in super()._draw(rng)]


def _members(keys: Sequence[int]) -> list[np.ndarray]:
    """The sample indices of each key (identity, image), keys in sorted order."""
    members = defaultdict(list)
    for index, key in enumerate(keys):
        members[key].append(index)
    return [np.asarray(indices) for _, indices in sorted(members.items())]
