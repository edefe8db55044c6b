"""Torch datasets over a manifest: training caption-image pairs, evaluation galleries and queries.

Images are decoded and captions tokenized in ``__getitem__``, so DataLoader workers do the work.
``pids`` lists each sample's person id (what the identity sampler and the evaluator need).
Indices returned in samples are positions in ``manifest.images`` / ``manifest.captions``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from tbpr.data.schema import CaptionRecord, Manifest
from tbpr.data.tokenizer import Tokenizer
from tbpr.data.transforms import load_image

ImageTransform = Callable[[object], torch.Tensor]
TextAugment = Callable[[str, int, random.Random], str]
Approximate = Callable[[str, random.Random], str]


class CaptionPairDataset(Dataset):
    """One sample per caption (as IRRA): {"image", "tokens", "pid", "caption_index", "image_index"}.

    ``image_views``/``text_views`` = 2 adds "image2"/"tokens2": the same image / caption augmented
    again independently (TBPS-CLIP's second view for MVS and SS losses). ``text_augment`` rewrites a
    caption before tokenization: ``text_augment(text, caption_id, rng)`` with ``rng`` a
    ``random.Random`` seeded from torch's (per-sample seeded) RNG, so augmentation is reproducible.
    ``approximate(text, rng)`` (PDG's approximate text) then alters that caption, from a generator
    seeded the same way: "tokens" is the altered caption, "tokens_orig" the caption before, and
    "replaced" whether their tokens differ.
    """

    def __init__(
        self,
        manifest: Manifest,
        image_transform: ImageTransform,
        tokenizer: Tokenizer,
        image_views: int = 1,
        text_views: int = 1,
        text_augment: TextAugment | None = None,
        approximate: Approximate | None = None,
    ):
        if image_views not in (1, 2) or text_views not in (1, 2):
            raise ValueError(f"image_views={image_views}, text_views={text_views}: each must be 1 or 2")
        self.manifest = manifest
        self.image_transform = image_transform
        self.tokenizer = tokenizer
        self.image_views = image_views
        self.text_views = text_views
        self.text_augment = text_augment
        self.approximate = approximate
        position = {rec.id: i for i, rec in enumerate(manifest.images)}
        self.image_indices = [position[c.image_id] for c in manifest.captions]
        self.pids = [manifest.images[i].pid for i in self.image_indices]

    def __len__(self) -> int:
        return len(self.manifest.captions)

    @staticmethod
    def _rng() -> random.Random:
        return random.Random(int(torch.randint(0, 2**62, (1,))))

    def _text(self, caption: CaptionRecord) -> str:
        if self.text_augment is None:
            return caption.text
        return self.text_augment(caption.text, caption.id, self._rng())

    def __getitem__(self, index: int) -> dict:
        image_index = self.image_indices[index]
        rec = self.manifest.images[image_index]
        caption = self.manifest.captions[index]
        image = load_image(self.manifest.image_path(rec))
        sample = {"image": self.image_transform(image)}
        text = self._text(caption)
        sample["tokens"] = self.tokenizer(text)[0]
        if self.approximate is not None:
            sample["tokens_orig"] = sample["tokens"]
            approximate = self.approximate(text, self._rng())
            if approximate != text:  # else the caption's tokens once more: not tokenized again
                sample["tokens"] = self.tokenizer(approximate)[0]
            sample["replaced"] = not torch.equal(sample["tokens"], sample["tokens_orig"])
        sample.update(pid=rec.pid, caption_index=index, image_index=image_index)
        if self.image_views == 2:
            sample["image2"] = self.image_transform(image)
        if self.text_views == 2:
            sample["tokens2"] = self.tokenizer(self._text(caption))[0]
        return sample


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
