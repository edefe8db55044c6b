"""Extra training sources (``data.extra_train``): other datasets' training splits added as new identities.

Each source is a dataset folder any reader loads (e.g. PDG's generated pairs, ``tbpr generate pairs``),
checked like the main dataset (``data.skip_bad`` applies to it too). Only its training split is used.
Its identities follow the training split's (person ids continue after the last one, so no source shares
an identity with another), its images keep their own folder (``ImageRecord.root``), and its captions take
ids after every caption id of the main dataset and of the captions added so far, so no caption store key
(``data.text_augment.stores``) names them. The captions are marked with source ``"extra"``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from tbpr.data.check import load_training_manifest
from tbpr.data.schema import CaptionRecord, Manifest
from tbpr.errors import DataError

log = logging.getLogger(__name__)
SOURCE = "extra"


def append_identities(train: Manifest, extra: Manifest, first_caption_id: int = 0) -> Manifest:
    """``train`` followed by the training split ``extra``: its persons, images and captions renumbered
    after ``train``'s (captions from ``first_caption_id`` on at least)."""
    pid0 = max((rec.pid for rec in train.images), default=-1) + 1
    image0 = max((rec.id for rec in train.images), default=-1) + 1
    caption0 = max(first_caption_id, max((c.id for c in train.captions), default=-1) + 1)
    image_id = {rec.id: image0 + i for i, rec in enumerate(extra.images)}
    images = [
        dataclasses.replace(
            rec, id=image_id[rec.id], pid=pid0 + rec.pid, split="train", root=rec.root or extra.image_root
        )
        for rec in extra.images
    ]
    captions = [
        CaptionRecord(caption0 + i, image_id[c.image_id], c.text, SOURCE)
        for i, c in enumerate(extra.captions)
    ]
    return dataclasses.replace(train, images=[*train.images, *images], captions=[*train.captions, *captions])


def add_training_sources(
    train: Manifest, paths: Sequence[str | Path], first_caption_id: int = 0, skip_bad: bool = False
) -> Manifest:
    """``train`` plus the training split of each dataset folder in ``paths``, in order."""
    for i, path in enumerate(paths):
        try:
            extra = load_training_manifest(path, skip_bad=skip_bad).split("train")
        except DataError as err:
            raise DataError(f"data.extra_train[{i}]: {err}") from None
        if not extra.captions:
            raise DataError(f"data.extra_train[{i}]: dataset {path} has no training captions to add")
        before = (train.num_ids(), len(train.images), len(train.captions))
        train = append_identities(train, extra, first_caption_id)
        log.info(
            "data.extra_train: added %d identities, %d images and %d captions of %s",
            train.num_ids() - before[0],
            len(train.images) - before[1],
            len(train.captions) - before[2],
            path,
        )
    return train
