"""Identity subsets of the training split: few-shot training sets (and, in ``holdout``, a carved val split)."""

from __future__ import annotations

import dataclasses
import random

from tbpr.data.schema import Manifest
from tbpr.errors import ConfigError, DataError


def check_fraction(fraction: float) -> None:
    """``data.train_fraction`` must be in (0, 1]."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"data.train_fraction={fraction}: expected a fraction in (0, 1]")


def draw_identities(manifest: Manifest, fraction: float, seed: int) -> list[int]:
    """``round(fraction * num_ids)`` person ids (at least one) of ``manifest``, drawn by ``seed``, sorted."""
    pids = sorted({rec.pid for rec in manifest.images})
    if not pids:
        raise DataError(f"{manifest.name}: the training split has no images to sample identities from")
    count = max(1, round(fraction * len(pids)))
    return sorted(random.Random(seed).sample(pids, count))


def keep_identities(manifest: Manifest, pids: list[int], split: str = "train") -> Manifest:
    """The images and captions of ``pids`` (sorted), renumbered 0..N-1 in that order, marked ``split``."""
    new_pid = {pid: i for i, pid in enumerate(pids)}
    images = [
        dataclasses.replace(rec, pid=new_pid[rec.pid], split=split)
        for rec in manifest.images
        if rec.pid in new_pid
    ]
    image_ids = {rec.id for rec in images}
    captions = [c for c in manifest.captions if c.image_id in image_ids]
    return Manifest(manifest.name, manifest.image_root, images, captions, manifest.annotation_file)


def sample_identities(manifest: Manifest, fraction: float, seed: int) -> Manifest:
    """Keep ``round(fraction * num_ids)`` identities (at least one), chosen by ``seed``, whole.

    Every image and caption of a kept identity stays; the kept person ids are renumbered 0..N-1 in
    their original order, as the training split requires (see ``tbpr.data.schema.Manifest``).
    """
    check_fraction(fraction)
    return keep_identities(manifest, draw_identities(manifest, fraction, seed))
