"""Clean-sample division (RDE's Consensus Clean-sample Division): which training pairs to train on; and
the co-teaching schedule.

Before each epoch past ``noise.warmup_epochs``, a no-grad pass in eval mode gives every training pair its
loss (the per-sample form of the recipe's losses, or of the one or two losses ``noise.losses`` names, in
batches of ``data.batch_size`` drawn by a permutation seeded by (seed, epoch)); with ``model.tse`` each of
them on the global and on the TSE embedding (vector ``NAME_tse``). Each loss vector is min-max
normalized and fitted by a 2-component Gaussian mixture (scikit-learn, RDE's max_iter 10, tol 1e-2,
reg_covar 5e-4); a pair is clean when the posterior of the low-mean component exceeds ``noise.threshold``.
Several vectors are joined by consensus: clean if all say clean, noisy if all say noisy, and a coin flip
(seeded per pair, ``tbpr.train.reproducible.sample_seed``) where they disagree. The epoch then trains on
the clean pairs only (``Views.weights``). Each division is written to ``RUN/noise/epoch-NNN.npz`` (NNN: the
1-based epoch that trains with it) before the epoch starts, and a resumed run reads it back instead of
recomputing it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from tbpr.atomic import atomic_write
from tbpr.errors import ConfigError
from tbpr.evaluation.evaluator import encode_split
from tbpr.losses import LOSSES, LossParams, Views, check_loss_weights, check_per_sample
from tbpr.train import distributed as dist
from tbpr.train.reproducible import sample_seed

log = logging.getLogger(__name__)
DIVISIONS = ("none", "gmm")
DIVISION_STREAM = 2**31 - 1  # seeds the division's coins and batches apart from any training batch's seeds
RDE_GMM = {"max_iter": 10, "tol": 1e-2, "reg_covar": 5e-4}


@dataclass
class NoiseConfig:
    """``noise:`` block of a recipe. ``losses``: [] (the recipe's weighted losses as one vector), one name, or
    two names (consensus of their two divisions)."""

    division: str = "none"  # 'none' or 'gmm'
    warmup_epochs: int = 1  # epochs on every pair before the first division
    losses: list[str] = field(default_factory=list)
    threshold: float = 0.5  # clean: posterior of the low-mean component above this
    coteach: float = 0.0  # co-teaching's forget rate tau between the two embeddings (0: off; needs model.tse)
    coteach_ramp_epochs: int = 10  # T_k: the forgotten share grows linearly to tau over these epochs

    def check(self, recipe_losses: dict[str, float], tse: bool = False) -> None:
        """Raise ConfigError for a setting the division or co-teaching cannot run with (``tse``: model.tse)."""
        if self.division not in DIVISIONS:
            raise ConfigError(f"noise.division={self.division!r}: expected one of {', '.join(DIVISIONS)}")
        if self.coteach:
            self._check_coteach(recipe_losses, tse)
        if self.division == "none":
            return
        if (
            isinstance(self.warmup_epochs, bool)
            or not isinstance(self.warmup_epochs, int)
            or self.warmup_epochs < 0
        ):
            raise ConfigError(
                f"noise.warmup_epochs={self.warmup_epochs!r}: give a whole number of epochs >= 0"
            )
        if not 0 < self.threshold < 1:
            raise ConfigError(f"noise.threshold={self.threshold!r}: give a probability between 0 and 1")
        if len(self.losses) > 2:
            raise ConfigError(f"noise.losses={self.losses}: give at most two losses (two: their consensus)")
        check_loss_weights({name: 1.0 for name in self.losses} or recipe_losses)
        check_per_sample([*recipe_losses, *self.losses])

    def _check_coteach(self, recipe_losses: dict[str, float], tse: bool) -> None:
        if not 0 < self.coteach < 1:
            raise ConfigError(f"noise.coteach={self.coteach!r}: give a forget rate between 0 and 1 (0: off)")
        if isinstance(self.coteach_ramp_epochs, bool) or self.coteach_ramp_epochs < 0:
            raise ConfigError(f"noise.coteach_ramp_epochs={self.coteach_ramp_epochs!r}: give epochs >= 0")
        if not tse:
            raise ConfigError(
                "noise.coteach exchanges small-loss pairs between two embeddings: set model.tse "
                "(e.g. --set 'model.tse={ratio: 0.3}') or remove noise.coteach"
            )
        check_per_sample(list(recipe_losses))

    def coteach_keep(self, epoch: int) -> float | None:
        """Co-teaching's R(T) = 1 - tau * min(T / T_k, 1) at 0-based epoch T (None: co-teaching is off)."""
        if not self.coteach:
            return None
        ramp = 1.0 if self.coteach_ramp_epochs == 0 else min(epoch / self.coteach_ramp_epochs, 1.0)
        return 1.0 - self.coteach * ramp


def min_max(losses: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min); all zeros when every loss is equal (then every pair is clean)."""
    losses = np.asarray(losses, dtype=np.float64)
    span = losses.max() - losses.min()
    return np.zeros_like(losses) if span == 0 else (losses - losses.min()) / span


def gmm_clean(losses: np.ndarray, seed: int, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(clean mask, posterior of the low-mean component) of a 2-component mixture over the normalized losses.

    Equal losses carry no evidence: every pair is clean (posterior 1). When the mixture calls every pair
    clean, the 1% with the lowest posterior are called noisy, as RDE does.
    """
    x = min_max(losses)
    if not x.any():
        return np.ones(len(x), dtype=bool), np.ones(len(x))
    gmm = GaussianMixture(n_components=2, random_state=seed % 2**32, **RDE_GMM).fit(x.reshape(-1, 1))
    prob = gmm.predict_proba(x.reshape(-1, 1))[:, int(np.argmin(gmm.means_.reshape(-1)))]
    clean = prob > threshold
    if clean.all():
        clean = prob > np.sort(prob)[len(prob) // 100]
    return clean, prob


def consensus(masks: list[np.ndarray], seed: int, epoch: int, keys: np.ndarray) -> np.ndarray:
    """Clean where every mask is, noisy where none is; a coin flip seeded by (seed, epoch, key) elsewhere."""
    stacked = np.stack(masks)
    agree = stacked.all(axis=0) | ~stacked.any(axis=0)
    coins = np.array([sample_seed(seed, epoch, DIVISION_STREAM, int(k)) % 2 == 1 for k in keys], dtype=bool)
    return np.where(agree, stacked[0], coins)


def divide(vectors: dict[str, np.ndarray], seed: int, epoch: int, keys: np.ndarray, threshold: float) -> dict:
    """The division of one epoch: ``clean`` and, per loss vector, its ``loss_NAME`` and ``prob_NAME``."""
    record: dict[str, np.ndarray] = {}
    masks = []
    for name, losses in vectors.items():
        clean, prob = gmm_clean(losses, seed, threshold)
        masks.append(clean)
        record[f"loss_{name}"], record[f"prob_{name}"] = losses, prob
    record["clean"] = masks[0] if len(masks) == 1 else consensus(masks, seed, epoch, keys)
    return record


def division_path(run: Path, epoch: int) -> Path:
    """The file of the division epoch ``epoch`` (1-based) trains with."""
    return Path(run) / "noise" / f"epoch-{epoch:03d}.npz"


def save_division(path: Path, epoch: int, caption_ids: np.ndarray, record: dict) -> Path:
    """Write one epoch's division (``epoch``, ``caption_ids`` and the ``divide`` record) atomically."""
    return atomic_write(path, lambda fh: np.savez(fh, epoch=epoch, caption_ids=caption_ids, **record))


def load_division(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@torch.no_grad()
def per_sample_losses(
    model,
    split,
    transform,
    tokenizer,
    weights: dict[str, float],
    names: list[str],
    params: LossParams,
    *,
    seed: int,
    epoch: int,
    batch_size: int,
    eval_batch_size: int,
    num_workers: int,
    device,
) -> dict[str, np.ndarray]:
    """Each training caption's loss with its image: one vector per name in ``names``, or ("recipe") the
    ``weights``-weighted sum of the recipe's losses, in batches of ``batch_size`` of a seeded permutation;
    with ``model.tse`` also each on the TSE embedding (``NAME_tse``)."""
    encoded = encode_split(
        model, split, transform, tokenizer, eval_batch_size, num_workers, device, progress=False
    )
    row = {rec.id: i for i, rec in enumerate(split.images)}
    image_rows = torch.tensor([row[c.image_id] for c in split.captions])
    terms = {name: {name: 1.0} for name in names} or {"recipe": weights}
    (image, image_tse), (text, text_tse) = map(
        model.split_embedding, (encoded.image_feats, encoded.text_feats)
    )
    embeddings = {"": (image, text)} | ({} if image_tse is None else {"_tse": (image_tse, text_tse)})
    out = {name + suffix: torch.zeros(len(split.captions)) for suffix in embeddings for name in terms}
    order = torch.from_numpy(
        np.random.default_rng([seed, epoch, DIVISION_STREAM]).permutation(len(split.captions))
    )
    logit_scale = model.logit_scale.detach().float().cpu()
    for chunk in order.split(batch_size):
        for suffix, (image, text) in embeddings.items():
            views = Views(
                image=image[image_rows[chunk]],
                text=text[chunk],
                pids=encoded.text_pids[chunk],
                logit_scale=logit_scale,
            )
            for name, mix in terms.items():
                out[name + suffix][chunk] = sum(
                    w * LOSSES[loss].per_sample(views, params).float() for loss, w in mix.items()
                )
    return {name: values.numpy() for name, values in out.items()}


def epoch_clean_mask(
    cfg, epoch: int, out_dir: Path, model, split, transform, tokenizer, device, main: bool
) -> torch.Tensor | None:
    """The 0/1 weight of every training caption for epoch ``epoch`` (0-based) of the run ``cfg`` (a TrainConfig),
    or None (every pair) when the division is off or still warming up.

    Reads ``RUN/noise/epoch-NNN.npz`` when a previous (interrupted) start of this epoch wrote it; otherwise
    computes the division (every process the same; process 0's result is used) and writes it (process 0).
    """
    noise = cfg.noise
    if noise.division == "none" or epoch < noise.warmup_epochs:
        return None
    path = division_path(out_dir, epoch + 1)
    dist.barrier()  # no process reads a file from this start while process 0 writes it
    caption_ids = np.array([c.id for c in split.captions])
    if path.is_file():
        record = load_division(path)
        if not np.array_equal(record["caption_ids"], caption_ids):
            raise ConfigError(
                f"{path}: its captions are not this run's training captions; delete {path.parent}"
            )
        log.info("epoch %d: clean-sample division read from %s", epoch + 1, path)
        return torch.from_numpy(record["clean"].astype(np.float32))
    start = time.perf_counter()
    vectors = per_sample_losses(
        model,
        split,
        transform,
        tokenizer,
        cfg.losses,
        noise.losses,
        cfg.loss_params,
        seed=cfg.seed,
        epoch=epoch,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        device=device,
    )
    record = divide(vectors, cfg.seed, epoch, caption_ids, noise.threshold)
    clean = torch.from_numpy(record["clean"].astype(np.float32)).to(device)
    clean = dist.all_gather_no_grad(clean)[: len(caption_ids)].cpu()  # process 0's division
    record["clean"] = clean.numpy().astype(bool)
    if main:
        save_division(path, epoch + 1, caption_ids, record)
    log.info(
        "epoch %d: clean-sample division keeps %d of %d training pairs (%.1f s; %s)",
        epoch + 1,
        int(clean.sum()),
        len(clean),
        time.perf_counter() - start,
        path,
    )
    return clean
