"""The typed training configuration (one YAML file per recipe, saved into every run)."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tbpr.config import apply_overrides, from_dict, load_yaml, to_dict
from tbpr.data.fewshot import check_fraction
from tbpr.data.holdout import ValSplitConfig
from tbpr.data.image_augment import ImageAugConfig
from tbpr.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from tbpr.errors import ConfigError
from tbpr.losses import LOSSES, LossParams, check_loss_weights, required_ss_heads, required_views
from tbpr.models import ModelConfig
from tbpr.text.augment import TextAugConfig
from tbpr.train.masking import MaskingConfig
from tbpr.train.mixup import MixupConfig
from tbpr.train.noise import NoiseConfig
from tbpr.train.schedule import SCHEDULES

log = logging.getLogger(__name__)
RECIPE_DIR = Path(__file__).resolve().parent.parent / "configs"
OPTIMIZERS = ("adamw", "adam")


@dataclass
class DataConfig:
    """Where the data is and how it is fed. ``batch_size`` is the global batch (all processes)."""

    path: str = ""
    format: str | None = None
    skip_bad: bool = False
    # 'identity' (P ids x K), 'random' (every caption once per epoch) or 'per_image' (one caption per image)
    sampler: str = "identity"
    batch_size: int = 64
    num_instances: int = 2
    num_workers: int = 2
    hflip: bool = True
    augment: ImageAugConfig = field(default_factory=ImageAugConfig)  # TBPS-CLIP image augmentations
    # EDA ops, caption-store ops (back translation, LLM rewrites with BSS), expansion by LLM rewrites
    text_augment: TextAugConfig = field(default_factory=TextAugConfig)
    train_fraction: float = 1.0  # few-shot: keep this fraction of the training identities (seeded)
    # dataset folders whose training splits join the training set as new identities (tbpr.data.sources),
    # e.g. PDG's generated pairs; after the few-shot draw and the carved val split, so they never enter those
    extra_train: list[str] = field(default_factory=list)
    # the split checkpoints are selected on: the dataset's, or identities carved from training (tbpr.data.holdout)
    val_split: ValSplitConfig = field(default_factory=ValSplitConfig)
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        at_least("data", 1, batch_size=self.batch_size, num_instances=self.num_instances)
        at_least("data", 1, eval_batch_size=self.eval_batch_size)
        at_least("data", 0, num_workers=self.num_workers)


@dataclass
class OptimConfig:
    """AdamW (or Adam) with linear warmup then a cosine decay (or steps), stepped every optimizer step."""

    lr: float = 1e-5
    min_lr: float = 0.0
    weight_decay: float = 4e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    epochs: int = 60
    warmup_epochs: float = 5.0
    warmup_start_factor: float = 0.1
    grad_clip: float | None = None
    accum_steps: int = 1
    amp: bool = True  # autocast on CUDA only
    mlm_lr_factor: float = 1.0  # learning-rate multiplier of the MLM head (IRRA: 5)
    id_lr_factor: float = 1.0  # learning-rate multiplier of the ID classifier (IRRA: 5)
    proj_lr_factor: float = 1.0  # learning-rate multiplier of the tower projections (image_proj, text_proj)
    bias_lr_factor: float = 1.0  # learning-rate multiplier of the encoders' biases (IRRA: 2)
    tse_lr_factor: float = 1.0  # learning-rate multiplier of the TSE heads (RDE: 100, i.e. 1e-3 at lr 1e-5)
    name: str = "adamw"  # 'adamw' (decoupled weight decay) or 'adam' (L2 in the gradient, as IRRA)
    schedule: str = "cosine"  # after the warm-up: 'cosine' (down to min_lr) or 'step' (PDG)
    step_epochs: float = 20.0  # schedule 'step': multiply the lr by step_gamma every this many epochs
    step_gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name={self.name!r}: choose one of {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule={self.schedule!r}: choose one of {list(SCHEDULES)}")
        if not self.step_epochs > 0 or not 0 < self.step_gamma <= 1:
            raise ConfigError(
                f"optim.step_epochs={self.step_epochs}, step_gamma={self.step_gamma}: expected a period > 0 "
                "and a factor in (0, 1]"
            )
        at_least("optim", 1, epochs=self.epochs, accum_steps=self.accum_steps)


@dataclass
class TrainConfig:
    """A whole training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    losses: dict[str, float] = field(default_factory=lambda: {"sdm": 1.0})
    loss_params: LossParams = field(default_factory=LossParams)
    masking: MaskingConfig = field(default_factory=MaskingConfig)  # caption token masking (EM / NAM)
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # clean-sample division (tbpr.train.noise)
    mixup: MixupConfig = field(default_factory=MixupConfig)  # PDG's feature-level mixup (tbpr.train.mixup)
    output_dir: str = "runs/default"
    seed: int = 0
    eval_every: int = 1  # epochs between validation runs (0: never, best = last)
    select_metric: str = "R1"
    # stop once select_metric has not improved for this many consecutive validations (None: never)
    early_stop_patience: int | None = None
    checkpoint_every: int = 0  # optimizer steps between 'last' checkpoints inside an epoch (0: epoch end)
    log_every: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (for tests and smoke runs)
    device: str | None = None  # default: cuda if available, else cpu
    # checkpoints/init.pt (the starting weights, for `tbpr analyze modules`); None: only when they cannot be
    # rebuilt from model.pretrained, i.e. for a random initialization or init_from
    save_init: bool | None = None
    # fine-tuning: start from the model weights (only) of a tbpr run folder (its best.pt) or checkpoint file
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise ConfigError(
                f"early_stop_patience={self.early_stop_patience}: give a number of validations >= 1, "
                "or null to train all epochs"
            )


