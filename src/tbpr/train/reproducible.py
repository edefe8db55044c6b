"""Reproducibility: per-sample augmentation seeds and RNG state capture for exact resume.

Each sample's random augmentations are drawn from a generator seeded by (run seed, epoch, batch,
dataset index), so they do not depend on the number of DataLoader workers or processes (the same
global batch split over ranks gets the same seeds), nor on whether the run was interrupted and
resumed mid-epoch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset


def sample_seed(seed: int, epoch: int, batch: int, index: int, stream: int = 0) -> int:
    """The seed of one sample's random draws; another ``stream`` (> 0) gives an independent seed for
    draws made outside the dataset (e.g. mixup partners), stream 0 the sample's augmentations."""
    entropy = [seed, epoch, batch, index] + ([stream] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class SeededBatches:
    """Wraps a resumable batch sampler; yields ``[(index, seed), ...]`` per batch."""

    def __init__(self, batch_sampler, seed: int):
        self.batch_sampler = batch_sampler
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batch_sampler.set_epoch(epoch)

    def set_start_batch(self, n: int) -> None:
        self.start_batch = n
        self.batch_sampler.set_start_batch(n)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b, batch in enumerate(self.batch_sampler, start=self.start_batch):
            yield [(int(i), sample_seed(self.seed, self.epoch, b, int(i))) for i in batch]


class SeededDataset(Dataset):
    """Fetches ``dataset[index]`` with torch's RNG seeded for that sample (restored afterwards)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state as tensors and plain data (a checkpoint loads with ``weights_only=True``)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):  # tuple in checkpoints of older versions
        key = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
        numpy_state = {**numpy_state, "state": {**numpy_state["state"], "key": key}}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
