"""The validation split a run selects checkpoints (and stops early) on: the dataset's own, or carved.

ICFG-PEDES, for one, has no validation split. Carving holds out a seeded fraction of the *training
identities*, whole: their images form the gallery and their captions the queries, as in a real val
split, and none of them is trained on. The remaining training ids are renumbered 0..N-1.
"""

from __future__ import annotations

from dataclasses import dataclass

from tbpr.data.fewshot import draw_identities, keep_identities
from tbpr.data.schema import Manifest
from tbpr.errors import ConfigError, DataError

SOURCES = ("auto", "dataset", "carved")


@dataclass
class ValSplitConfig:
    """``data.val_split``. ``source``: 'auto' (the dataset's val split, carved if it has none),
    'dataset' (never carve: without a val split 'best' is the final model) or 'carved' (always carve).

    A run saves 'auto' resolved to what it used, so its config.yaml says 'dataset' or 'carved'.
    """

    source: str = "auto"
    fraction: float = 0.05  # of the training identities, at least one
    seed: int = 0  # the draw's own seed: runs with different training seeds validate on the same ids

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"data.val_split.source={self.source!r}: expected one of {', '.join(SOURCES)}")
        if not 0 < self.fraction < 1:
            raise ConfigError(f"data.val_split.fraction={self.fraction}: expected a fraction in (0, 1)")


def carve_validation(train: Manifest, fraction: float, seed: int) -> tuple[Manifest, Manifest]:
    """(training split without the drawn identities, val split of them); no identity is in both."""
    held_out = draw_identities(train, fraction, seed)
    drawn = set(held_out)
    kept = sorted({rec.pid for rec in train.images} - drawn)
    if not kept:
        raise DataError(
            f"{train.name}: carving {len(held_out)} validation identities (data.val_split.fraction={fraction}) "
            "leaves none to train on: lower the fraction or set data.val_split.source=dataset"
        )
    return keep_identities(train, kept), keep_identities(train, held_out, split="val")


def resolve_val_split(
    manifest: Manifest, train: Manifest, cfg: ValSplitConfig
) -> tuple[Manifest, Manifest, str]:
    """(training split, val split, source used: 'dataset' or 'carved') for ``manifest`` and its ``train`` split."""
    val = manifest.split("val")
    if cfg.source == "dataset" or (cfg.source == "auto" and val.captions):
        return train, val, "dataset"
    train, val = carve_validation(train, cfg.fraction, cfg.seed)
    return train, val, "carved"
