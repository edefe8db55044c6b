"""What the training benchmarks share: a SynthPedes set in a temporary folder, a recipe's trainer on it, and
timed optimizer steps of several configurations of one recipe."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch

from tbpr.data.synthpedes import generate
from tbpr.train import load_config
from tbpr.train.engine import Trainer


@contextmanager
def synthpedes_in_tempdir(size: str) -> Iterator[tuple[Path, Path]]:
    """(temporary folder, SynthPedes ``size`` generated with seed 0 in it); both removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, size=size, seed=0)
        yield Path(tmp), data


def recipe_trainer(recipe: str, data: Path, out: Path, overrides: list[str]) -> Trainer:
    """A fresh trainer of ``recipe`` on ``data`` writing to ``out``, loading data in the main process, seeded 0."""
    cfg = load_config(recipe, [f"data.path={data}", f"output_dir={out}", "data.num_workers=0", *overrides])
    torch.manual_seed(0)
    return Trainer(cfg, resume=False)


def train_step(trainer: Trainer, batch: dict) -> float:
    """Seconds of one forward, backward and optimizer step on ``batch`` (a copy: masking replaces tokens)."""
    start = time.perf_counter()
    loss, _ = trainer._forward_loss(dict(batch))
    loss.backward()
    trainer._optimizer_step()
    return time.perf_counter() - start


def time_modes(
    recipe: str,
    size: str,
    modes: dict[str, list[str]],
    overrides: list[str],
    n_batches: int,
    rounds: int,
    batches_from: str,
    context: Callable[[str], AbstractContextManager] = lambda _mode: nullcontext(),
    batch_for: Callable[[str, dict], dict] = lambda _mode, batch: batch,
) -> tuple[dict[str, Trainer], list[dict], dict[str, list[float]]]:
    """(trainer per mode, the batches, step seconds per mode) for ``recipe`` on SynthPedes ``size``.

    ``modes`` maps a row label to its config overrides (``overrides`` follow them). ``n_batches`` batches
    are loaded once from the ``batches_from`` mode's trainer, so every mode steps on the same data; the
    modes are interleaved round by round so machine load affects each alike; the first round is warm-up.
    A mode steps inside ``context(mode)`` on ``batch_for(mode, batch)``.
    """
    with synthpedes_in_tempdir(size) as (tmp, data):
        trainers = {
            mode: recipe_trainer(recipe, data, tmp / f"mode{i}", [*extra, *overrides])
            for i, (mode, extra) in enumerate(modes.items())
        }
        loader = iter(trainers[batches_from].loader)
        batches = [next(loader) for _ in range(n_batches)]
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for round_ in range(rounds):
            for mode, trainer in trainers.items():
                with context(mode):
                    spent = [train_step(trainer, batch_for(mode, b)) for b in batches]
                if round_:
                    times[mode].extend(spent)
    return trainers, batches, times
