"""Score one evaluation split again and again, re-encoding only the tower a change touches."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tbpr.data.datasets import ImageDataset, TextDataset
from tbpr.data.schema import Manifest
from tbpr.data.tokenizer import Tokenizer
from tbpr.errors import ConfigError
from tbpr.evaluation.metrics import retrieval_metrics

log = logging.getLogger(__name__)

METRICS = ("R1", "R5", "R10", "mAP", "mINP")


def limit_queries(manifest: Manifest, num_queries: int | None) -> Manifest:
    """The manifest with ``num_queries`` captions spread evenly over it (the gallery is kept whole)."""
    n = len(manifest.captions)
    if num_queries is None or num_queries >= n:
        return manifest
    if num_queries < 1:
        raise ConfigError(f"--limit-queries must be at least 1, got {num_queries}")
    captions = [manifest.captions[i * n // num_queries] for i in range(num_queries)]
    return dataclasses.replace(manifest, captions=captions)


class SplitScorer:
    """Text-to-image ``metric`` of a model on a fixed split.

    The split's preprocessed images and tokenized captions are loaded once and kept in memory (a
    3,000-image gallery at 384x128 takes about 1.8 GB), and the fine-tuned model's features of both
    towers are encoded once. ``scorer(tower)`` re-encodes only ``tower`` with the model as it is now
    (e.g. with a module removed) and scores it against the other tower's cached features.
    """

    def __init__(
        self,
        model,
        manifest: Manifest,
        image_transform,
        tokenizer: Tokenizer,
        metric: str = "R1",
        batch_size: int = 256,
        num_workers: int = 2,
        device: torch.device | str = "cpu",
    ):
        if metric not in METRICS:
            raise ConfigError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        if not manifest.captions or not manifest.images:
            raise ConfigError(f"the {manifest.name} split to analyze has no captions or no images")
        self.model = model
        self.metric = metric
        self.device = torch.device(device)
        loader_args = {"batch_size": batch_size, "num_workers": num_workers, "shuffle": False}
        self._inputs = {
            "image": _load(DataLoader(ImageDataset(manifest, image_transform), **loader_args), "image"),
            "text": _load(DataLoader(TextDataset(manifest, tokenizer), **loader_args), "tokens"),
        }
        self._pids = {tower: torch.cat([b[1] for b in batches]) for tower, batches in self._inputs.items()}
        self._feats = {tower: self._encode(tower) for tower in self._inputs}
        self.baseline = self._score(self._feats)
        log.info(
            "%d queries, %d gallery images; fine-tuned t2i %s = %.2f",
            len(self._pids["text"]),
            len(self._pids["image"]),
            metric,
            self.baseline,
        )

    @property
    def num_queries(self) -> int:
        return len(self._pids["text"])

    @property
    def num_gallery(self) -> int:
        return len(self._pids["image"])

    def __call__(self, tower: str) -> float:
        """The metric with ``tower`` re-encoded by the current model and the other tower cached."""
        return self._score({**self._feats, tower: self._encode(tower)})

    @torch.no_grad()
    def _encode(self, tower: str) -> torch.Tensor:
        encode = self.model.encode_image if tower == "image" else self.model.encode_text
        was_training = self.model.training
        self.model.eval()
        try:
            return torch.cat([encode(x.to(self.device)).float().cpu() for x, _ in self._inputs[tower]])
        finally:
            self.model.train(was_training)

    def _score(self, feats: dict[str, torch.Tensor]) -> float:
        similarity = feats["text"] @ feats["image"].T
        return float(retrieval_metrics(similarity, self._pids["text"], self._pids["image"])[self.metric])


def _load(loader: DataLoader, key: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (batch[key], torch.as_tensor(batch["pid"]))
        for batch in tqdm(loader, desc=f"loading {key}", leave=False)
    ]
