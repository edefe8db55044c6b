"""Torch datasets over a manifest: training caption-image pairs, evaluation galleries and queries.

Images are decoded and captions tokenized in ``__getitem__``, so DataLoader workers do the work.
``pids`` lists each sample's person id (what the identity sampler and the evaluator need).
Indices returned in samples are positions in ``manifest.images`` / ``manifest.captions``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from tbpr.data.schema import Manifest
from tbpr.data.tokenizer import Tokenizer
from tbpr.data.transforms import load_image

ImageTransform = Callable[[object], torch.Tensor]


class CaptionPairDataset(Dataset):
    """One sample per caption (as IRRA): {"image", "tokens", "pid", "caption_index", "image_index"}."""

    def __init__(self, manifest: Manifest, image_transform: ImageTransform, tokenizer: Tokenizer):
        self.manifest = manifest
        self.image_transform = image_transform
        self.tokenizer = tokenizer
        position = {rec.id: i for i, rec in enumerate(manifest.images)}
        self.image_indices = [position[c.image_id] for c in manifest.captions]
        self.pids = [manifest.images[i].pid for i in self.image_indices]

    def __len__(self) -> int:
        return len(self.manifest.captions)

    def __getitem__(self, index: int) -> dict:
        image_index = self.image_indices[index]
        rec = self.manifest.images[image_index]
        return {
            "image": self.image_transform(load_image(self.manifest.image_path(rec))),
            "tokens": self.tokenizer(self.manifest.captions[index].text)[0],
            "pid": rec.pid,
            "caption_index": index,
            "image_index": image_index,
        }


class ImageDataset(Dataset):
    """The images of a manifest (an evaluation gallery): {"image", "pid", "index"}."""

    def __init__(self, manifest: Manifest, image_transform: ImageTransform):
        self.manifest = manifest
        self.image_transform = image_transform
        self.pids = [rec.pid for rec in manifest.images]

    def __len__(self) -> int:
        return len(self.manifest.images)

    def __getitem__(self, index: int) -> dict:
        rec = self.manifest.images[index]
        image = self.image_transform(load_image(self.manifest.image_path(rec)))
        return {"image": image, "pid": rec.pid, "index": index}


class TextDataset(Dataset):
    """The captions of a manifest (evaluation queries): {"tokens", "pid", "index"}."""

    def __init__(self, manifest: Manifest, tokenizer: Tokenizer):
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.pids = manifest.caption_pids()

    def __len__(self) -> int:
        return len(self.manifest.captions)

    def __getitem__(self, index: int) -> dict:
        tokens = self.tokenizer(self.manifest.captions[index].text)[0]
        return {"tokens": tokens, "pid": self.pids[index], "index": index}