def at_least(section: str, minimum: int, **values: int) -> None:
    """ConfigError naming ``section.key`` for the first value below ``minimum``."""
    for key, value in values.items():
        if value < minimum:
            raise ConfigError(f"{section}.{key}={value}: must be at least {minimum}")


def recipe_path(name_or_path: str) -> Path:
    """A shipped recipe by name (e.g. 'cpu-small') or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    shipped = RECIPE_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise ConfigError(
            f"no recipe named {name_or_path!r}; shipped recipes: {known} (or give a .yaml path)"
        )
    return shipped


def load_config(name_or_path: str | None = None, overrides: list[str] = ()) -> TrainConfig:
    data = load_yaml(recipe_path(name_or_path)) if name_or_path else {}
    cfg = from_dict(TrainConfig, apply_overrides(data, list(overrides)))
    cfg.losses = check_loss_weights(cfg.losses)
    cfg.noise.check(cfg.losses, tse=cfg.model.tse is not None)
    if cfg.loss_params.soft_label and not any(LOSSES[name].soft_targets for name in cfg.losses):
        log.warning(
            "loss_params.soft_label=%g: none of losses %s has soft targets (those that do: %s)",
            cfg.loss_params.soft_label,
            sorted(cfg.losses),
            ", ".join(sorted(name for name, spec in LOSSES.items() if spec.soft_targets)),
        )
    check_fraction(cfg.data.train_fraction)  # at load time, before any data is read
    # SimCLR heads follow from the losses (saved in config.yaml, so checkpoints rebuild them)
    cfg.model.ss_heads = [
        t for t in ("image", "text") if t in {*cfg.model.ss_heads, *required_ss_heads(cfg.losses)}
    ]
    views = required_views(cfg.losses)
    cfg.mixup.check(views, cfg.noise.division, cfg.noise.coteach)
    if "mlm" in views:  # the MLM head follows from the loss, like the SimCLR heads
        if cfg.masking.mode == "none":
            raise ConfigError("losses.mlm predicts masked tokens: set masking.mode to em or nam")
        cfg.model.mlm_head = True
    if cfg.masking.scope == "mlm" and "mlm" not in views:
        raise ConfigError(
            "masking.scope=mlm masks captions only for the MLM loss: add losses.mlm or use scope all"
        )
    text = cfg.data.text_augment
    if cfg.masking.mode == "nam" and (text.ops or text.approximate.ops):
        raise ConfigError(
            "masking.mode=nam keeps per-token probabilities by token position, which data.text_augment "
            f"(ops {text.ops}, approximate.ops {text.approximate.ops}) changes every epoch: use "
            "masking.mode=em or no text augmentation"
        )
    if "text_orig" in views and not text.approximate.ops:
        raise ConfigError(
            "losses.approx_constraint compares approximate captions with their originals: set "
            "data.text_augment.approximate.ops (e.g. [sdel, cdel, repl])"
        )
    if "text2" in views and not cfg.data.text_augment.ops:
        log.warning(
            "losses %s compare two text views, but data.text_augment has no ops: the views are identical",
            sorted(cfg.losses),
        )
    if "image2" in views and not (cfg.data.augment.ops or cfg.data.hflip):
        log.warning(
            "losses %s compare two image views, but no image augmentation is configured", sorted(cfg.losses)
        )
    return cfg


# keys a run resolves when it starts: a saved resolved value matches the setting that asked to resolve it
RESOLVED_AT_START = {"data.val_split.source": "auto"}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(saved: dict, new: dict, free: frozenset[str] = frozenset()) -> dict[str, tuple]:
    """``{dotted key: (saved value, new value)}`` where a saved run config and a new one differ.

    Keys in ``free`` are left out; both mappings are compared as JSON would give them back (tuples as
    lists), a value a run resolved at start (``RESOLVED_AT_START``) matches its unresolved setting, and a
    key the saved config lacks matches the default value (a setting added to tbpr after the run was saved).
    """
    old, cur = (_flatten(json.loads(json.dumps(c))) for c in (saved, new))
    absent = "(absent)"
    defaults = _defaults()
    return {
        key: (old.get(key, absent), cur.get(key, absent))
        for key in sorted(old.keys() | cur.keys())
        if key not in free
        and old.get(key, absent) != cur.get(key, absent)
        and cur.get(key) != RESOLVED_AT_START.get(key, absent)
        and not (key not in old and cur.get(key) == defaults.get(key, absent))
    }


@functools.cache
def _defaults() -> dict:
    """The flattened default TrainConfig, as JSON would give it back."""
    return _flatten(json.loads(json.dumps(to_dict(TrainConfig()))))
