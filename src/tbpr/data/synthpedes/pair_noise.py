"""Noisy correspondence: the captions of a fraction of training images moved onto other people's images.

This is how RDE and NCR make noisy image-text pairs: some captions are shuffled among images, so a
pair's caption describes someone else. Here every moved caption lands on an image of **another**
identity (a shuffle of the pooled captions with no caption left with its own identity), so each moved
pair is truly wrong; each chosen image receives as many captions as it gave.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from tbpr.errors import ConfigError

Slot = tuple[int, int]  # (index of the image in the list given, caption index)


def shuffle_pairs(
    pids: Sequence[int], captions_per_image: int, fraction: float, rng: np.random.Generator
) -> dict[Slot, Slot]:
    """Which caption each slot of the chosen images receives: ``{slot: slot the caption comes from}``.

    ``pids`` are the person ids of the training images; ``round(fraction * len(pids))`` of them are
    chosen at random (a larger fraction keeps the images a smaller one chose, for the same ``rng``
    seed) and their captions pooled and shuffled across identities. Slots not in the result keep
    their own caption.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"pair_noise={fraction} must be between 0 and 1")
    order = rng.permutation(len(pids))
    chosen = sorted(int(i) for i in order[: round(fraction * len(pids))])
    if not chosen:
        if fraction > 0:
            raise ConfigError(
                f"pair_noise={fraction} moves none of the {len(pids)} training images; use 0 or a larger pair noise"
            )
        return {}
    slots = [(i, c) for i in chosen for c in range(captions_per_image)]
    owners = np.array([pids[i] for i, _ in slots])
    biggest_pid, biggest = Counter(owners.tolist()).most_common(1)[0]
    if 2 * biggest > len(slots):
        raise ConfigError(
            f"pair_noise={fraction} moves the captions of {len(chosen)} training images, {biggest // captions_per_image} "
            f"of them of person {biggest_pid}: their captions cannot all go to other people; "
            "use a larger pair noise (or 0)"
        )
    source = cross_identity_derangement(owners, rng)
    return {slots[k]: slots[int(source[k])] for k in range(len(slots))}


def cross_identity_derangement(owners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation ``p`` with ``owners[p[k]] != owners[k]`` for every ``k``.

    A uniform permutation, then each position whose item has its own owner swaps with a random position
    where both items then sit with another owner. Such a position exists whenever no owner holds more
    than half the items (the caller checks): owner ``a`` with ``g`` items leaves ``n - g`` positions of other
    owners, at most ``g - 1`` of them holding an item of ``a``. Swaps keep every position already fixed valid.
    """
    perm = rng.permutation(len(owners))
    for k in range(len(owners)):
        own = owners[k]
        if owners[perm[k]] == own:
            fits = np.flatnonzero((owners != own) & (owners[perm] != own))
            j = int(rng.choice(fits))
            perm[k], perm[j] = perm[j], perm[k]
    return perm
