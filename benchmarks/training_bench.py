"""What the training benchmarks share: a SynthPedes set in a temporary folder and one timed optimizer step."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tbpr.data.synthpedes import generate
from tbpr.train.engine import Trainer


@contextmanager
def synthpedes_in_tempdir(size: str) -> Iterator[tuple[Path, Path]]:
    """(temporary folder, SynthPedes ``size`` generated with seed 0 in it); both removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, size=size, seed=0)
        yield Path(tmp), data


def train_step(trainer: Trainer, batch: dict) -> float:
    """Seconds of one forward, backward and optimizer step on ``batch`` (a copy: masking replaces tokens)."""
    start = time.perf_counter()
    loss, _ = trainer._forward_loss(dict(batch))
    loss.backward()
    trainer._optimizer_step()
    return time.perf_counter() - start
