"""The training loop: one engine for every recipe, single process or DDP under torchrun.

A run folder holds ``config.yaml``, ``metrics.jsonl``, ``tb/`` (TensorBoard) and
``checkpoints/{last,best}.pt``. ``last`` carries everything needed to resume exactly (model,
optimizer, scheduler, scaler, epoch and position in it, RNG); ``best`` is chosen on the
validation split (the dataset's, or identities carved from training: ``data.val_split``), never on
the test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from tbpr.atomic import write_text
from tbpr.config import save_yaml, to_dict
from tbpr.crashsafe import drop_torn_tail
from tbpr.data.check import load_training_manifest
from tbpr.data.datasets import CaptionPairDataset
from tbpr.data.fewshot import sample_identities
from tbpr.data.holdout import resolve_val_split
from tbpr.data.samplers import IdentityBatchSampler, PerImageBatchSampler, RandomBatchSampler
from tbpr.data.sources import add_training_sources
from tbpr.data.transforms import build_image_transform
from tbpr.devices import check_device
from tbpr.errors import ConfigError
from tbpr.evaluation.evaluator import encode_split, score
from tbpr.losses import Views, required_ss_heads, required_views
from tbpr.losses.embeddings import compute_two_embeddings
from tbpr.losses.mlm import IGNORE, masked_labels
from tbpr.models import DualEncoder
from tbpr.models.checkpoint import atomic_torch_save, load_checkpoint, model_payload
from tbpr.models.towers import build_tokenizer
from tbpr.text.augment import ApproximateText, TextAugmenter, expand_training_split
from tbpr.train import distributed as dist
from tbpr.train.config import TrainConfig
from tbpr.train.init_from import load_init_weights
from tbpr.train.masking import TokenMasker
from tbpr.train.mixup import draw_partners, with_mixed_pairs
from tbpr.train.nam import nam_layers
from tbpr.train.noise import epoch_clean_mask
from tbpr.train.optim import build_optimizer
from tbpr.train.reproducible import SeededBatches, SeededDataset, rng_state, seed_everything, set_rng_state
from tbpr.train.resume import check_resumable
from tbpr.train.schedule import lr_factor
from tbpr.train.views import MultiViewForward

log = logging.getLogger(__name__)


class MetricsLog:
    """Append-only JSONL of training and validation records (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tb"))

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint a resumed run starts from) and a torn
        last line (a kill during a write)."""
        if not self.enabled or not self.path.exists():
            return
        drop_torn_tail(self.path)
        keep = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
        write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        prefix = record.get("kind", "train")
        for key, value in record.items():
            if isinstance(value, int | float) and key not in ("step", "epoch"):
                self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Builds data, model and optimizer from a TrainConfig and runs (or resumes) training."""

    def __init__(self, cfg: TrainConfig, resume: bool = True):
        self.cfg = cfg
        self.dist = dist.init_distributed()
        self.main = self.dist.is_main
        self.device = torch.device(check_device(cfg.device)) if cfg.device else self.dist.device
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        if resume and (self.ckpt_dir / "last.pt").exists():  # before any work: refuse another config
            check_resumable(cfg, self.ckpt_dir / "last.pt")
        if cfg.data.batch_size % self.dist.world_size:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} must be divisible by the number of processes "
                f"({self.dist.world_size})"
            )
        seed_everything(cfg.seed)

        manifest = load_training_manifest(cfg.data.path, cfg.data.format, skip_bad=cfg.data.skip_bad)
        val_cfg = cfg.data.val_split
        if not cfg.eval_every:  # a run that never validates carves nothing: it trains on every identity
            val_cfg = dataclasses.replace(val_cfg, source="dataset")
        self.train_split, self.val_split, source = resolve_val_split(
            manifest, manifest.split("train"), val_cfg
        )
        # config.yaml and the checkpoints say which val split was used ('auto' resolved)
        self.cfg = cfg = dataclasses.replace(
            cfg,
            data=dataclasses.replace(
                cfg.data, val_split=dataclasses.replace(cfg.data.val_split, source=source)
            ),
        )
        if source == "carved":
            log.info(
                "validating on %d identities carved from the training split of %s (%d images, %d captions; "
                "data.val_split fraction %g, seed %d); they are not trained on",
                self.val_split.num_ids(),
                cfg.data.path,
                len(self.val_split.images),
                len(self.val_split.captions),
                cfg.data.val_split.fraction,
                cfg.data.val_split.seed,
            )
        if cfg.data.train_fraction < 1:
            self.train_split = sample_identities(self.train_split, cfg.data.train_fraction, cfg.seed)
        if not self.train_split.captions:
            raise ConfigError(f"{cfg.data.path}: the training split has no captions")
        # relative caption-store paths are inside the dataset folder
        text_cfg = dataclasses.replace(
            cfg.data.text_augment, stores=[str(Path(cfg.data.path) / s) for s in cfg.data.text_augment.stores]
        )
        original_ids = [c.id for c in self.train_split.captions]
        if text_cfg.expand:  # new caption ids follow every id of the dataset, so no store key names them
            start = max(c.id for c in manifest.captions) + 1
            self.train_split = expand_training_split(self.train_split, text_cfg, start)
        if cfg.data.extra_train:  # new identities; caption ids after the dataset's and the expansion's
            first = max(c.id for c in manifest.captions) + 1
            self.train_split = add_training_sources(
                self.train_split, cfg.data.extra_train, first, cfg.data.skip_bad
            )
        self.tokenizer = build_tokenizer(cfg.model)  # the text tower's own
        size = tuple(cfg.model.image_size)
        self.train_transform = build_image_transform(
            size, cfg.data.mean, cfg.data.std, train=True, hflip=cfg.data.hflip, augment=cfg.data.augment
        )
        self.eval_transform = build_image_transform(size, cfg.data.mean, cfg.data.std, train=False)

        self.batches = SeededBatches(self._batch_sampler(), cfg.seed)
        views = required_views(cfg.losses)
        text_augment = TextAugmenter(text_cfg, caption_ids=original_ids) if text_cfg.ops else None
        pairs = CaptionPairDataset(
            self.train_split,
            self.train_transform,
            self.tokenizer,
            image_views=2 if "image2" in views else 1,
            text_views=2 if "text2" in views else 1,
            text_augment=text_augment,
            approximate=ApproximateText(text_cfg.approximate) if text_cfg.approximate.ops else None,
        )
        self.constraint = "text_orig" in views  # L_c encodes the replaced captions' originals
        dataset = SeededDataset(pairs)
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
        )
        self.accum = cfg.optim.accum_steps
        self.steps_per_epoch = len(self.batches) // self.accum
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} x optim.accum_steps={self.accum} is larger than "
                f"the training set ({len(self.train_split.captions)} captions)"
            )
        self.total_steps = self.steps_per_epoch * cfg.optim.epochs

        if "id" in views:  # IRRA's classifier: one class per training identity (saved in config.yaml)
            cfg.model.id_classes = self._id_classes()
        self.model = DualEncoder(cfg.model).to(self.device)
        masking = cfg.masking
        self.masker = None
        if masking.mode != "none":
            n = len(self.train_split.captions)
            self.masker = TokenMasker(masking, n, cfg.model.context_length, self.tokenizer, cfg.seed)
        layers = nam_layers(self.model, masking.layer) if masking.mode == "nam" else None
        self.mlm = "mlm" in views
        self.mixup = cfg.mixup.p > 0  # PDG's feature-level mixup (tbpr.train.mixup)
        self.forward = MultiViewForward(
            self.model,
            required_ss_heads(cfg.losses),
            nam_layers=layers,
            mlm=self.mlm,
            id_head="id" in views,
            mixup_lam=cfg.mixup.lam if self.mixup else None,
        )
        self.ddp = None
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.forward, device_ids=ids)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg.optim, self.steps_per_epoch, self.total_steps)
        )
        self.use_amp = cfg.optim.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.best: dict | None = None
        self.stale = 0  # consecutive validations without a new best (for early_stop_patience)
        self.validated_step: int | None = None  # global_step of the last validation
        self.clean: torch.Tensor | None = None  # this epoch's clean-sample division (None: every pair)
        last = self.ckpt_dir / "last.pt"
        resuming = resume and last.exists()
        if cfg.init_from and not resuming:  # fine-tuning: weights only (init.pt below holds them)
            load_init_weights(self.model, cfg.init_from)
        if self.main and not resuming:  # a fresh run replaces an old run's logs
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
            shutil.rmtree(self.out / "tb", ignore_errors=True)
            shutil.rmtree(self.out / "noise", ignore_errors=True)
        self.metrics = MetricsLog(self.out / "metrics.jsonl", self.main)
        if resuming:
            self._load_state(last)
        elif self.main and (
            cfg.save_init or (cfg.save_init is None and (cfg.model.pretrained is None or cfg.init_from))
        ):
            atomic_torch_save(
                {**model_payload(self.model), "config": to_dict(cfg)}, self.ckpt_dir / "init.pt"
            )
        if self.main:
            save_yaml(cfg, self.out / "config.yaml")
        if cfg.eval_every and not self.val_split.captions:
            log.warning(
                "%s has no validation split and data.val_split.source=dataset: 'best' will be the final "
                "model, never chosen on test",
                cfg.data.path,
            )
        elif cfg.eval_every > cfg.optim.epochs:
            log.warning(
                "eval_every=%d is more than the %d epochs of the run: it validates once, at its end",
                cfg.eval_every,
                cfg.optim.epochs,
            )
        if cfg.early_stop_patience and not (cfg.eval_every and self.val_split.captions):
            log.warning(
                "early_stop_patience is set, but there is no validation to stop on: training all epochs"
            )

    def _id_classes(self) -> int:
        """The number of training identities; their person ids must be 0..N-1 (the classifier's classes)."""
        pids = {rec.pid for rec in self.train_split.images}
        if pids != set(range(len(pids))):
            raise ConfigError(
                f"{self.cfg.data.path}: losses.id needs training person ids 0..{len(pids) - 1}, got "
                f"{min(pids)}..{max(pids)}; read the data with a tbpr reader, which renumbers them"
            )
        return len(pids)

    def _batch_sampler(self):
        d = self.cfg.data
        common = {"seed": self.cfg.seed, "rank": self.dist.rank, "world_size": self.dist.world_size}
        try:
            if d.sampler == "identity":
                pids = self.train_split.caption_pids()
                return IdentityBatchSampler(pids, d.batch_size, num_instances=d.num_instances, **common)
            if d.sampler == "random":
                return RandomBatchSampler(len(self.train_split.captions), d.batch_size, **common)
            if d.sampler == "per_image":  # one caption per image per epoch (tbpr data from-captions)
                images = [c.image_id for c in self.train_split.captions]
                return PerImageBatchSampler(images, d.batch_size, **common)
        except ValueError as err:
            raise ConfigError(f"data (batch_size / num_instances): {err}") from err
        raise ConfigError(f"data.sampler={d.sampler!r}: expected 'identity', 'random' or 'per_image'")

    # ----------------------------------------------------------------- state
    def _state(self) -> dict:
        return {
            **model_payload(self.model),
            "config": to_dict(self.cfg),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "stale": self.stale,
            "validated_step": self.validated_step,
            "rng": rng_state(),
            "masking": self.masker.state_dict() if self.masker else {},
        }

    def _load_state(self, path: Path) -> None:
        state = load_checkpoint(path, self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.global_step, self.best = state["global_step"], state["best"]
        self.stale = state.get("stale", 0)  # absent from checkpoints of older versions
        self.validated_step = state.get("validated_step")
        set_rng_state(state["rng"])
        if self.masker:
            self.masker.load_state_dict(state.get("masking", {}))
        self.metrics.truncate_after(self.global_step)
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.global_step)

    def _save_last(self) -> None:
        if self.main:
            atomic_torch_save(self._state(), self.ckpt_dir / "last.pt")

    # ------------------------------------------------------------------ loop
    def soft_label_alpha(self) -> float:
        """The soft-label alpha at this step: ramped linearly over the first epoch as TBPS-CLIP's code does."""
        params = self.cfg.loss_params
        if not params.soft_label_ramp:
            return params.soft_label
        return params.soft_label * min(1.0, self.global_step / self.steps_per_epoch)

    def _forward_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        if self.masker:  # masked captions feed every loss, or (scope mlm) the MLM loss only; NAM also
            # encodes the full ones (to layer l)
            if self.masker.nam:
                batch["tokens_full"] = batch["tokens"]
            masked, chosen = self.masker.mask(batch["tokens"], batch["caption_index"], self.epoch)
            if self.mlm:  # the MLM loss predicts the original ids of the chosen positions
                batch["mlm_labels"] = torch.where(chosen, batch["tokens"], IGNORE)
            # scope mlm (IRRA): the other losses keep the unmasked captions (a new tensor, no aliasing)
            batch["tokens_mlm" if self.cfg.masking.scope == "mlm" else "tokens"] = masked
        keys = ("image", "image2", "tokens", "tokens2", "tokens_full", "tokens_mlm", "mlm_labels", "pid")
        keys += self.constraint * ("tokens_orig", "replaced")
        inputs = {key: batch[key].to(self.device, non_blocking=True) for key in keys if key in batch}
        if self.mixup:
            rows, partners = draw_partners(
                batch["pid"].tolist(), batch["caption_index"].tolist(), self.cfg.mixup.p, self.cfg.seed,
                self.epoch, self.batch_in_epoch,
            )  # fmt: skip
            inputs.update(mix_rows=rows.to(self.device), mix_partners=partners.to(self.device))
        net = self.ddp or self.forward
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            out = net(inputs)
        if "nam_max_sim" in out:  # every rank records every rank's captions: the tables stay identical
            probs = self.masker.probabilities(out["nam_max_sim"], inputs["tokens_full"])
            indices = torch.as_tensor(batch["caption_index"], device=self.device)
            self.masker.table.update(dist.all_gather_no_grad(indices), dist.all_gather_no_grad(probs))

        def gather(feats: torch.Tensor | None) -> torch.Tensor | None:
            return None if feats is None else dist.all_gather_with_grad(feats.float())

        views = Views(
            image=gather(out["image"]),
            text=gather(out["text"]),
            pids=dist.all_gather_no_grad(inputs["pid"]),
            logit_scale=out["logit_scale"].float(),
            image2=gather(out.get("image2")),
            text2=gather(out.get("text2")),
            ss={name: gather(feats) for name, feats in out["ss"].items()},
            soft_label=self.soft_label_alpha(),
            mlm_logits=out.get("mlm_logits"),
            mlm_labels=masked_labels(inputs["mlm_labels"]) if self.mlm else None,
            id_logits=out.get("id_logits", {}),
            id_labels=inputs["pid"],
            weights=None
            if self.clean is None
            else dist.all_gather_no_grad(self.clean[batch["caption_index"]].to(self.device)),
            text_orig=gather(out.get("text_orig")),
            replaced=dist.all_gather_no_grad(inputs["replaced"]) if self.constraint else None,
        )
        tse = None  # RDE's second embedding: the recipe's pair losses on it too (the mixed pairs have none)
        if "image_tse" in out:
            tse = dataclasses.replace(views, image=gather(out["image_tse"]), text=gather(out["text_tse"]))
        if self.mixup:  # the mixed pairs join the losses as new positive pairs
            views = with_mixed_pairs(
                views,
                gather(out["image_mix"]),
                gather(out["text_mix"]),
                dist.all_gather_no_grad(out["mixed"]),
            )
        keep = self.cfg.noise.coteach_keep(self.epoch)
        return compute_two_embeddings(self.cfg.losses, views, tse, self.cfg.loss_params, keep)

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.global_step += 1

    def _done(self) -> bool:
        return (self.cfg.max_steps is not None and self.global_step >= self.cfg.max_steps) or self._stopped()

    def _stopped(self) -> bool:
        """True once early stopping ended the run (also when resuming a run it ended)."""
        patience = self.cfg.early_stop_patience
        return patience is not None and self.stale >= patience

    def train(self) -> Path:
        """Train to the configured number of epochs (or ``max_steps``); returns the run folder."""
        cfg = self.cfg
        self.model.train()
        log.info(
            "training on %s: %d captions, %d ids, %d steps/epoch, %d epochs, %d process(es)",
            self.device,
            len(self.train_split.captions),
            self.train_split.num_ids(),
            self.steps_per_epoch,
            cfg.optim.epochs,
            self.dist.world_size,
        )
        while self.epoch < cfg.optim.epochs and not self._done():
            self.clean = epoch_clean_mask(
                cfg, self.epoch, self.out, self.model, self.train_split, self.eval_transform, self.tokenizer,
                self.device, self.main,
            )  # fmt: skip
            self._train_epoch()
            if self.batch_in_epoch < self.steps_per_epoch * self.accum:  # stopped inside the epoch
                break
            self.epoch += 1
            self.batch_in_epoch = 0
            if self.masker:
                ids = [c.id for c in self.train_split.captions]
                self.masker.end_epoch(self.epoch, self.out, ids, self.main)
            if cfg.eval_every and self.epoch % cfg.eval_every == 0:
                self._validate()
                if self._stopped() and self.main:
                    self._log_early_stop()
            self._save_last()
        if cfg.eval_every and self.validated_step != self.global_step:  # the model the run ends with
            self._validate()
        if self.main and (self.best is None or not (self.ckpt_dir / "best.pt").exists()):
            if self.best is None:
                log.info("no validation ran: best.pt is the final model (epoch %d)", self.epoch)
            self._save_best(self.best)
        self._save_last()
        self.metrics.close()
        dist.barrier()
        return self.out

    def _train_epoch(self) -> None:
        cfg = self.cfg
        self.batches.set_epoch(self.epoch)
        self.batches.set_start_batch(self.batch_in_epoch)
        remaining = self.steps_per_epoch * self.accum - self.batch_in_epoch
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.batch_in_epoch // self.accum,
            desc=f"epoch {self.epoch + 1}/{cfg.optim.epochs}",
            disable=not self.main,
            leave=False,
        )
        window = {"start": time.perf_counter(), "wait": 0.0, "samples": 0}
        fetched = time.perf_counter()
        for i, batch in enumerate(self.loader):
            window["wait"] += time.perf_counter() - fetched
            if i >= remaining:
                break
            window["samples"] += len(batch["pid"]) * self.dist.world_size
            last_micro = (self.batch_in_epoch + 1) % self.accum == 0
            sync = contextlib.nullcontext() if (last_micro or self.ddp is None) else self.ddp.no_sync()
            with sync:
                loss, terms = self._forward_loss(batch)
                self.scaler.scale(loss / self.accum).backward()
            self.batch_in_epoch += 1
            if not last_micro:
                fetched = time.perf_counter()
                continue
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at step {self.global_step}; lower optim.lr")
            lr = self.optimizer.param_groups[0]["lr"]
            self._optimizer_step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            if self.global_step % cfg.log_every == 0 or self.global_step == 1:
                self._log_step(lr, loss.item(), terms, window)
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                self._save_last()
            if self._done():
                break
            fetched = time.perf_counter()
        bar.close()

    def _log_step(self, lr: float, loss: float, terms: dict, window: dict) -> None:
        """One train record; throughput and the share of time spent waiting for data since the last one."""
        elapsed = time.perf_counter() - window["start"]
        self.metrics.write(
            {
                "kind": "train",
                "step": self.global_step,
                "epoch": self.epoch,
                "lr": lr,
                "loss": loss,
                **terms,
                "logit_scale": self.model.logit_scale.item(),
                "samples_per_s": window["samples"] / elapsed,
                "data_wait_frac": window["wait"] / elapsed,
            }
        )
        window.update(start=time.perf_counter(), wait=0.0, samples=0)

    def _validate(self) -> None:
        cfg = self.cfg
        self.validated_step = self.global_step
        if self.main and self.val_split.captions:
            encoded = encode_split(
                self.model,
                self.val_split,
                self.eval_transform,
                self.tokenizer,
                cfg.data.eval_batch_size,
                cfg.data.num_workers,
                self.device,
                progress=False,
            )
            metrics = score(encoded)
            t2i = metrics["t2i"]
            self.metrics.write(
                {
                    "kind": "val",
                    "step": self.global_step,
                    "epoch": self.epoch,
                    **{k: v for k, v in t2i.items() if k != "skipped_queries"},
                }
            )
            log.info(
                "epoch %d val: R1 %.2f R5 %.2f R10 %.2f mAP %.2f mINP %.2f",
                self.epoch,
                t2i["R1"],
                t2i["R5"],
                t2i["R10"],
                t2i["mAP"],
                t2i["mINP"],
            )
            value = t2i[cfg.select_metric]
            if self.best is None or value > self.best["value"]:
                self.best = {
                    "value": value,
                    "metric": cfg.select_metric,
                    "epoch": self.epoch,
                    "step": self.global_step,
                    "val": t2i,
                }
                self._save_best(self.best)
                self.stale = 0
            else:
                self.stale += 1
        if self.cfg.early_stop_patience is not None:  # only the main process validates: share its count
            self.stale = int(dist.all_gather_no_grad(torch.tensor([self.stale], device=self.device))[0])
        dist.barrier()

    def _log_early_stop(self) -> None:
        best = self.best or {}
        log.info(
            "early stop after epoch %d: %s has not improved for %d validations (best %.2f at epoch %d)",
            self.epoch,
            self.cfg.select_metric,
            self.stale,
            best.get("value", float("nan")),
            best.get("epoch", -1),
        )
        self.metrics.write(
            {
                "kind": "early_stop",
                "step": self.global_step,
                "epoch": self.epoch,
                "patience": self.cfg.early_stop_patience,
                "metric": self.cfg.select_metric,
                "best_value": best.get("value"),
                "best_epoch": best.get("epoch"),
            }
        )

    def _save_best(self, best: dict | None) -> None:
        """Write best.pt; without validation (``best`` None) it is the final model."""
        payload = {
            **model_payload(self.model),
            "config": to_dict(self.cfg),
            "selected": best or {"metric": None, "epoch": self.epoch, "step": self.global_step},
        }
        atomic_torch_save(payload, self.ckpt_dir / "best.pt")


def train(cfg: TrainConfig, resume: bool = True) -> Path:
    """Train (or resume) a run described by ``cfg``; returns the run folder."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.train()
    finally:
        dist.cleanup()
